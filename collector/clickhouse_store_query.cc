// The event and host queries of ClickHouseStore. Writes are in
// clickhouse_store.cc, triage and prevalence in clickhouse_fleet.cc.
#include <algorithm>
#include <cstdint>
#include <iterator>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "collector/clickhouse_store.h"

namespace sockwatch {

namespace {

using clickhouse::kString;
using clickhouse::Quote;

// " WHERE ..." for q's column filters; a filter left at its default adds
// nothing. The alert id is a column too, so only remote, argv and triage
// status are left to MatchesDecodedFilters.
absl::StatusOr<std::string> EventWhere(const EventQuery& q) {
  if (absl::Status s = CheckEventQuery(q); !s.ok()) return s;
  std::string sql = " WHERE 1";
  auto text = [&sql](absl::string_view column, const std::string& v) {
    if (!v.empty()) absl::StrAppend(&sql, " AND ", column, " = ", Quote(v));
  };
  auto number = [&sql](absl::string_view column, int64_t v) {
    if (v != 0) absl::StrAppend(&sql, " AND ", column, " = ", v);
  };
  text("host_id", q.host_id);
  text("agent_instance", q.agent_instance);
  text("kind", q.kind);
  text("exe", q.exe);
  text("sha256", q.sha256);
  text("rule", q.rule);
  text("alert_id", q.alert_id);
  if (!q.container_prefix.empty())
    absl::StrAppend(&sql, " AND startsWith(container_id, ", Quote(q.container_prefix), ")");
  number("remote_port", q.remote_port);
  number("protocol", q.protocol);
  number("direction", q.direction);
  if (q.since != absl::InfinitePast())
    absl::StrAppend(&sql, " AND time_ns >= ", absl::ToUnixNanos(q.since));
  if (q.until != absl::InfiniteFuture())
    absl::StrAppend(&sql, " AND time_ns < ", absl::ToUnixNanos(q.until));
  return sql;
}

// Whether q has filters only the decoded envelope can answer.
bool DecodedHere(const EventQuery& q) {
  return !q.remote.empty() || !q.argv_contains.empty() || !q.alert_status.empty();
}

// Both orders end in the whole key, so the copies of a row stored twice
// (see clickhouse_store.h) come out next to each other.
absl::string_view OrderBy(const EventQuery& q) {
  return q.newest_first ? " ORDER BY time_ns DESC, seq DESC, host_id, agent_instance"
                        : " ORDER BY host_id, agent_instance, seq";
}

// Pages of at most this many events are read in two steps (see Events).
constexpr size_t kMaxKeyedPage = 100000;

struct EventKey {
  std::string host;
  std::string instance;
  uint64_t seq = 0;
  int64_t time_ns = 0;
  bool operator==(const EventKey& o) const {
    return seq == o.seq && host == o.host && instance == o.instance;
  }
};

}  // namespace

absl::StatusOr<v1::Envelope> ClickHouseStore::ParseEvent(
    absl::Span<const absl::string_view> row) const {
  v1::Envelope env;
  if (!env.ParseFromArray(row[3].data(), static_cast<int>(row[3].size())))
    return absl::DataLossError(Where(absl::StrCat(
        "event host_id=", row[0], " agent_instance=", row[1],
        " seq=", clickhouse::Fixed<uint64_t>(row[2]), " does not hold a valid envelope")));
  return env;
}

// Every matching row with its envelope, in order; no FINAL, which would
// keep ClickHouse 18 from reading the filter columns first (PREWHERE) and
// make it decode every envelope: a copy is dropped here, next to its twin.
absl::Status ClickHouseStore::ScanEvents(const EventQuery& q,
                                         absl::FunctionRef<bool(v1::Envelope&&)> sink) {
  absl::StatusOr<std::string> where = EventWhere(q);
  if (!where.ok()) return where.status();
  TriageStatuses statuses;
  if (!q.alert_status.empty()) {
    absl::StatusOr<std::vector<TriageRecord>> triage = Triage({});
    if (!triage.ok()) return triage.status();
    statuses = LatestStatuses(*triage);
  }
  const bool decoded = DecodedHere(q);
  size_t skip = q.offset;
  size_t left = q.limit == 0 ? SIZE_MAX : q.limit;
  EventKey last;
  return client_.Select(absl::StrCat("SELECT host_id, agent_instance, seq, envelope FROM ",
                                     Table("events"), *where, OrderBy(q)),
                        {kString, kString, 8, kString}, "query events",
                        [&](absl::Span<const absl::string_view> row) -> absl::StatusOr<bool> {
                          const uint64_t seq = clickhouse::Fixed<uint64_t>(row[2]);
                          if (seq == last.seq && row[0] == last.host && row[1] == last.instance)
                            return true;
                          last.host.assign(row[0].data(), row[0].size());
                          last.instance.assign(row[1].data(), row[1].size());
                          last.seq = seq;
                          absl::StatusOr<v1::Envelope> env = ParseEvent(row);
                          if (!env.ok()) return env.status();
                          if (decoded && !MatchesDecodedFilters(q, *env, &statuses)) return true;
                          if (skip > 0) {
                            --skip;
                            return true;
                          }
                          if (left == 0) return false;
                          --left;
                          return sink(*std::move(env)) && left > 0;
                        });
}

// A page in two steps: the keys of the page, sorted by the server over the
// small columns alone (a top-N sort, reading no envelope), then the
// envelopes of those keys, each a lookup in the primary key. One query
// would read the envelope of every matching row before sorting them.
absl::Status ClickHouseStore::PageEvents(const EventQuery& q, std::vector<v1::Envelope>& out) {
  absl::StatusOr<std::string> where = EventWhere(q);
  if (!where.ok()) return where.status();
  // Keys to skip and keep, without copies of a row; a page short of them
  // because copies took places is asked for again, twice as long.
  std::vector<EventKey> keys;
  const size_t wanted = q.offset + q.limit;
  for (size_t fetch = wanted;; fetch *= 2) {
    keys.clear();
    size_t rows = 0;
    absl::Status s = client_.Select(
        absl::StrCat("SELECT host_id, agent_instance, seq, time_ns FROM ", Table("events"), *where,
                     OrderBy(q), clickhouse::LimitClause(0, fetch)),
        {kString, kString, 8, 8}, "query events",
        [&](absl::Span<const absl::string_view> row) -> absl::StatusOr<bool> {
          ++rows;
          EventKey k{std::string(row[0]), std::string(row[1]), clickhouse::Fixed<uint64_t>(row[2]),
                     clickhouse::Fixed<int64_t>(row[3])};
          if (keys.empty() || !(keys.back() == k)) keys.push_back(std::move(k));
          return true;
        });
    if (!s.ok()) return s;
    if (keys.size() >= wanted || rows < fetch) break;
  }
  if (keys.size() <= q.offset) return absl::OkStatus();
  keys.erase(keys.begin(), keys.begin() + static_cast<std::ptrdiff_t>(q.offset));
  if (keys.size() > q.limit) keys.resize(q.limit);

  absl::flat_hash_map<std::tuple<absl::string_view, absl::string_view, uint64_t>, size_t> index;
  std::vector<std::string> tuples;
  for (size_t i = 0; i < keys.size(); ++i) {
    const EventKey& k = keys[i];
    index.emplace(std::make_tuple(absl::string_view(k.host), absl::string_view(k.instance), k.seq),
                  i);
    tuples.push_back(absl::StrCat("(", Quote(k.host), ", ", k.time_ns, ", ", Quote(k.instance),
                                  ", ", k.seq, ")"));
  }
  std::vector<std::optional<v1::Envelope>> found(keys.size());
  const std::string select =
      absl::StrCat("SELECT host_id, agent_instance, seq, envelope FROM ", Table("events"),
                   " WHERE (host_id, time_ns, agent_instance, seq) IN (");
  absl::Status s = clickhouse::ForEachJoined(tuples, ", ", [&](absl::string_view in) {
    return client_.Select(
        absl::StrCat(select, in, ")"), {kString, kString, 8, kString}, "read events",
        [&](absl::Span<const absl::string_view> row) -> absl::StatusOr<bool> {
          auto it =
              index.find(std::make_tuple(row[0], row[1], clickhouse::Fixed<uint64_t>(row[2])));
          if (it == index.end() || found[it->second]) return true;
          absl::StatusOr<v1::Envelope> env = ParseEvent(row);
          if (!env.ok()) return env.status();
          found[it->second] = *std::move(env);
          return true;
        });
  });
  if (!s.ok()) return s;
  // A key whose row is gone by now (deleted by retention in between) is
  // left out, as if the page had been read a moment later.
  for (std::optional<v1::Envelope>& env : found)
    if (env) out.push_back(*std::move(env));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Envelope>> ClickHouseStore::Events(const EventQuery& q) {
  std::vector<v1::Envelope> out;
  absl::Status s;
  if (!DecodedHere(q) && q.limit != 0 && q.limit <= kMaxKeyedPage) {
    s = PageEvents(q, out);
  } else {
    s = ScanEvents(q, [&out](v1::Envelope&& env) {
      out.push_back(std::move(env));
      return true;
    });
  }
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<uint64_t> ClickHouseStore::CountEvents(const EventQuery& q) {
  EventQuery all = q;
  all.limit = 0;
  all.offset = 0;
  uint64_t n = 0;
  if (DecodedHere(q)) {
    absl::Status s = ScanEvents(all, [&n](v1::Envelope&&) {
      ++n;
      return true;
    });
    if (!s.ok()) return s;
    return n;
  }
  absl::StatusOr<std::string> where = EventWhere(all);
  if (!where.ok()) return where.status();
  absl::Status s = client_.Select(
      absl::StrCat("SELECT count() FROM ", Table("events"), " FINAL", *where), {8}, "count events",
      [&n](absl::Span<const absl::string_view> row) -> absl::StatusOr<bool> {
        n = clickhouse::Fixed<uint64_t>(row[0]);
        return true;
      });
  if (!s.ok()) return s;
  return n;
}

absl::StatusOr<std::vector<HostRecord>> ClickHouseStore::Hosts() {
  {
    absl::MutexLock lock(&hosts_mu_);
    if (absl::Status s = FlushHostsLocked(); !s.ok()) return s;
  }
  std::vector<HostRecord> out;
  absl::Status s = client_.Select(
      absl::StrCat("SELECT host_id, argMax(hello, version), argMax(first_seen_ns, version), "
                   "argMax(last_seen_ns, version) FROM ",
                   Table("hosts"), " GROUP BY host_id ORDER BY host_id"),
      {kString, kString, 8, 8}, "query hosts",
      [&](absl::Span<const absl::string_view> row) -> absl::StatusOr<bool> {
        HostRecord& h = out.emplace_back();
        if (!h.hello.ParseFromArray(row[1].data(), static_cast<int>(row[1].size())))
          return absl::DataLossError(
              Where(absl::StrCat("host ", row[0], " does not hold a valid Hello")));
        h.first_seen = absl::FromUnixNanos(clickhouse::Fixed<int64_t>(row[2]));
        h.last_seen = absl::FromUnixNanos(clickhouse::Fixed<int64_t>(row[3]));
        return true;
      });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<uint64_t> ClickHouseStore::CountHosts() {
  {
    absl::MutexLock lock(&hosts_mu_);
    if (absl::Status s = FlushHostsLocked(); !s.ok()) return s;
  }
  uint64_t n = 0;
  absl::Status s = client_.Select(
      absl::StrCat("SELECT uniqExact(host_id) FROM ", Table("hosts")), {8}, "count hosts",
      [&n](absl::Span<const absl::string_view> row) -> absl::StatusOr<bool> {
        n = clickhouse::Fixed<uint64_t>(row[0]);
        return true;
      });
  if (!s.ok()) return s;
  return n;
}

}  // namespace sockwatch
