// Triage reads and fleet prevalence of ClickHouseStore, over the triage and
// facts tables (see clickhouse_store.h). Writes are in clickhouse_store.cc.
#include <arpa/inet.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/container/btree_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "collector/clickhouse_store.h"

namespace sockwatch {

namespace {

using clickhouse::Fixed;
using clickhouse::kString;
using clickhouse::Quote;

// " WHERE ..." for q's column filters; images and pairs ignore what they
// group. The remote filter is applied in C++ (CIDR), after RemoteSql.
std::string FactWhere(const PrevalenceQuery& q, bool with_behavior) {
  std::string sql = " WHERE 1";
  if (!q.exe.empty()) absl::StrAppend(&sql, " AND exe = ", Quote(q.exe));
  if (!q.sha256.empty()) absl::StrAppend(&sql, " AND sha256 = ", Quote(q.sha256));
  if (!q.exclude_host.empty()) absl::StrAppend(&sql, " AND host_id != ", Quote(q.exclude_host));
  if (with_behavior) {
    if (q.direction) absl::StrAppend(&sql, " AND direction = ", q.direction);
    if (q.protocol) absl::StrAppend(&sql, " AND protocol = ", q.protocol);
    if (q.port) absl::StrAppend(&sql, " AND port = ", q.port);
  }
  return sql;
}

// A condition every address in remote (a checked IP or CIDR) meets, so the
// server drops most rows before InRemoteFilter decides. Plain text, so it
// means the same on every version (IPv4StringToNum throws on non-IPv4 text
// on current servers): a valid IPv4 address has one spelling (inet_pton
// takes no leading zeros), so the octets the prefix fixes are a text
// prefix; an IPv6 address always has a ':', an IPv4 one never.
std::string RemoteSql(absl::string_view remote) {
  const size_t slash = remote.find('/');
  const std::string ip(remote.substr(0, slash));
  in_addr v4;
  if (inet_pton(AF_INET, ip.c_str(), &v4) != 1) return " AND position(remote_ip, ':') > 0";
  int bits = 32;
  // CheckRemoteFilter passed: the prefix length is a number up to 32.
  if (slash != absl::string_view::npos && !absl::SimpleAtoi(remote.substr(slash + 1), &bits))
    bits = 0;
  const auto* octet = reinterpret_cast<const unsigned char*>(&v4.s_addr);  // network order
  if (bits == 32)
    return absl::StrCat(" AND remote_ip = '", octet[0], ".", octet[1], ".", octet[2], ".", octet[3],
                        "'");
  std::string prefix;
  for (int i = 0; i < bits / 8; ++i) absl::StrAppend(&prefix, octet[i], ".");
  if (prefix.empty()) return " AND position(remote_ip, ':') = 0";
  return absl::StrCat(" AND startsWith(remote_ip, '", prefix, "')");
}

}  // namespace

absl::StatusOr<std::vector<TriageRecord>> ClickHouseStore::Triage(
    absl::Span<const std::string> alert_ids) {
  const std::string select =
      absl::StrCat("SELECT alert_id, status, actor, note, time_ns FROM ", Table("triage"));
  const std::string order = " ORDER BY alert_id, time_ns, stamp";
  std::vector<TriageRecord> out;
  auto query = [&](const std::string& sql) {
    return client_.Select(sql, {kString, kString, kString, kString, 8}, "query triage",
                          [&](absl::Span<const absl::string_view> row) -> absl::StatusOr<bool> {
                            TriageRecord& r = out.emplace_back();
                            r.alert_id = std::string(row[0]);
                            r.status = std::string(row[1]);
                            r.by = std::string(row[2]);
                            r.note = std::string(row[3]);
                            r.time = absl::FromUnixNanos(Fixed<int64_t>(row[4]));
                            return true;
                          });
  };
  if (alert_ids.empty()) {
    if (absl::Status s = query(select + order); !s.ok()) return s;
    return out;
  }
  // Sorted and distinct: chunk after chunk, the output stays in id order.
  const absl::btree_set<std::string> ids(alert_ids.begin(), alert_ids.end());
  std::vector<std::string> quoted;
  for (const std::string& id : ids) quoted.push_back(Quote(id));
  absl::Status s = clickhouse::ForEachJoined(quoted, ", ", [&](absl::string_view in) {
    return query(absl::StrCat(select, " WHERE alert_id IN (", in, ")", order));
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<std::vector<std::string>> ClickHouseStore::FactHostsUpTo(const PrevalenceQuery& q,
                                                                        size_t limit) {
  if (absl::Status s = CheckRemoteFilter(q.remote); !s.ok()) return s;
  std::vector<std::string> out;
  if (q.remote.empty()) {
    absl::Status s =
        client_.Select(absl::StrCat("SELECT DISTINCT host_id FROM ", Table("facts"),
                                    FactWhere(q, /*with_behavior=*/true), " ORDER BY host_id",
                                    clickhouse::LimitClause(0, limit)),
                       {kString}, "query fact hosts",
                       [&](absl::Span<const absl::string_view> row) -> absl::StatusOr<bool> {
                         out.emplace_back(row[0]);
                         return true;
                       });
    if (!s.ok()) return s;
    return out;
  }
  // Each (host, address) is checked here, in host order: one per host.
  absl::Status s = client_.Select(
      absl::StrCat("SELECT DISTINCT host_id, remote_ip FROM ", Table("facts"),
                   FactWhere(q, /*with_behavior=*/true), RemoteSql(q.remote), " ORDER BY host_id"),
      {kString, kString}, "query fact hosts",
      [&](absl::Span<const absl::string_view> row) -> absl::StatusOr<bool> {
        if (!out.empty() && out.back() == row[0]) return true;
        if (!InRemoteFilter(q.remote, row[1])) return true;
        out.emplace_back(row[0]);
        return limit == 0 || out.size() < limit;
      });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<uint64_t> ClickHouseStore::CountFactHosts(const PrevalenceQuery& q) {
  if (!q.remote.empty()) {
    absl::StatusOr<std::vector<std::string>> hosts = FactHostsUpTo(q, 0);
    if (!hosts.ok()) return hosts.status();
    return hosts->size();
  }
  uint64_t n = 0;
  absl::Status s =
      client_.Select(absl::StrCat("SELECT uniqExact(host_id) FROM ", Table("facts"),
                                  FactWhere(q, /*with_behavior=*/true)),
                     {8}, "count fact hosts",
                     [&n](absl::Span<const absl::string_view> row) -> absl::StatusOr<bool> {
                       n = Fixed<uint64_t>(row[0]);
                       return true;
                     });
  if (!s.ok()) return s;
  return n;
}

absl::StatusOr<std::vector<std::string>> ClickHouseStore::FactHosts(const PrevalenceQuery& q,
                                                                    size_t limit) {
  return FactHostsUpTo(q, limit);
}

// max(sha256) is the greatest digest, '' only when none is known ('' sorts
// first). Aliases differ from column names: ClickHouse would substitute an
// alias named like a column into WHERE.
absl::StatusOr<std::vector<ImageCount>> ClickHouseStore::RarestImages(const PrevalenceQuery& q,
                                                                      size_t limit) {
  std::vector<ImageCount> out;
  absl::Status s = client_.Select(
      absl::StrCat("SELECT exe, max(sha256), uniqExactIf(sha256, sha256 != ''), "
                   "uniqExact(host_id) AS host_count, min(first_ns), max(last_ns) FROM ",
                   Table("facts"), FactWhere(q, /*with_behavior=*/false),
                   " GROUP BY exe ORDER BY host_count, exe", clickhouse::LimitClause(0, limit)),
      {kString, kString, 8, 8, 8, 8}, "query images",
      [&](absl::Span<const absl::string_view> row) -> absl::StatusOr<bool> {
        ImageCount& c = out.emplace_back();
        c.exe = std::string(row[0]);
        c.sha256 = std::string(row[1]);
        c.sha256_count = Fixed<uint64_t>(row[2]);
        c.hosts = Fixed<uint64_t>(row[3]);
        c.first_seen = absl::FromUnixNanos(Fixed<int64_t>(row[4]));
        c.last_seen = absl::FromUnixNanos(Fixed<int64_t>(row[5]));
        return true;
      });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<std::vector<PairCount>> ClickHouseStore::RarestPairs(const PrevalenceQuery& q,
                                                                    size_t limit) {
  std::vector<PairCount> out;
  absl::Status s = client_.Select(
      absl::StrCat("SELECT exe, direction, protocol, port, uniqExact(host_id) AS host_count, "
                   "min(first_ns), max(last_ns) FROM ",
                   Table("facts"), FactWhere(q, /*with_behavior=*/true),
                   " GROUP BY exe, direction, protocol, port "
                   "ORDER BY host_count, exe, direction, protocol, port",
                   clickhouse::LimitClause(0, limit)),
      {kString, 4, 4, 4, 8, 8, 8}, "query pairs",
      [&](absl::Span<const absl::string_view> row) -> absl::StatusOr<bool> {
        PairCount& c = out.emplace_back();
        c.exe = std::string(row[0]);
        c.direction = Fixed<int32_t>(row[1]);
        c.protocol = Fixed<int32_t>(row[2]);
        c.port = Fixed<uint32_t>(row[3]);
        c.hosts = Fixed<uint64_t>(row[4]);
        c.first_seen = absl::FromUnixNanos(Fixed<int64_t>(row[5]));
        c.last_seen = absl::FromUnixNanos(Fixed<int64_t>(row[6]));
        return true;
      });
  if (!s.ok()) return s;
  return out;
}

}  // namespace sockwatch
