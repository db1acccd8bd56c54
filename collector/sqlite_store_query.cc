// The read path of SqliteStore: Events, CountEvents and Hosts, on the
// reader connection. Writes are in sqlite_store.cc.
#include <sqlite3.h>

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "collector/sqlite_store.h"
#include "collector/sqlite_store_internal.h"

namespace sockwatch {

namespace {

using sqlite_store_internal::ColumnText;
using sqlite_store_internal::IsRareKind;
using sqlite_store_internal::Source;

// FROM and WHERE for q, with named parameters; a filter left at its default
// adds no SQL. Streams drive the join (CROSS JOIN fixes the order), so rows
// come out by host, instance, seq without sorting the table. A rare kind
// goes through rare_events (already in seq order, and enough to count). A
// time range names events_stream_time: without statistics the planner
// prefers the primary key to spare a sort, and reads all of a host's rows.
// `seq` is the column to order by.
absl::StatusOr<std::string> FromWhere(const EventQuery& q, bool with_envelope,
                                      absl::string_view* seq) {
  if (absl::Status s = CheckEventQuery(q); !s.ok()) return s;
  const bool timed = q.since != absl::InfinitePast() || q.until != absl::InfiniteFuture();
  const bool columns = !q.exe.empty() || !q.sha256.empty() || !q.rule.empty() ||
                       !q.container_prefix.empty() || q.remote_port || q.protocol || q.direction;
  std::string sql;
  absl::string_view t;  // the table with kind and time_ns
  if (IsRareKind(q.kind)) {
    sql = "FROM streams s CROSS JOIN rare_events r ON r.stream = s.id";
    if (with_envelope || columns)
      sql += " CROSS JOIN events e ON e.stream = r.stream AND e.seq = r.seq";
    t = "r";
  } else {
    sql = "FROM streams s CROSS JOIN events e";
    if (timed) sql += " INDEXED BY events_stream_time";
    sql += " ON e.stream = s.id";
    t = "e";
  }
  *seq = t == "r" ? "r.seq" : "e.seq";
  sql += " WHERE 1";
  if (!q.host_id.empty()) sql += " AND s.host_id = :host";
  if (!q.agent_instance.empty()) sql += " AND s.agent_instance = :instance";
  if (!q.kind.empty()) absl::StrAppend(&sql, " AND ", t, ".kind = :kind");
  if (q.since != absl::InfinitePast()) absl::StrAppend(&sql, " AND ", t, ".time_ns >= :since");
  if (q.until != absl::InfiniteFuture()) absl::StrAppend(&sql, " AND ", t, ".time_ns < :until");
  if (!q.exe.empty()) sql += " AND e.exe = :exe";
  if (!q.sha256.empty()) sql += " AND e.sha256 = :sha256";
  if (!q.rule.empty()) sql += " AND e.rule = :rule";
  // Prefix without LIKE's wildcards: container ids are hex.
  if (!q.container_prefix.empty())
    sql += " AND substr(e.container_id, 1, length(:container)) = :container";
  if (q.remote_port) sql += " AND e.remote_port = :port";
  if (q.protocol) sql += " AND e.protocol = :protocol";
  if (q.direction) sql += " AND e.direction = :direction";
  return sql;
}

void BindQuery(sqlite3_stmt* st, const EventQuery& q) {
  auto bind_text = [st](const char* name, const std::string& v) {
    if (int i = sqlite3_bind_parameter_index(st, name); i > 0)
      sqlite3_bind_text(st, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
  };
  auto bind_int = [st](const char* name, int64_t v) {
    if (int i = sqlite3_bind_parameter_index(st, name); i > 0) sqlite3_bind_int64(st, i, v);
  };
  bind_text(":host", q.host_id);
  bind_text(":instance", q.agent_instance);
  bind_text(":kind", q.kind);
  bind_text(":exe", q.exe);
  bind_text(":sha256", q.sha256);
  bind_text(":rule", q.rule);
  bind_text(":container", q.container_prefix);
  bind_int(":port", q.remote_port);
  bind_int(":protocol", q.protocol);
  bind_int(":direction", q.direction);
  bind_int(":offset", static_cast<int64_t>(q.offset));
  bind_int(":since", absl::ToUnixNanos(q.since));
  bind_int(":until", absl::ToUnixNanos(q.until));
  bind_int(":limit", q.limit == 0 || q.limit > static_cast<size_t>(INT64_MAX)
                         ? int64_t{-1}
                         : static_cast<int64_t>(q.limit));
}

}  // namespace

absl::StatusOr<std::vector<v1::Envelope>> SqliteStore::Events(const EventQuery& q) {
  absl::string_view seq;
  absl::StatusOr<std::string> from = FromWhere(q, /*with_envelope=*/true, &seq);
  if (!from.ok()) return from.status();
  // Filters on decoded rows page in C++; otherwise SQL pages (and with
  // newest_first sorts only the top rows).
  const bool decoded = HasDecodedFilters(q);
  TriageStatuses statuses;
  if (!q.alert_status.empty()) {
    absl::StatusOr<std::vector<TriageRecord>> triage = Triage({});
    if (!triage.ok()) return triage.status();
    statuses = LatestStatuses(*triage);
  }
  const std::string order = q.newest_first ? absl::StrCat("e.time_ns DESC, ", seq, " DESC")
                                           : absl::StrCat("s.host_id, s.agent_instance, ", seq);
  const std::string sql =
      absl::StrCat("SELECT s.host_id, s.agent_instance, ", seq, ", e.envelope ", *from,
                   " ORDER BY ", order, decoded ? "" : " LIMIT :limit OFFSET :offset");
  size_t skip = decoded ? q.offset : 0;
  const size_t limit = q.limit == 0 ? SIZE_MAX : q.limit;
  absl::MutexLock lock(&read_mu_);
  sqlite3* db = reader_.get();
  absl::StatusOr<SqliteStmt> stmt = SqlitePrepare(Source(options_.path), db, sql);
  if (!stmt.ok()) return stmt.status();
  sqlite3_stmt* st = stmt->get();
  BindQuery(st, q);
  std::vector<v1::Envelope> out;
  while (out.size() < limit) {
    const int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return SqliteError(Source(options_.path), db, rc, "query events");
    const absl::string_view host = ColumnText(st, 0);
    const absl::string_view instance = ColumnText(st, 1);
    const auto seq = static_cast<uint64_t>(sqlite3_column_int64(st, 2));
    v1::Envelope& env = out.emplace_back();
    if (!env.ParseFromArray(sqlite3_column_blob(st, 3), sqlite3_column_bytes(st, 3)))
      return absl::DataLossError(absl::StrCat("store: ", options_.path, ": event host_id=", host,
                                              " agent_instance=", instance, " seq=", seq,
                                              " does not hold a valid envelope"));
    env.set_host_id(std::string(host));
    env.set_agent_instance(std::string(instance));
    env.set_seq(seq);
    if (decoded && (!MatchesDecodedFilters(q, env, &statuses) || (skip > 0 && skip-- > 0)))
      out.pop_back();
  }
  return out;
}

absl::StatusOr<uint64_t> SqliteStore::CountEvents(const EventQuery& q) {
  if (HasDecodedFilters(q)) {
    EventQuery all = q;
    all.limit = 0;
    all.offset = 0;
    absl::StatusOr<std::vector<v1::Envelope>> events = Events(all);
    if (!events.ok()) return events.status();
    return events->size();
  }
  absl::string_view seq;
  absl::StatusOr<std::string> from = FromWhere(q, /*with_envelope=*/false, &seq);
  if (!from.ok()) return from.status();
  const std::string sql = absl::StrCat("SELECT count(*) ", *from);
  absl::MutexLock lock(&read_mu_);
  sqlite3* db = reader_.get();
  absl::StatusOr<SqliteStmt> stmt = SqlitePrepare(Source(options_.path), db, sql);
  if (!stmt.ok()) return stmt.status();
  BindQuery(stmt->get(), q);
  const int rc = sqlite3_step(stmt->get());
  if (rc != SQLITE_ROW) return SqliteError(Source(options_.path), db, rc, "count events");
  return static_cast<uint64_t>(sqlite3_column_int64(stmt->get(), 0));
}

absl::StatusOr<std::vector<HostRecord>> SqliteStore::Hosts() {
  absl::MutexLock lock(&read_mu_);
  sqlite3* db = reader_.get();
  absl::StatusOr<SqliteStmt> stmt = SqlitePrepare(
      Source(options_.path), db,
      "SELECT host_id, hello, first_seen_ns, last_seen_ns FROM hosts ORDER BY host_id");
  if (!stmt.ok()) return stmt.status();
  sqlite3_stmt* st = stmt->get();
  std::vector<HostRecord> out;
  for (;;) {
    const int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return SqliteError(Source(options_.path), db, rc, "query hosts");
    HostRecord& h = out.emplace_back();
    if (!h.hello.ParseFromArray(sqlite3_column_blob(st, 1), sqlite3_column_bytes(st, 1)))
      return absl::DataLossError(absl::StrCat("store: ", options_.path, ": host ",
                                              ColumnText(st, 0), " does not hold a valid Hello"));
    h.first_seen = absl::FromUnixNanos(sqlite3_column_int64(st, 2));
    h.last_seen = absl::FromUnixNanos(sqlite3_column_int64(st, 3));
  }
  return out;
}

absl::StatusOr<uint64_t> SqliteStore::CountHosts() {
  absl::MutexLock lock(&read_mu_);
  sqlite3* db = reader_.get();
  absl::StatusOr<SqliteStmt> stmt =
      SqlitePrepare(Source(options_.path), db, "SELECT count(*) FROM hosts");
  if (!stmt.ok()) return stmt.status();
  const int rc = sqlite3_step(stmt->get());
  if (rc != SQLITE_ROW) return SqliteError(Source(options_.path), db, rc, "count hosts");
  return static_cast<uint64_t>(sqlite3_column_int64(stmt->get(), 0));
}

}  // namespace sockwatch
