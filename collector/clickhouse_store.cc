#include "collector/clickhouse_store.h"

#include <algorithm>
#include <iterator>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/substitute.h"
#include "absl/time/clock.h"

namespace sockwatch {

namespace {

using clickhouse::kString;
using clickhouse::PutFixed;
using clickhouse::PutString;
using clickhouse::Quote;

// An event time as stored (time_ns); saturates instead of overflowing.
int64_t UnixNanos(const google::protobuf::Timestamp& t) {
  return absl::ToUnixNanos(absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos()));
}

// Each entry upgrades the database from version i to i + 1 (version 0: no
// tables of ours), one statement a string: the HTTP interface takes one per
// request. $0 is the database, $1 more table settings (", name = value"
// each, see Migrate). Append, never edit:
// databases in the field were made by the earlier entries.
//
// Every table is a local MergeTree a Distributed table can front (see
// clickhouse_store.h). No PARTITION BY: with one, an INSERT whose rows
// span many months writes a part per month, and current servers refuse
// more than 100 partitions per INSERT -- an agent with a wild clock would
// make its batch fail forever. Numbers with no value for a kind are 0 and
// strings '' (SQLite's NULL): filters never ask for 0 or ''.
constexpr const char* kVersion1[] = {
    "CREATE TABLE IF NOT EXISTS $0.schema_version (version UInt32, applied_ns Int64) "
    "ENGINE = MergeTree ORDER BY version SETTINGS index_granularity = 8192$1",
    R"sql(CREATE TABLE IF NOT EXISTS $0.events (
  host_id String, agent_instance String, seq UInt64, time_ns Int64,
  kind String, pid UInt32, exe String, sha256 String,
  remote_ip String, remote_port UInt32, protocol Int32, direction Int32,
  rule String, container_id String, alert_id String,
  envelope String
) ENGINE = ReplacingMergeTree ORDER BY (host_id, time_ns, agent_instance, seq)
SETTINGS index_granularity = 8192$1)sql",
    // Finer marks: each Write reads the granules holding its streams' seq
    // ranges (one or two a stream) and tests every row read; 2048 rows a
    // granule reads a quarter of 8192's, for a primary index of about 30
    // bytes of RAM per 1000 events.
    R"sql(CREATE TABLE IF NOT EXISTS $0.event_keys (
  host_id String, agent_instance String, seq UInt64, time_ns Int64
) ENGINE = ReplacingMergeTree ORDER BY (host_id, agent_instance, seq)
SETTINGS index_granularity = 2048$1)sql",
    // By exe first: every prevalence question names or groups by the image.
    R"sql(CREATE TABLE IF NOT EXISTS $0.facts (
  exe String, direction Int32, protocol Int32, port UInt32, host_id String,
  sha256 String, remote_ip String, first_ns Int64, last_ns Int64
) ENGINE = MergeTree ORDER BY (exe, direction, protocol, port, host_id)
SETTINGS index_granularity = 8192$1)sql",
    R"sql(CREATE TABLE IF NOT EXISTS $0.hosts (
  host_id String, hostname String, kernel_release String, agent_version String,
  first_seen_ns Int64, last_seen_ns Int64, hello String, version UInt64
) ENGINE = ReplacingMergeTree(version) ORDER BY host_id SETTINGS index_granularity = 8192$1)sql",
    R"sql(CREATE TABLE IF NOT EXISTS $0.triage (
  alert_id String, time_ns Int64, stamp UInt64, status String, actor String, note String
) ENGINE = MergeTree ORDER BY (alert_id, time_ns, stamp) SETTINGS index_granularity = 8192$1)sql",
};
constexpr absl::Span<const char* const> kMigrations[] = {kVersion1};
static_assert(std::size(kMigrations) == kClickHouseStoreSchemaVersion);

// Appends env's row (time_ns: UnixNanos of its time); false if env cannot
// be serialized.
bool PutEvent(std::string& out, const v1::Envelope& env, int64_t time_ns) {
  const EventColumns c = ColumnsOf(env);
  PutString(out, env.host_id());
  PutString(out, env.agent_instance());
  PutFixed<uint64_t>(out, env.seq());
  PutFixed<int64_t>(out, time_ns);
  PutString(out, EnvelopeKind(env));
  PutFixed<uint32_t>(out, c.process ? c.process->pid() : 0);
  PutString(out, c.process ? absl::string_view(c.process->exe()) : "");
  PutString(out, c.sha256);
  PutString(out, c.network ? absl::string_view(c.network->remote_ip()) : "");
  PutFixed<uint32_t>(out, c.network ? c.network->remote_port() : 0);
  PutFixed<int32_t>(out, c.network ? c.network->protocol() : 0);
  PutFixed<int32_t>(out, c.network ? c.network->direction() : 0);
  PutString(out, c.rule);
  PutString(out, c.container_id);
  PutString(out, c.alert_id);
  // Serialized in place, behind its length: no copy of the bytes.
  const size_t size = env.ByteSizeLong();
  clickhouse::PutLength(out, size);
  const size_t at = out.size();
  out.resize(at + size);
  return env.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(out.data() + at)) ==
         reinterpret_cast<uint8_t*>(out.data() + out.size());
}
constexpr absl::string_view kEventColumns =
    "(host_id, agent_instance, seq, time_ns, kind, pid, exe, sha256, remote_ip, remote_port, "
    "protocol, direction, rule, container_id, alert_id, envelope)";

// Distinct facts of a batch with their first and last times. Key: the
// fact's columns in the order of the table's sort key, then the rest.
using FactKey = std::tuple<std::string, int, int, uint32_t, std::string, std::string, std::string>;
struct FactTimes {
  int64_t first;
  int64_t last;
};

void FoldFact(const v1::Envelope& env, absl::flat_hash_map<FactKey, FactTimes>& facts) {
  std::optional<NetworkFact> f = FactOf(env);
  if (!f) return;
  const int64_t t = UnixNanos(env.time());
  FactKey key(std::move(f->exe), f->direction, f->protocol, f->port, env.host_id(),
              std::move(f->sha256), std::move(f->remote_ip));
  auto [it, fresh] = facts.try_emplace(std::move(key), FactTimes{t, t});
  if (!fresh) {
    it->second.first = std::min(it->second.first, t);
    it->second.last = std::max(it->second.last, t);
  }
}

void PutFacts(std::string& out, const absl::flat_hash_map<FactKey, FactTimes>& facts) {
  for (const auto& [key, times] : facts) {
    const auto& [exe, direction, protocol, port, host, sha256, remote] = key;
    PutString(out, exe);
    PutFixed<int32_t>(out, direction);
    PutFixed<int32_t>(out, protocol);
    PutFixed<uint32_t>(out, port);
    PutString(out, host);
    PutString(out, sha256);
    PutString(out, remote);
    PutFixed<int64_t>(out, times.first);
    PutFixed<int64_t>(out, times.last);
  }
}
constexpr absl::string_view kFactColumns =
    "(exe, direction, protocol, port, host_id, sha256, remote_ip, first_ns, last_ns)";

// Hosts UpsertHost queues before it stores them itself: one INSERT of
// about a megabyte.
constexpr size_t kMaxPendingHosts = 1000;

// At most this many seq ranges per stream in the stored-keys query; past
// it, one range from the least to the greatest (rows outside the batch
// are ignored).
constexpr size_t kMaxRanges = 32;

}  // namespace

ClickHouseStore::ClickHouseStore(clickhouse::Endpoint endpoint, clickhouse::ClientOptions options)
    : client_(std::move(endpoint), options, "store: clickhouse") {}

ClickHouseStore::~ClickHouseStore() {
  absl::MutexLock lock(&hosts_mu_);
  FlushHostsLocked().IgnoreError();
}

absl::StatusOr<std::unique_ptr<ClickHouseStore>> ClickHouseStore::Open(
    const ClickHouseStoreOptions& options) {
  absl::StatusOr<clickhouse::Endpoint> ep = clickhouse::ParseUrl(options.url);
  if (!ep.ok()) return ep.status();
  std::unique_ptr<ClickHouseStore> store(new ClickHouseStore(std::move(*ep), options.client));
  if (absl::Status s = store->Migrate(); !s.ok()) return s;
  return store;
}

std::string ClickHouseStore::Table(absl::string_view name) const {
  return absl::StrCat("`", client_.endpoint().database, "`.", name);
}

std::string ClickHouseStore::Where(absl::string_view what) const {
  return absl::StrCat("store: clickhouse ", client_.endpoint().Name(), "/",
                      client_.endpoint().database, ": ", what);
}

absl::Status ClickHouseStore::Migrate() {
  const std::string& db = client_.endpoint().database;
  if (absl::Status s = client_.Execute(absl::StrCat("CREATE DATABASE IF NOT EXISTS `", db, "`"),
                                       absl::StrCat("create database ", db));
      !s.ok())
    return s;
  // Durable parts where the server can (21.x+; unknown to 18.16).
  std::vector<std::string> fsync;
  if (absl::Status s = client_.Select(
          "SELECT name FROM system.merge_tree_settings WHERE name IN ('fsync_after_insert', "
          "'fsync_part_directory')",
          {kString}, "look up MergeTree settings",
          [&](absl::Span<const absl::string_view> row) -> absl::StatusOr<bool> {
            fsync.push_back(absl::StrCat(row[0], " = 1"));
            return true;
          });
      !s.ok())
    return s;
  for (const std::string& setting : fsync) absl::StrAppend(&table_settings_, ", ", setting);

  bool ours = false, others = false;
  if (absl::Status s = client_.Select(
          absl::StrCat("SELECT name FROM system.tables WHERE database = ", Quote(db)), {kString},
          absl::StrCat("list the tables of ", db),
          [&](absl::Span<const absl::string_view> row) -> absl::StatusOr<bool> {
            (row[0] == "schema_version" ? ours : others) = true;
            return true;
          });
      !s.ok())
    return s;
  // Never build our tables into somebody else's database.
  if (others && !ours)
    return absl::FailedPreconditionError(
        Where("the database holds tables but is not a sockwatch collector store"));
  int64_t version = 0;
  if (ours) {
    if (absl::Status s =
            client_.Select(absl::StrCat("SELECT max(version) FROM ", Table("schema_version")), {4},
                           "read the schema version",
                           [&](absl::Span<const absl::string_view> row) -> absl::StatusOr<bool> {
                             version = clickhouse::Fixed<uint32_t>(row[0]);
                             return true;
                           });
        !s.ok())
      return s;
  }
  if (version > kClickHouseStoreSchemaVersion)
    return absl::FailedPreconditionError(Where(absl::StrCat(
        "has schema version ", version, ", newer than the version ", kClickHouseStoreSchemaVersion,
        " this sockwatch understands; upgrade sockwatch or use another database")));
  // Another collector may run the same steps at once: each statement is
  // IF NOT EXISTS, and a version row twice is harmless (max is read).
  for (int64_t v = version; v < kClickHouseStoreSchemaVersion; ++v) {
    const std::string what = absl::StrCat("upgrade schema of ", db, " to version ", v + 1);
    for (const char* statement : kMigrations[v]) {
      const std::string sql =
          absl::Substitute(statement, absl::StrCat("`", db, "`"), table_settings_);
      if (absl::Status s = client_.Execute(sql, what); !s.ok()) return s;
    }
    const std::string done =
        absl::StrCat("INSERT INTO ", Table("schema_version"), " (version, applied_ns) VALUES (",
                     v + 1, ", ", absl::ToUnixNanos(absl::Now()), ")");
    if (absl::Status s = client_.Execute(done, what); !s.ok()) return s;
  }
  return absl::OkStatus();
}

uint64_t ClickHouseStore::NextStamp() {
  const auto now = static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
  uint64_t last = last_stamp_.load();
  uint64_t next;
  do {
    next = std::max(last + 1, now);
  } while (!last_stamp_.compare_exchange_weak(last, next));
  return next;
}

absl::Status ClickHouseStore::FindStored(absl::Span<const v1::Envelope* const> envelopes,
                                         std::vector<bool>& skip) {
  struct Stream {
    absl::string_view host;
    absl::string_view instance;
    std::vector<std::pair<uint64_t, size_t>> seqs;  // (seq, index in envelopes)
  };
  std::vector<Stream> streams;
  absl::flat_hash_map<std::pair<absl::string_view, absl::string_view>, size_t> by_id;
  size_t current = SIZE_MAX;
  for (size_t i = 0; i < envelopes.size(); ++i) {
    const v1::Envelope& env = *envelopes[i];
    // Agents' batches are runs of one stream: look up only when it changes.
    if (current == SIZE_MAX || streams[current].host != env.host_id() ||
        streams[current].instance != env.agent_instance()) {
      auto [it, fresh] = by_id.try_emplace({env.host_id(), env.agent_instance()}, streams.size());
      if (fresh) streams.push_back(Stream{env.host_id(), env.agent_instance(), {}});
      current = it->second;
    }
    streams[current].seqs.emplace_back(env.seq(), i);
  }
  std::vector<std::string> clauses;
  for (Stream& stream : streams) {
    // By seq, then position: of copies of a key in this call, the first
    // stays and the rest are duplicates (as in SQLite).
    std::sort(stream.seqs.begin(), stream.seqs.end());
    std::vector<std::pair<uint64_t, uint64_t>> runs;
    for (size_t k = 0; k < stream.seqs.size(); ++k) {
      const uint64_t seq = stream.seqs[k].first;
      if (k > 0 && stream.seqs[k - 1].first == seq) {
        skip[stream.seqs[k].second] = true;
      } else if (!runs.empty() && seq == runs.back().second + 1) {
        runs.back().second = seq;
      } else {
        runs.emplace_back(seq, seq);
      }
    }
    // Wholly above what this process stored of the stream since its Hello:
    // nothing of it can be stored yet (see clickhouse_store.h).
    const auto mark = stored_marks_.find(stream.host);
    if (mark != stored_marks_.end() && mark->second.instance == stream.instance &&
        stream.seqs.front().first > mark->second.seq)
      continue;
    if (runs.size() > kMaxRanges) runs = {{runs.front().first, runs.back().second}};
    std::string clause = absl::StrCat("(host_id = ", Quote(stream.host),
                                      " AND agent_instance = ", Quote(stream.instance), " AND (");
    for (size_t r = 0; r < runs.size(); ++r)
      absl::StrAppend(&clause, r ? " OR " : "", "seq BETWEEN ", runs[r].first, " AND ",
                      runs[r].second);
    clause += "))";
    clauses.push_back(std::move(clause));
  }
  // The key prefix (host_id, agent_instance, seq) makes each clause a range
  // read of a granule or two. Rows come back only for replays.
  if (clauses.empty()) return absl::OkStatus();
  key_lookups_.fetch_add(1, std::memory_order_relaxed);
  const std::string select =
      absl::StrCat("SELECT host_id, agent_instance, seq FROM ", Table("event_keys"), " WHERE ");
  return clickhouse::ForEachJoined(clauses, " OR ", [&](absl::string_view where) {
    return client_.Select(
        absl::StrCat(select, where), {kString, kString, 8}, "look up stored events",
        [&](absl::Span<const absl::string_view> row) -> absl::StatusOr<bool> {
          auto it = by_id.find(std::make_pair(row[0], row[1]));
          if (it == by_id.end()) return true;
          const auto& seqs = streams[it->second].seqs;
          const uint64_t seq = clickhouse::Fixed<uint64_t>(row[2]);
          for (auto k = std::lower_bound(seqs.begin(), seqs.end(), std::make_pair(seq, size_t{0}));
               k != seqs.end() && k->first == seq; ++k)
            skip[k->second] = true;
          return true;
        });
  });
}

absl::StatusOr<WriteResult> ClickHouseStore::Write(
    absl::Span<const v1::Envelope* const> envelopes) {
  WriteResult result;
  if (envelopes.empty()) return result;
  for (const v1::Envelope* env : envelopes)
    if (env == nullptr) return absl::InvalidArgumentError("store: null envelope in Write");
  absl::MutexLock lock(&write_mu_);
  {
    absl::MutexLock hosts_lock(&hosts_mu_);
    if (absl::Status s = FlushHostsLocked(); !s.ok()) return s;
  }
  // skip[i]: envelope i is stored already, or repeats an earlier one.
  std::vector<bool> skip(envelopes.size(), false);
  if (absl::Status s = FindStored(envelopes, skip); !s.ok()) return s;

  events_buf_.clear();
  keys_buf_.clear();
  facts_buf_.clear();
  absl::flat_hash_map<FactKey, FactTimes> facts;
  // Events go in the table's order: ClickHouse then skips sorting the
  // block and permuting every column, the envelopes with them.
  struct Row {
    const v1::Envelope* env;
    int64_t time_ns;
  };
  std::vector<Row> rows;
  rows.reserve(envelopes.size());
  for (size_t i = 0; i < envelopes.size(); ++i) {
    if (skip[i]) {
      ++result.duplicates;
      continue;
    }
    ++result.stored;
    const v1::Envelope& env = *envelopes[i];
    rows.push_back({&env, UnixNanos(env.time())});
    PutString(keys_buf_, env.host_id());
    PutString(keys_buf_, env.agent_instance());
    PutFixed<uint64_t>(keys_buf_, env.seq());
    PutFixed<int64_t>(keys_buf_, rows.back().time_ns);
    FoldFact(env, facts);
  }
  if (result.stored == 0) return result;
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
    if (int c = a.env->host_id().compare(b.env->host_id()); c != 0) return c < 0;
    if (a.time_ns != b.time_ns) return a.time_ns < b.time_ns;
    if (int c = a.env->agent_instance().compare(b.env->agent_instance()); c != 0) return c < 0;
    return a.env->seq() < b.env->seq();
  });
  for (const Row& row : rows)
    if (!PutEvent(events_buf_, *row.env, row.time_ns))
      return absl::InvalidArgumentError(absl::StrCat(
          "store: cannot serialize envelope host_id=", row.env->host_id(),
          " agent_instance=", row.env->agent_instance(), " seq=", row.env->seq()));
  // Order matters (see clickhouse_store.h): facts, events, then keys.
  PutFacts(facts_buf_, facts);
  if (!facts.empty()) {
    if (absl::Status s = client_.Insert(absl::StrCat(Table("facts"), " ", kFactColumns), facts_buf_,
                                        "write facts");
        !s.ok())
      return s;
  }
  if (absl::Status s =
          client_.Insert(absl::StrCat(Table("events"), " ", kEventColumns), events_buf_,
                         absl::StrCat("write ", result.stored, " events"));
      !s.ok())
    return s;
  if (absl::Status s = client_.Insert(
          absl::StrCat(Table("event_keys"), " (host_id, agent_instance, seq, time_ns)"), keys_buf_,
          "write event keys");
      !s.ok())
    return s;
  // Every key of the batch is stored now: raise the streams' marks.
  StoredMark* mark = nullptr;
  absl::string_view host;
  for (const v1::Envelope* env : envelopes) {
    if (mark == nullptr || host != env->host_id() || mark->instance != env->agent_instance()) {
      host = env->host_id();
      StoredMark& m = stored_marks_[host];
      if (m.instance != env->agent_instance()) m = StoredMark{env->agent_instance(), 0};
      mark = &m;
    }
    mark->seq = std::max(mark->seq, env->seq());
  }
  return result;
}

absl::Status ClickHouseStore::UpsertHost(const v1::Hello& hello, absl::Time now) {
  if (hello.host_id().empty()) return absl::InvalidArgumentError("store: Hello without host_id");
  {
    // A new stream: its agent may have sent to another collector since.
    absl::MutexLock lock(&write_mu_);
    stored_marks_.erase(hello.host_id());
  }
  absl::MutexLock lock(&hosts_mu_);
  const int64_t now_ns = absl::ToUnixNanos(now);
  auto [it, fresh] = pending_hosts_.try_emplace(hello.host_id());
  PendingHost& p = it->second;
  if (fresh) p.first_ns = now_ns;
  p.hello = hello;
  p.last_ns = now_ns;
  p.version = NextStamp();
  if (pending_hosts_.size() < kMaxPendingHosts) return absl::OkStatus();
  return FlushHostsLocked();
}

absl::Status ClickHouseStore::FlushHostsLocked() {
  if (pending_hosts_.empty()) return absl::OkStatus();
  // The earliest sighting survives: carried into the new row, since a merge
  // keeps only the row with the greatest version.
  std::vector<std::string> ids;
  for (const auto& [id, p] : pending_hosts_) ids.push_back(Quote(id));
  absl::flat_hash_map<std::string, int64_t> known;
  const std::string select = absl::StrCat("SELECT host_id, argMax(first_seen_ns, version) FROM ",
                                          Table("hosts"), " WHERE host_id IN (");
  absl::Status s = clickhouse::ForEachJoined(ids, ", ", [&](absl::string_view in) {
    return client_.Select(absl::StrCat(select, in, ") GROUP BY host_id"), {kString, 8},
                          "look up hosts",
                          [&](absl::Span<const absl::string_view> row) -> absl::StatusOr<bool> {
                            known[row[0]] = clickhouse::Fixed<int64_t>(row[1]);
                            return true;
                          });
  });
  if (!s.ok()) return s;
  std::string rows;
  std::string blob;
  for (const auto& [id, p] : pending_hosts_) {
    blob.clear();
    if (!p.hello.AppendToString(&blob))
      return absl::InternalError(absl::StrCat("store: cannot serialize Hello of ", id));
    const auto old = known.find(id);
    PutString(rows, id);
    PutString(rows, p.hello.hostname());
    PutString(rows, p.hello.kernel_release());
    PutString(rows, p.hello.agent_version());
    PutFixed<int64_t>(rows, old != known.end() ? old->second : p.first_ns);
    PutFixed<int64_t>(rows, p.last_ns);
    PutString(rows, blob);
    PutFixed<uint64_t>(rows, p.version);
  }
  s = client_.Insert(absl::StrCat(Table("hosts"),
                                  " (host_id, hostname, kernel_release, agent_version, "
                                  "first_seen_ns, last_seen_ns, hello, version)"),
                     rows, absl::StrCat("store ", pending_hosts_.size(), " hosts"));
  if (!s.ok()) return s;
  pending_hosts_.clear();
  return absl::OkStatus();
}

absl::Status ClickHouseStore::AddTriage(const TriageRecord& record) {
  if (absl::Status s = CheckTriageRecord(record); !s.ok()) return s;
  std::string row;
  PutString(row, record.alert_id);
  PutFixed<int64_t>(row, absl::ToUnixNanos(record.time));
  PutFixed<uint64_t>(row, NextStamp());
  PutString(row, record.status);
  PutString(row, record.by);
  PutString(row, record.note);
  return client_.Insert(
      absl::StrCat(Table("triage"), " (alert_id, time_ns, stamp, status, actor, note)"), row,
      absl::StrCat("store triage of alert ", record.alert_id));
}

}  // namespace sockwatch
