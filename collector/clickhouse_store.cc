#include "collector/clickhouse_store.h"

#include <algorithm>
#include <iterator>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
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

// The query columns of one envelope: what each kind says about the process,
// the connection, the alert. Like SqliteStore's, so filters agree.
struct Columns {
  const v1::Process* process = nullptr;
  const v1::NetworkEvent* network = nullptr;
  absl::string_view sha256;
  absl::string_view rule;
  absl::string_view container_id;
  absl::string_view alert_id;
};

Columns ColumnsOf(const v1::Envelope& env) {
  Columns c;
  if (env.has_alert()) {
    const v1::Alert& a = env.alert();
    if (a.has_network()) c.network = &a.network();
    // The alert's own process is the authority; the network copy may be bare.
    if (a.has_process()) {
      c.process = &a.process();
    } else if (c.network != nullptr && c.network->has_process()) {
      c.process = &c.network->process();
    }
    c.rule = a.rule();
    c.alert_id = a.id();
    if (a.has_image()) {
      c.sha256 = a.image().sha256();
      c.container_id = a.image().container_id();
    }
  } else {
    if (env.has_network()) c.network = &env.network();
    const v1::Process* p = EventProcess(env);
    // A message's default instance stands for "absent" here, as in SQLite.
    if (p != nullptr && p != &v1::Process::default_instance()) c.process = p;
  }
  if (c.container_id.empty() && c.process != nullptr) c.container_id = c.process->container_id();
  return c;
}

void PutEvent(std::string& out, const v1::Envelope& env, absl::string_view blob) {
  const Columns c = ColumnsOf(env);
  PutString(out, env.host_id());
  PutString(out, env.agent_instance());
  PutFixed<uint64_t>(out, env.seq());
  PutFixed<int64_t>(out, UnixNanos(env.time()));
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
  PutString(out, blob);
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

absl::Status ClickHouseStore::FindStored(absl::Span<const Key> keys, std::vector<bool>& stored) {
  struct Stream {
    std::vector<uint64_t> seqs;
    absl::flat_hash_set<uint64_t> found;
  };
  absl::flat_hash_map<std::pair<absl::string_view, absl::string_view>, Stream> streams;
  for (const Key& k : keys) streams[{k.host, k.instance}].seqs.push_back(k.seq);
  std::vector<std::string> clauses;
  for (auto& [id, stream] : streams) {
    std::vector<uint64_t>& seqs = stream.seqs;
    std::sort(seqs.begin(), seqs.end());
    std::vector<std::pair<uint64_t, uint64_t>> runs;
    for (uint64_t seq : seqs) {
      if (!runs.empty() && seq <= runs.back().second + 1) {
        runs.back().second = seq;
      } else {
        runs.emplace_back(seq, seq);
      }
    }
    if (runs.size() > kMaxRanges) runs = {{runs.front().first, runs.back().second}};
    std::string clause = absl::StrCat("(host_id = ", Quote(id.first),
                                      " AND agent_instance = ", Quote(id.second), " AND (");
    for (size_t i = 0; i < runs.size(); ++i)
      absl::StrAppend(&clause, i ? " OR " : "", "seq BETWEEN ", runs[i].first, " AND ",
                      runs[i].second);
    clause += "))";
    clauses.push_back(std::move(clause));
  }
  // The key prefix (host_id, agent_instance, seq) makes each clause a range
  // read of a granule or two.
  const std::string select =
      absl::StrCat("SELECT host_id, agent_instance, seq FROM ", Table("event_keys"), " WHERE ");
  absl::Status s = clickhouse::ForEachJoined(clauses, " OR ", [&](absl::string_view where) {
    return client_.Select(absl::StrCat(select, where), {kString, kString, 8},
                          "look up stored events",
                          [&](absl::Span<const absl::string_view> row) -> absl::StatusOr<bool> {
                            auto it = streams.find(std::make_pair(row[0], row[1]));
                            if (it != streams.end())
                              it->second.found.insert(clickhouse::Fixed<uint64_t>(row[2]));
                            return true;
                          });
  });
  if (!s.ok()) return s;
  for (size_t i = 0; i < keys.size(); ++i) {
    const Stream& stream = streams.find(std::make_pair(keys[i].host, keys[i].instance))->second;
    if (stream.found.contains(keys[i].seq)) stored[i] = true;
  }
  return absl::OkStatus();
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
  std::vector<Key> keys;
  keys.reserve(envelopes.size());
  // skip[i]: envelope i is stored already, or repeats an earlier one of
  // this call (the first copy wins, as in SQLite).
  std::vector<bool> skip(envelopes.size(), false);
  absl::flat_hash_set<std::tuple<absl::string_view, absl::string_view, uint64_t>> seen;
  for (size_t i = 0; i < envelopes.size(); ++i) {
    const v1::Envelope& env = *envelopes[i];
    keys.push_back(Key{env.host_id(), env.agent_instance(), env.seq()});
    if (!seen.emplace(env.host_id(), env.agent_instance(), env.seq()).second) skip[i] = true;
  }
  if (absl::Status s = FindStored(keys, skip); !s.ok()) return s;

  events_buf_.clear();
  keys_buf_.clear();
  facts_buf_.clear();
  absl::flat_hash_map<FactKey, FactTimes> facts;
  for (size_t i = 0; i < envelopes.size(); ++i) {
    if (skip[i]) {
      ++result.duplicates;
      continue;
    }
    ++result.stored;
    const v1::Envelope& env = *envelopes[i];
    blob_.clear();
    if (!env.AppendToString(&blob_))
      return absl::InvalidArgumentError(
          absl::StrCat("store: cannot serialize envelope host_id=", env.host_id(),
                       " agent_instance=", env.agent_instance(), " seq=", env.seq()));
    PutEvent(events_buf_, env, blob_);
    PutString(keys_buf_, env.host_id());
    PutString(keys_buf_, env.agent_instance());
    PutFixed<uint64_t>(keys_buf_, env.seq());
    PutFixed<int64_t>(keys_buf_, UnixNanos(env.time()));
    FoldFact(env, facts);
  }
  if (result.stored == 0) return result;
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
  return result;
}

absl::Status ClickHouseStore::UpsertHost(const v1::Hello& hello, absl::Time now) {
  if (hello.host_id().empty()) return absl::InvalidArgumentError("store: Hello without host_id");
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
  if (record.alert_id.empty()) return absl::InvalidArgumentError("store: triage without alert id");
  if (absl::Status s = CheckAlertStatus(record.status); !s.ok() || record.status.empty())
    return s.ok() ? absl::InvalidArgumentError("store: triage without status") : s;
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
