#include "agent/history.h"

#include <arpa/inet.h>
#include <sqlite3.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <limits>
#include <system_error>
#include <utility>
#include <variant>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace sockwatch {

namespace {

// No path in errors: the few that need it name the file in `what`
// ("history: open /var/lib/sockwatch/history.db: ...").
constexpr SqliteSource kSrc{"history", {}};

// Each entry upgrades the file from version i to i + 1. Version 0 is a file
// without our tables. Append, never edit: files in the field were made by
// the earlier entries.
constexpr const char* kMigrations[] = {
    // 0 -> 1.
    R"sql(
CREATE TABLE schema_version(version INTEGER NOT NULL);
INSERT INTO schema_version(version) VALUES (0);
CREATE TABLE events(
  id INTEGER PRIMARY KEY,
  time_ns INTEGER NOT NULL,
  kind TEXT NOT NULL,
  pid INTEGER NOT NULL,
  exe TEXT NOT NULL,
  remote_ip BLOB,
  remote_port INTEGER NOT NULL,
  local_port INTEGER NOT NULL,
  protocol INTEGER NOT NULL,
  direction INTEGER NOT NULL,
  rule TEXT,
  envelope BLOB NOT NULL);
-- Only append-ordered indexes: an index on a random key (pid, address,
-- port) makes each 1000-row commit dirty ~1000 scattered pages, which
-- measured 180k -> 20k rows/s per such index. Other filters scan rows in
-- time order instead; the table is bounded (max_bytes) and LIMIT stops early.
CREATE INDEX events_time ON events(time_ns);
-- Partial: network rows, the vast majority, pay nothing for it.
CREATE INDEX events_alert_time ON events(time_ns) WHERE kind = 'alert';
)sql",
};
static_assert(std::size(kMigrations) == kHistorySchemaVersion);

absl::Status CheckSchema(sqlite3* db, const HistoryOptions& options) {
  const std::string& path = options.path;
  SqliteTransaction tx(kSrc, db);
  if (absl::Status s = tx.Begin(!options.read_only); !s.ok()) return s;
  absl::StatusOr<int64_t> has_table = SqliteQueryInt(
      kSrc, db,
      "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'schema_version'");
  if (!has_table.ok()) return has_table.status();
  int64_t version = 0;
  if (*has_table > 0) {
    absl::StatusOr<int64_t> v = SqliteQueryInt(kSrc, db, "SELECT max(version) FROM schema_version");
    if (!v.ok()) return v.status();
    version = *v;
  } else {
    absl::StatusOr<int64_t> tables = SqliteQueryInt(kSrc, db, "SELECT count(*) FROM sqlite_schema");
    if (!tables.ok()) return tables.status();
    // Never build our tables into somebody else's database.
    if (*tables > 0)
      return absl::FailedPreconditionError(
          absl::StrCat("history: ", path, " is an SQLite file but not a sockwatch history store"));
  }
  if (version > kHistorySchemaVersion)
    return absl::FailedPreconditionError(
        absl::StrCat("history: ", path, " has schema version ", version,
                     ", newer than the version ", kHistorySchemaVersion,
                     " this sockwatch understands; upgrade sockwatch or move the file aside"));
  if (version == kHistorySchemaVersion) return absl::OkStatus();
  if (options.read_only)
    return absl::FailedPreconditionError(
        version == 0 ? absl::StrCat("history: ", path, " is not initialised yet")
                     : absl::StrCat("history: ", path, " has the older schema version ", version,
                                    "; the agent upgrades it when it starts"));
  for (int64_t v = version; v < kHistorySchemaVersion; ++v) {
    const std::string what = absl::StrCat("upgrade schema to version ", v + 1);
    if (absl::Status s = SqliteExec(kSrc, db, kMigrations[v], what.c_str()); !s.ok()) return s;
  }
  const std::string set_version =
      absl::StrCat("UPDATE schema_version SET version = ", kHistorySchemaVersion);
  if (absl::Status s = SqliteExec(kSrc, db, set_version.c_str()); !s.ok()) return s;
  return tx.Commit();
}

int64_t UnixNanos(const google::protobuf::Timestamp& t) {
  // Saturates instead of overflowing on absurd timestamps.
  return absl::ToUnixNanos(absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos()));
}

// Globs with '*' only: SQLite's other GLOB metacharacters are taken literally.
std::string ExeGlob(absl::string_view pattern) {
  std::string out;
  for (char c : pattern) {
    out += c == '?' ? "[?]" : c == '[' ? "[[]" : std::string(1, c);
  }
  return out;
}

}  // namespace

std::optional<std::string> IpKey(absl::string_view ip) {
  std::string text(ip.substr(0, ip.find('%')));  // drop an IPv6 zone ("fe80::1%eth0")
  unsigned char buf[16] = {};
  if (inet_pton(AF_INET, text.c_str(), buf + 12) == 1) {
    buf[10] = buf[11] = 0xff;
    return std::string(reinterpret_cast<const char*>(buf), sizeof(buf));
  }
  if (inet_pton(AF_INET6, text.c_str(), buf) == 1)
    return std::string(reinterpret_cast<const char*>(buf), sizeof(buf));
  return std::nullopt;
}

absl::StatusOr<IpKeyRange> ParseCidrRange(absl::string_view cidr) {
  const absl::string_view in = absl::StripAsciiWhitespace(cidr);
  const size_t slash = in.find('/');
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("invalid CIDR '", cidr, "': ", why));
  };
  const absl::string_view addr = in.substr(0, slash);
  if (absl::StrContains(addr, '%')) return bad("zone ids are not supported");
  const bool v4 = !absl::StrContains(addr, ':');
  std::optional<std::string> key = IpKey(addr);
  if (!key) return bad("not an IPv4 or IPv6 address");
  const int max_bits = v4 ? 32 : 128;
  int bits = max_bits;
  if (slash != absl::string_view::npos) {
    const absl::string_view len = in.substr(slash + 1);
    if (len.empty() || len.size() > 3 ||
        !std::all_of(len.begin(), len.end(), absl::ascii_isdigit) ||
        !absl::SimpleAtoi(len, &bits) || bits > max_bits)
      return bad(absl::StrCat("prefix length must be 0..", max_bits));
  }
  if (v4) bits += 96;
  IpKeyRange r{*key, *key};
  for (int i = 0; i < 16; ++i) {
    const int keep = std::clamp(bits - i * 8, 0, 8);
    const auto mask = static_cast<unsigned char>(keep == 0 ? 0 : 0xff << (8 - keep));
    r.lo[i] = static_cast<char>(static_cast<unsigned char>(r.lo[i]) & mask);
    r.hi[i] =
        static_cast<char>(static_cast<unsigned char>(r.hi[i]) | static_cast<unsigned char>(~mask));
  }
  return r;
}

absl::StatusOr<std::unique_ptr<HistoryStore>> HistoryStore::Open(const HistoryOptions& options) {
  if (options.path.empty()) return absl::InvalidArgumentError("history: empty path");
  if (options.read_only) {
    std::error_code ec;
    if (!std::filesystem::exists(options.path, ec))
      return absl::NotFoundError(absl::StrCat("history: ", options.path, " does not exist"));
  }
  const int flags =
      options.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(options.path.c_str(), &raw, flags, nullptr);
  SqliteDb db(raw);
  if (rc != SQLITE_OK) return SqliteError(kSrc, db.get(), rc, absl::StrCat("open ", options.path));
  sqlite3_extended_result_codes(db.get(), 1);
  sqlite3_busy_timeout(db.get(), static_cast<int>(std::clamp<int64_t>(
                                     absl::ToInt64Milliseconds(options.busy_timeout), 0,
                                     std::numeric_limits<int>::max())));
  if (!options.read_only) {
    // auto_vacuum must precede the first table; on an existing file it is a
    // no-op. INCREMENTAL lets Enforce() hand freed pages back to the disk.
    if (absl::Status s = SqliteExec(kSrc, db.get(), "PRAGMA auto_vacuum = INCREMENTAL"); !s.ok())
      return s;
    absl::StatusOr<SqliteStmt> mode = SqliteQueryRow(kSrc, db.get(), "PRAGMA journal_mode = WAL");
    if (!mode.ok()) return mode.status();
    const auto* got = reinterpret_cast<const char*>(sqlite3_column_text(mode->get(), 0));
    if (got == nullptr || absl::AsciiStrToLower(got) != "wal")
      return absl::FailedPreconditionError(absl::StrCat(
          "history: ", options.path, ": cannot use WAL (journal_mode=", got ? got : "?", ")"));
    // NORMAL in WAL mode: a power cut may lose the last commits, never the
    // file. The WAL is reused, not shrunk, unless told: back to 4 MiB after
    // each checkpoint. A checkpoint every 32 MiB instead of SQLite's 4 MiB:
    // a page the commits keep touching (the tail of the table and of its
    // index) is copied into the file once per checkpoint; measured, the
    // agent's CPU per connection fell 17% with detection on.
    if (absl::Status s = SqliteExec(kSrc, db.get(),
                                    "PRAGMA synchronous = NORMAL; PRAGMA journal_size_limit = "
                                    "4194304; PRAGMA wal_autocheckpoint = 8192");
        !s.ok())
      return s;
  } else {
    // Belt and braces: nothing on the CLI path may write.
    if (absl::Status s = SqliteExec(kSrc, db.get(), "PRAGMA query_only = ON"); !s.ok()) return s;
  }
  if (absl::Status s = CheckSchema(db.get(), options); !s.ok()) return s;
  std::unique_ptr<HistoryStore> store(new HistoryStore(options, std::move(db)));
  if (absl::Status s = store->Prepare(); !s.ok()) return s;
  return store;
}

HistoryStore::HistoryStore(HistoryOptions options, SqliteDb db)
    : options_(std::move(options)), db_(std::move(db)) {}

// Statements are finalized before the connection closes (member order).
HistoryStore::~HistoryStore() = default;

absl::Status HistoryStore::Prepare() {
  if (options_.read_only) return absl::OkStatus();
  absl::StatusOr<SqliteStmt> insert = SqlitePrepare(
      kSrc, db_.get(),
      "INSERT INTO events(time_ns, kind, pid, exe, remote_ip, remote_port, local_port, protocol, "
      "direction, rule, envelope) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
      /*persistent=*/true);
  if (!insert.ok()) return insert.status();
  insert_ = std::move(*insert);
  return absl::OkStatus();
}

HistoryBatch::Slice HistoryBatch::Put(absl::string_view bytes) {
  Slice s{static_cast<uint32_t>(buf_.size()), static_cast<int32_t>(bytes.size())};
  buf_.append(bytes.data(), bytes.size());
  return s;
}

absl::StatusOr<bool> HistoryBatch::Add(const v1::Envelope& env) {
  const v1::NetworkEvent* net = nullptr;
  const v1::Process* proc = nullptr;
  Row row{};
  const size_t mark = buf_.size();
  if (env.has_network()) {
    row.kind = "network";
    net = &env.network();
    proc = &net->process();
  } else if (env.has_alert()) {
    row.kind = "alert";
    net = &env.alert().network();
    proc = env.alert().has_process() ? &env.alert().process() : &net->process();
    row.rule = Put(env.alert().rule());
  } else {
    return false;  // process lifecycle, loss, coverage...: not history material
  }
  // Serialized in place at the end of the buffer: no copy of the bytes.
  const size_t size = env.ByteSizeLong();
  // Offsets are 32-bit: the blob, the exe and the address must all fit.
  if (size > static_cast<size_t>(std::numeric_limits<int32_t>::max()) ||
      buf_.size() + size + proc->exe().size() + 16 > std::numeric_limits<uint32_t>::max()) {
    buf_.resize(mark);
    return absl::InternalError(absl::StrCat("history: cannot serialize envelope seq ", env.seq()));
  }
  row.blob = {static_cast<uint32_t>(buf_.size()), static_cast<int32_t>(size)};
  buf_.resize(buf_.size() + size);
  env.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(buf_.data() + row.blob.off));
  row.time_ns = UnixNanos(env.time());
  row.pid = proc->pid();
  row.exe = Put(proc->exe());
  if (const std::optional<std::string> ip = IpKey(net->remote_ip())) row.ip = Put(*ip);
  row.remote_port = net->remote_port();
  row.local_port = net->local_port();
  row.protocol = net->protocol();
  row.direction = net->direction();
  rows_.push_back(row);
  return true;
}

absl::Status HistoryStore::Append(absl::Span<const v1::Envelope> batch) {
  HistoryBatch rows;
  for (const v1::Envelope& env : batch)
    if (absl::StatusOr<bool> added = rows.Add(env); !added.ok()) return added.status();
  return Append(rows);
}

absl::Status HistoryStore::Append(const HistoryBatch& batch) {
  std::lock_guard<std::mutex> lock(mu_);
  if (options_.read_only) return absl::FailedPreconditionError("history: store is read-only");
  if (batch.empty()) return absl::OkStatus();
  SqliteTransaction tx(kSrc, db_.get());
  if (absl::Status s = tx.Begin(true); !s.ok()) return s;
  sqlite3_stmt* st = insert_.get();
  auto bind = [&batch, st](int i, HistoryBatch::Slice span, bool text) {
    if (span.len < 0) {
      sqlite3_bind_null(st, i);
      return;
    }
    const absl::string_view v = batch.At(span);
    if (text)
      sqlite3_bind_text(st, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
    else
      sqlite3_bind_blob(st, i, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
  };
  for (const HistoryBatch::Row& row : batch.rows_) {
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, row.time_ns);
    sqlite3_bind_text(st, 2, row.kind, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, row.pid);
    bind(4, row.exe, true);
    bind(5, row.ip, false);
    sqlite3_bind_int64(st, 6, row.remote_port);
    sqlite3_bind_int64(st, 7, row.local_port);
    sqlite3_bind_int64(st, 8, row.protocol);
    sqlite3_bind_int64(st, 9, row.direction);
    bind(10, row.rule, true);
    bind(11, row.blob, false);
    const int rc = sqlite3_step(st);
    sqlite3_reset(st);  // release the borrowed buffers before they go away
    if (rc != SQLITE_DONE) return SqliteError(kSrc, db_.get(), rc, "append");
  }
  return tx.Commit();
}

absl::StatusOr<uint64_t> HistoryStore::LiveBytesLocked() {
  // Pages in use, not the file size: free pages wait for incremental_vacuum.
  absl::StatusOr<int64_t> bytes =
      SqliteQueryInt(kSrc, db_.get(),
                     "SELECT (page_count - freelist_count) * page_size "
                     "FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()");
  if (!bytes.ok()) return bytes.status();
  return static_cast<uint64_t>(std::max<int64_t>(*bytes, 0));
}

absl::StatusOr<RetentionResult> HistoryStore::Enforce(absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  if (options_.read_only) return absl::FailedPreconditionError("history: store is read-only");
  RetentionResult result;
  absl::Status s = EnforceLocked(now, result);
  // Whatever was committed is gone: count it even if a later step failed.
  evicted_total_ += result.removed_by_age + result.removed_by_size;
  if (!s.ok()) return s;
  return result;
}

absl::Status HistoryStore::EnforceLocked(absl::Time now, RetentionResult& result) {
  sqlite3* db = db_.get();
  absl::StatusOr<uint64_t> before = LiveBytesLocked();
  if (!before.ok()) return before.status();
  result.bytes_before = *before;
  uint64_t by_age = 0;
  uint64_t by_size = 0;
  {
    SqliteTransaction tx(kSrc, db);
    if (absl::Status s = tx.Begin(true); !s.ok()) return s;
    if (options_.max_age != absl::InfiniteDuration()) {
      absl::StatusOr<SqliteStmt> del =
          SqlitePrepare(kSrc, db, "DELETE FROM events WHERE time_ns < ?1");
      if (!del.ok()) return del.status();
      sqlite3_bind_int64(del->get(), 1, absl::ToUnixNanos(now - options_.max_age));
      if (int rc = sqlite3_step(del->get()); rc != SQLITE_DONE)
        return SqliteError(kSrc, db, rc, "delete by age");
      by_age = static_cast<uint64_t>(sqlite3_changes64(db));
    }
    absl::StatusOr<int64_t> rows = SqliteQueryInt(kSrc, db, "SELECT count(*) FROM events");
    if (!rows.ok()) return rows.status();
    absl::StatusOr<SqliteStmt> del = SqlitePrepare(
        kSrc, db,
        "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY time_ns, id LIMIT ?1)");
    if (!del.ok()) return del.status();
    int64_t left = *rows;
    while (left > 0) {
      absl::StatusOr<uint64_t> live = LiveBytesLocked();
      if (!live.ok()) return live.status();
      if (*live <= options_.max_bytes) break;
      // A page is freed only once all its rows are gone: estimate from the
      // average row, then measure again.
      const uint64_t per_row = std::max<uint64_t>(*live / static_cast<uint64_t>(left), 1);
      const int64_t n = std::min<int64_t>(
          std::max<int64_t>(static_cast<int64_t>((*live - options_.max_bytes) / per_row) + 1, 16),
          left);
      sqlite3_reset(del->get());
      sqlite3_bind_int64(del->get(), 1, n);
      if (int rc = sqlite3_step(del->get()); rc != SQLITE_DONE)
        return SqliteError(kSrc, db, rc, "delete by size");
      const int64_t changed = sqlite3_changes64(db);
      by_size += static_cast<uint64_t>(changed);
      left -= changed;
      if (changed == 0) break;
    }
    if (absl::Status s = tx.Commit(); !s.ok()) return s;
  }
  result.removed_by_age = by_age;
  result.removed_by_size = by_size;
  if (by_age + by_size > 0) {
    // Move the free pages to the end and cut them off, then checkpoint so the
    // truncation reaches the main file. PASSIVE never waits for the CLI.
    if (absl::Status s = SqliteExec(kSrc, db, "PRAGMA incremental_vacuum"); !s.ok()) return s;
    if (int rc =
            sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
        rc != SQLITE_OK && rc != SQLITE_BUSY)
      return SqliteError(kSrc, db, rc, "checkpoint");
  }
  absl::StatusOr<uint64_t> after = LiveBytesLocked();
  if (!after.ok()) return after.status();
  result.bytes_after = *after;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Envelope>> HistoryStore::Search(const HistoryQuery& q) {
  // Values are always bound, never spliced into the SQL text. Parameters are
  // numbered in bind order; a CIDR range takes two.
  using Value = std::variant<int64_t, std::string, IpKeyRange>;
  std::vector<Value> binds;
  int next = 1;
  auto param = [&](Value v) {
    const int n = next;
    next += std::holds_alternative<IpKeyRange>(v) ? 2 : 1;
    binds.push_back(std::move(v));
    return n;
  };
  std::string sql = "SELECT id, envelope FROM events WHERE 1";
  if (q.since != absl::InfinitePast())
    absl::StrAppend(&sql, " AND time_ns >= ?", param(absl::ToUnixNanos(q.since)));
  if (q.until != absl::InfiniteFuture())
    absl::StrAppend(&sql, " AND time_ns < ?", param(absl::ToUnixNanos(q.until)));
  if (q.exe) {
    const bool glob = q.exe->find('*') != std::string::npos;
    absl::StrAppend(&sql, glob ? " AND exe GLOB ?" : " AND exe = ?",
                    param(glob ? ExeGlob(*q.exe) : *q.exe));
  }
  if (q.pid) absl::StrAppend(&sql, " AND pid = ?", param(static_cast<int64_t>(*q.pid)));
  if (q.remote_cidr) {
    absl::StatusOr<IpKeyRange> range = ParseCidrRange(*q.remote_cidr);
    if (!range.ok()) return range.status();
    const int n = param(std::move(*range));
    absl::StrAppend(&sql, " AND remote_ip BETWEEN ?", n, " AND ?", n + 1);
  }
  if (q.port) {
    const int n = param(static_cast<int64_t>(*q.port));
    absl::StrAppend(&sql, " AND (remote_port = ?", n, " OR local_port = ?", n, ")");
  }
  if (q.alerts_only) sql += " AND kind = 'alert'";  // a literal, so the partial index applies
  absl::StrAppend(&sql, " ORDER BY time_ns DESC, id DESC LIMIT ?",
                  param(q.limit == 0 || q.limit > static_cast<size_t>(INT64_MAX)
                            ? int64_t{-1}
                            : static_cast<int64_t>(q.limit)));

  std::lock_guard<std::mutex> lock(mu_);
  sqlite3* db = db_.get();
  absl::StatusOr<SqliteStmt> stmt = SqlitePrepare(kSrc, db, sql);
  if (!stmt.ok()) return stmt.status();
  sqlite3_stmt* st = stmt->get();
  int index = 1;
  for (const Value& v : binds) {
    if (const auto* i = std::get_if<int64_t>(&v)) {
      sqlite3_bind_int64(st, index++, *i);
    } else if (const auto* s = std::get_if<std::string>(&v)) {
      sqlite3_bind_text(st, index++, s->data(), static_cast<int>(s->size()), SQLITE_STATIC);
    } else {
      const auto& r = std::get<IpKeyRange>(v);
      sqlite3_bind_blob(st, index++, r.lo.data(), static_cast<int>(r.lo.size()), SQLITE_STATIC);
      sqlite3_bind_blob(st, index++, r.hi.data(), static_cast<int>(r.hi.size()), SQLITE_STATIC);
    }
  }
  std::vector<v1::Envelope> out;
  for (;;) {
    const int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) break;
    if (rc != SQLITE_ROW) return SqliteError(kSrc, db, rc, "search");
    const void* data = sqlite3_column_blob(st, 1);
    const int size = sqlite3_column_bytes(st, 1);
    v1::Envelope& env = out.emplace_back();
    if (!env.ParseFromArray(data, size))
      return absl::DataLossError(absl::StrCat("history: ", options_.path, ": row ",
                                              sqlite3_column_int64(st, 0),
                                              " does not hold a valid envelope"));
  }
  return out;
}

uint64_t HistoryStore::evicted_total() const {
  std::lock_guard<std::mutex> lock(mu_);
  return evicted_total_;
}

absl::StatusOr<uint64_t> HistoryStore::Count() {
  std::lock_guard<std::mutex> lock(mu_);
  absl::StatusOr<int64_t> n = SqliteQueryInt(kSrc, db_.get(), "SELECT count(*) FROM events");
  if (!n.ok()) return n.status();
  return static_cast<uint64_t>(*n);
}

}  // namespace sockwatch
