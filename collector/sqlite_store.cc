#include "collector/sqlite_store.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>
#include <sqlite3.h>

#include <algorithm>
#include <filesystem>
#include <iterator>
#include <limits>
#include <system_error>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "collector/sqlite_store_internal.h"

namespace sockwatch {

namespace {

using sqlite_store_internal::IsRareKind;
using sqlite_store_internal::Source;

// Each entry upgrades the file from version i to i + 1. Version 0 is a file
// without our tables. Append, never edit: files in the field were made by
// the earlier entries.
constexpr const char* kMigrations[] = {
    // 0 -> 1.
    R"sql(
CREATE TABLE schema_version(version INTEGER NOT NULL);
INSERT INTO schema_version(version) VALUES (0);
CREATE TABLE hosts(
  host_id TEXT PRIMARY KEY,
  hostname TEXT NOT NULL,
  kernel_release TEXT NOT NULL,
  agent_version TEXT NOT NULL,
  first_seen_ns INTEGER NOT NULL,
  last_seen_ns INTEGER NOT NULL,
  hello BLOB NOT NULL);
CREATE TABLE streams(
  id INTEGER PRIMARY KEY,
  host_id TEXT NOT NULL,
  agent_instance TEXT NOT NULL,
  UNIQUE(host_id, agent_instance));
-- Clustered on the exactly-once key: rows of one stream arrive in seq order,
-- so each stream appends at its own end of the b-tree and a 1000-row commit
-- dirties a few pages per stream, not 1000 scattered ones. NULL means "not
-- applicable to this kind"; protocol and direction are v1 enum numbers.
-- envelope is the serialized v1.Envelope without host_id, agent_instance
-- and seq: the key holds them (stream -> streams), and they are ~15% of a
-- network event.
CREATE TABLE events(
  stream INTEGER NOT NULL REFERENCES streams(id),
  seq INTEGER NOT NULL,
  time_ns INTEGER NOT NULL,
  kind TEXT NOT NULL,
  pid INTEGER,
  exe TEXT,
  sha256 TEXT,
  remote_ip TEXT,
  remote_port INTEGER,
  protocol INTEGER,
  direction INTEGER,
  rule TEXT,
  container_id TEXT,
  envelope BLOB NOT NULL,
  PRIMARY KEY(stream, seq)) WITHOUT ROWID;
-- Host X between times: the host's few streams, then a time range in each.
-- Append-ordered too (time grows within a stream); no index on a random key
-- (pid, address, port): each costs most of the insert rate (see history.cc).
CREATE INDEX events_stream_time ON events(stream, time_ns);
-- Rare kinds a SOC asks for by name (alert, loss, coverage, learning), in
-- seq order per stream; Write adds a row here for each one it stores. A
-- partial index on events would do the same, but evaluates its WHERE on
-- every insert: +7% instructions per network row that never enters it.
CREATE TABLE rare_events(
  kind TEXT NOT NULL,
  stream INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  time_ns INTEGER NOT NULL,
  PRIMARY KEY(kind, stream, seq)) WITHOUT ROWID;
)sql",
    // 1 -> 2: triage and prevalence. Events stored before version 2 are not
    // in facts (no store in the field predates it).
    R"sql(
-- Append-only: every triage step of an alert, in the order taken.
CREATE TABLE triage(
  id INTEGER PRIMARY KEY,
  alert_id TEXT NOT NULL,
  status TEXT NOT NULL,
  by TEXT NOT NULL,
  note TEXT NOT NULL,
  time_ns INTEGER NOT NULL);
CREATE INDEX triage_alert ON triage(alert_id, time_ns, id);
-- What prevalence counts (store.h FactOf): one row per distinct fact of a
-- host, with the times of its first and last event. Write folds a batch's
-- facts in memory first, so a busy host costs a few upserts per commit.
CREATE TABLE facts(
  exe TEXT NOT NULL,
  direction INTEGER NOT NULL,
  protocol INTEGER NOT NULL,
  port INTEGER NOT NULL,
  host_id TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  remote_ip TEXT NOT NULL,
  first_ns INTEGER NOT NULL,
  last_ns INTEGER NOT NULL,
  PRIMARY KEY(exe, direction, protocol, port, host_id, sha256, remote_ip)) WITHOUT ROWID;
CREATE INDEX facts_sha256 ON facts(sha256, host_id);
CREATE INDEX facts_host ON facts(host_id);
)sql",
};
static_assert(std::size(kMigrations) == kSqliteStoreSchemaVersion);

// OR IGNORE skips a row whose key is stored already; it would also skip a
// NOT NULL violation, but every NOT NULL column is always bound. (ON
// CONFLICT DO NOTHING would make a multi-row INSERT keep a statement journal:
// one write per row.)
constexpr int kEventColumns = 14;
std::string InsertEventSql(int rows) {
  std::string sql =
      "INSERT OR IGNORE INTO events(stream, seq, time_ns, kind, pid, exe, sha256, remote_ip, "
      "remote_port, protocol, direction, rule, container_id, envelope) VALUES ";
  for (int r = 0; r < rows; ++r) {
    absl::StrAppend(&sql, r == 0 ? "(" : ", (");
    for (int c = 1; c <= kEventColumns; ++c)
      absl::StrAppend(&sql, c == 1 ? "?" : ", ?", r * kEventColumns + c);
    sql += ")";
  }
  return sql;
}

// The schema version of the file: 0 for a new one. Refuses a database that
// is not ours, or is newer than this binary.
absl::StatusOr<int64_t> ReadVersion(const std::string& path, sqlite3* db) {
  absl::StatusOr<int64_t> has_table = SqliteQueryInt(
      Source(path), db,
      "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'schema_version'");
  if (!has_table.ok()) return has_table.status();
  int64_t version = 0;
  if (*has_table > 0) {
    absl::StatusOr<int64_t> v =
        SqliteQueryInt(Source(path), db, "SELECT max(version) FROM schema_version");
    if (!v.ok()) return v.status();
    version = *v;
  } else {
    absl::StatusOr<int64_t> tables =
        SqliteQueryInt(Source(path), db, "SELECT count(*) FROM sqlite_schema");
    if (!tables.ok()) return tables.status();
    // Never build our tables into somebody else's database.
    if (*tables > 0)
      return absl::FailedPreconditionError(absl::StrCat(
          "store: ", path, " is an SQLite database but not a sockwatch collector store"));
  }
  if (version > kSqliteStoreSchemaVersion)
    return absl::FailedPreconditionError(
        absl::StrCat("store: ", path, " has schema version ", version, ", newer than the version ",
                     kSqliteStoreSchemaVersion,
                     " this sockwatch understands; upgrade sockwatch or move the file aside"));
  return version;
}

// Brings the file to kSqliteStoreSchemaVersion. Checks again under the write
// lock: another collector may have created the file meanwhile.
absl::Status Migrate(const std::string& path, sqlite3* db) {
  SqliteTransaction tx(Source(path), db);
  if (absl::Status s = tx.Begin(); !s.ok()) return s;
  absl::StatusOr<int64_t> version = ReadVersion(path, db);
  if (!version.ok()) return version.status();
  if (*version == kSqliteStoreSchemaVersion) return absl::OkStatus();
  for (int64_t v = *version; v < kSqliteStoreSchemaVersion; ++v) {
    const std::string what = absl::StrCat("upgrade schema to version ", v + 1);
    if (absl::Status s = SqliteExec(Source(path), db, kMigrations[v], what); !s.ok()) return s;
  }
  const std::string set_version =
      absl::StrCat("UPDATE schema_version SET version = ", kSqliteStoreSchemaVersion);
  if (absl::Status s = SqliteExec(Source(path), db, set_version.c_str()); !s.ok()) return s;
  return tx.Commit();
}

// NOMUTEX: each connection is used under its own absl::Mutex, so SQLite's
// per-call locking would only add cost to every bind and step.
absl::StatusOr<SqliteDb> OpenConnection(const SqliteStoreOptions& options, int flags) {
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(options.path.c_str(), &raw, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  SqliteDb db(raw);
  if (rc != SQLITE_OK) return SqliteError(Source(options.path), db.get(), rc, "open");
  sqlite3_extended_result_codes(db.get(), 1);
  sqlite3_busy_timeout(db.get(), static_cast<int>(std::clamp<int64_t>(
                                     absl::ToInt64Milliseconds(options.busy_timeout), 0,
                                     std::numeric_limits<int>::max())));
  // SQLite opens lazily: read the header now, so a file that is not a
  // database fails here with its name rather than at the first write.
  const int probe =
      sqlite3_exec(db.get(), "SELECT count(*) FROM sqlite_schema", nullptr, nullptr, nullptr);
  if (probe != SQLITE_OK) return SqliteError(Source(options.path), db.get(), probe, "open");
  return db;
}

absl::Status CheckPath(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("store: empty SQLite path");
  // An in-memory database would vanish with the process, and acknowledged
  // data with it.
  if (path == ":memory:")
    return absl::InvalidArgumentError("store: \":memory:\" is not durable; name a file");
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (parent.empty()) parent = ".";
  std::error_code ec;
  const std::filesystem::file_status st = std::filesystem::status(parent, ec);
  if (!std::filesystem::exists(st))
    return absl::NotFoundError(absl::StrCat("store: directory ", parent.string(), " of ", path,
                                            " does not exist; create it first"));
  if (!std::filesystem::is_directory(st))
    return absl::FailedPreconditionError(
        absl::StrCat("store: ", parent.string(), " (parent of ", path, ") is not a directory"));
  return absl::OkStatus();
}

// Length of the leading host_id / agent_instance / seq fields of a serialized
// Envelope. Protobuf writes known fields in field-number order, so these come
// first; should one appear later it is merely kept, and reads overwrite it
// from the key anyway.
size_t KeyFieldsPrefix(const std::string& blob) {
  namespace pb = google::protobuf;
  pb::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(blob.data()),
                              static_cast<int>(blob.size()));
  size_t prefix = 0;
  for (;;) {
    const uint32_t tag = in.ReadTag();
    const int field = pb::internal::WireFormatLite::GetTagFieldNumber(tag);
    if (tag == 0 || field < v1::Envelope::kHostIdFieldNumber ||
        field > v1::Envelope::kSeqFieldNumber || !pb::internal::WireFormatLite::SkipField(&in, tag))
      return prefix;
    prefix = static_cast<size_t>(in.CurrentPosition());
  }
}

int64_t UnixNanos(const google::protobuf::Timestamp& t) {
  // Saturates instead of overflowing on absurd timestamps.
  return absl::ToUnixNanos(absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos()));
}

// Empty text is stored as NULL ("not applicable to this kind").
void BindText(sqlite3_stmt* st, int i, absl::string_view s) {
  if (s.empty()) {
    sqlite3_bind_null(st, i);
  } else {
    sqlite3_bind_text(st, i, s.data(), static_cast<int>(s.size()), SQLITE_STATIC);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(const SqliteStoreOptions& options) {
  if (absl::Status s = CheckPath(options.path); !s.ok()) return s;
  absl::StatusOr<SqliteDb> writer =
      OpenConnection(options, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  if (!writer.ok()) return writer.status();
  sqlite3* db = writer->get();
  const std::string& path = options.path;
  // Refuse a foreign or newer file before any pragma below changes it.
  if (absl::StatusOr<int64_t> v = ReadVersion(path, db); !v.ok()) return v.status();
  // Before the first table of a new file; a no-op on an existing one. Rows
  // are appended and read in runs: big pages mean fewer b-tree splits, WAL
  // frames and syscalls per row (raw inserts on the 2-core dev VM: 8 KiB
  // ~160k rows/s, 32 KiB ~250k rows/s).
  if (absl::Status s = SqliteExec(Source(path), db, "PRAGMA page_size = 32768"); !s.ok()) return s;
  absl::StatusOr<SqliteStmt> mode = SqlitePrepare(Source(path), db, "PRAGMA journal_mode = WAL");
  if (!mode.ok()) return mode.status();
  if (int rc = sqlite3_step(mode->get()); rc != SQLITE_ROW)
    return SqliteError(Source(path), db, rc, "PRAGMA journal_mode = WAL");
  const auto* got = reinterpret_cast<const char*>(sqlite3_column_text(mode->get(), 0));
  if (got == nullptr || absl::AsciiStrToLower(got) != "wal")
    return absl::FailedPreconditionError(
        absl::StrCat("store: ", path, ": cannot use WAL (journal_mode=", got ? got : "?", ")"));
  mode->reset();
  // FULL, not NORMAL: an agent deletes its spooled copy once we acknowledge,
  // and we acknowledge when Write returns, so a commit must survive a power
  // cut. In WAL mode that is one fsync of the WAL per commit (per Write).
  // Checkpoints (copy into the database, fsync it) every 64 MiB of WAL;
  // journal_size_limit shrinks the WAL back to that after a burst. A small
  // cache: appends touch only the tail pages, and a big cache only grows
  // cold (4-64 MiB measured: smaller was faster; 8 MiB holds the dirty pages
  // of a 5000-envelope Write).
  if (absl::Status s =
          SqliteExec(Source(path), db,
                     "PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 2048; "
                     "PRAGMA journal_size_limit = 67108864; PRAGMA cache_size = -8192");
      !s.ok())
    return s;
  if (absl::Status s = Migrate(path, db); !s.ok()) return s;

  absl::StatusOr<SqliteDb> reader = OpenConnection(options, SQLITE_OPEN_READWRITE);
  if (!reader.ok()) return reader.status();
  // The reader never writes: make a bug that tries fail instead of racing the writer.
  if (absl::Status s = SqliteExec(Source(path), reader->get(),
                                  "PRAGMA query_only = ON; PRAGMA cache_size = -16384");
      !s.ok())
    return s;
  std::unique_ptr<SqliteStore> store(
      new SqliteStore(options, std::move(*writer), std::move(*reader)));
  if (absl::Status s = store->PrepareWriter(); !s.ok()) return s;
  return store;
}

SqliteStore::SqliteStore(SqliteStoreOptions options, SqliteDb writer, SqliteDb reader)
    : options_(std::move(options)), writer_(std::move(writer)), reader_(std::move(reader)) {}

SqliteStore::~SqliteStore() = default;

absl::Status SqliteStore::PrepareWriter() {
  absl::MutexLock lock(&write_mu_);
  const std::string insert_one = InsertEventSql(1);
  const std::string insert_chunk = InsertEventSql(kChunkRows);
  struct {
    SqliteStmt* stmt;
    const char* sql;
  } const statements[] = {
      {&insert_event_, insert_one.c_str()},
      {&insert_chunk_, insert_chunk.c_str()},
      {&insert_rare_,
       "INSERT INTO rare_events(kind, stream, seq, time_ns) VALUES (?1, ?2, ?3, ?4)"},
      {&select_stream_, "SELECT id FROM streams WHERE host_id = ?1 AND agent_instance = ?2"},
      {&insert_stream_, "INSERT INTO streams(host_id, agent_instance) VALUES (?1, ?2)"},
      {&upsert_host_,
       "INSERT INTO hosts(host_id, hostname, kernel_release, agent_version, first_seen_ns, "
       "last_seen_ns, hello) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6) "
       "ON CONFLICT(host_id) DO UPDATE SET hostname = excluded.hostname, "
       "kernel_release = excluded.kernel_release, agent_version = excluded.agent_version, "
       "last_seen_ns = excluded.last_seen_ns, hello = excluded.hello"},
      {&upsert_fact_,
       "INSERT INTO facts(exe, direction, protocol, port, host_id, sha256, remote_ip, first_ns, "
       "last_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO UPDATE SET "
       "first_ns = min(first_ns, excluded.first_ns), last_ns = max(last_ns, excluded.last_ns)"},
      {&insert_triage_,
       "INSERT INTO triage(alert_id, status, by, note, time_ns) VALUES (?1, ?2, ?3, ?4, ?5)"},
  };
  for (const auto& [stmt, sql] : statements) {
    absl::StatusOr<SqliteStmt> s = SqlitePrepare(Source(options_.path), writer_.get(), sql, true);
    if (!s.ok()) return s.status();
    *stmt = std::move(*s);
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> SqliteStore::StreamIdLocked(const v1::Envelope& env) {
  const std::string& host = env.host_id();
  const std::string& instance = env.agent_instance();
  const auto host_len = static_cast<uint32_t>(host.size());
  key_buf_.assign(reinterpret_cast<const char*>(&host_len), sizeof(host_len));
  key_buf_.append(host).append(instance);
  if (auto it = streams_.find(key_buf_); it != streams_.end()) return it->second;
  for (const auto& [key, id] : pending_streams_)
    if (key == key_buf_) return id;

  sqlite3* db = writer_.get();
  sqlite3_stmt* sel = select_stream_.get();
  sqlite3_bind_text(sel, 1, host.data(), static_cast<int>(host.size()), SQLITE_STATIC);
  sqlite3_bind_text(sel, 2, instance.data(), static_cast<int>(instance.size()), SQLITE_STATIC);
  int rc = sqlite3_step(sel);
  const int64_t found = rc == SQLITE_ROW ? sqlite3_column_int64(sel, 0) : 0;
  sqlite3_reset(sel);
  if (rc == SQLITE_ROW) {
    // Committed before this transaction (ours are in pending_streams_).
    streams_.emplace(key_buf_, found);
    return found;
  }
  if (rc != SQLITE_DONE) return SqliteError(Source(options_.path), db, rc, "look up stream");
  sqlite3_stmt* ins = insert_stream_.get();
  sqlite3_bind_text(ins, 1, host.data(), static_cast<int>(host.size()), SQLITE_STATIC);
  sqlite3_bind_text(ins, 2, instance.data(), static_cast<int>(instance.size()), SQLITE_STATIC);
  rc = sqlite3_step(ins);
  sqlite3_reset(ins);
  if (rc != SQLITE_DONE) return SqliteError(Source(options_.path), db, rc, "add stream");
  const int64_t id = sqlite3_last_insert_rowid(db);
  pending_streams_.emplace_back(key_buf_, id);
  return id;
}

absl::StatusOr<WriteResult> SqliteStore::Write(absl::Span<const v1::Envelope* const> envelopes) {
  WriteResult result;
  if (envelopes.empty()) return result;
  absl::MutexLock lock(&write_mu_);
  pending_streams_.clear();
  absl::Status s = WriteLocked(envelopes, result);
  if (s.ok()) {
    for (auto& [key, id] : pending_streams_) streams_.emplace(std::move(key), id);
  }
  pending_streams_.clear();
  if (!s.ok()) return s;
  return result;
}

absl::Status SqliteStore::EventError(int rc, const Row& first, const Row& last) {
  std::string what =
      absl::StrCat("store event host_id=", first.env->host_id(),
                   " agent_instance=", first.env->agent_instance(), " seq=", first.env->seq());
  if (&first != &last)
    absl::StrAppend(&what, " .. host_id=", last.env->host_id(),
                    " agent_instance=", last.env->agent_instance(), " seq=", last.env->seq());
  return SqliteError(Source(options_.path), writer_.get(), rc, what);
}

absl::Status SqliteStore::PrepareRow(const v1::Envelope& env, Row& row) {
  absl::StatusOr<int64_t> stream = StreamIdLocked(env);
  if (!stream.ok()) return stream.status();
  row.env = &env;
  row.stream = *stream;
  row.blob.resize(env.ByteSizeLong());
  env.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(row.blob.data()));
  row.skip = KeyFieldsPrefix(row.blob);
  return absl::OkStatus();
}

void SqliteStore::BindRow(sqlite3_stmt* st, int first, const Row& row) {
  const v1::Envelope& env = *row.env;
  const absl::string_view kind = EnvelopeKind(env);
  const EventColumns d = ColumnsOf(env);
  auto i = [first](int column) { return first + column - 1; };
  sqlite3_bind_int64(st, i(1), row.stream);
  // seq is a uint64; SQLite keeps its bits in a signed integer.
  sqlite3_bind_int64(st, i(2), static_cast<int64_t>(env.seq()));
  sqlite3_bind_int64(st, i(3), UnixNanos(env.time()));
  sqlite3_bind_text(st, i(4), kind.data(), static_cast<int>(kind.size()), SQLITE_STATIC);
  if (d.process != nullptr) {
    sqlite3_bind_int64(st, i(5), d.process->pid());
    BindText(st, i(6), d.process->exe());
  } else {
    sqlite3_bind_null(st, i(5));
    sqlite3_bind_null(st, i(6));
  }
  BindText(st, i(7), d.sha256);
  if (d.network != nullptr) {
    BindText(st, i(8), d.network->remote_ip());
    sqlite3_bind_int64(st, i(9), d.network->remote_port());
    sqlite3_bind_int64(st, i(10), d.network->protocol());
    sqlite3_bind_int64(st, i(11), d.network->direction());
  } else {
    for (int c = 8; c <= 11; ++c) sqlite3_bind_null(st, i(c));
  }
  BindText(st, i(12), d.rule);
  BindText(st, i(13), d.container_id);
  sqlite3_bind_blob(st, i(14), row.blob.data() + row.skip,
                    static_cast<int>(row.blob.size() - row.skip), SQLITE_STATIC);
}

absl::StatusOr<bool> SqliteStore::InsertOne(const Row& row) {
  sqlite3* db = writer_.get();
  sqlite3_stmt* st = insert_event_.get();
  BindRow(st, 1, row);
  int rc = sqlite3_step(st);
  sqlite3_reset(st);  // release the borrowed buffers before they change
  if (rc != SQLITE_DONE) return EventError(rc, row, row);
  if (sqlite3_changes64(db) == 0) return false;
  const absl::string_view kind = EnvelopeKind(*row.env);
  if (IsRareKind(kind)) {
    sqlite3_stmt* rare = insert_rare_.get();
    sqlite3_bind_text(rare, 1, kind.data(), static_cast<int>(kind.size()), SQLITE_STATIC);
    sqlite3_bind_int64(rare, 2, row.stream);
    sqlite3_bind_int64(rare, 3, static_cast<int64_t>(row.env->seq()));
    sqlite3_bind_int64(rare, 4, UnixNanos(row.env->time()));
    rc = sqlite3_step(rare);
    sqlite3_reset(rare);
    if (rc != SQLITE_DONE) return EventError(rc, row, row);
  }
  return true;
}

// Common events go kChunkRows to an INSERT: one statement run per chunk
// keeps the b-tree cursors open from row to row (measured: 25% fewer
// instructions per row than one INSERT each). Rare ones, and the tail, go
// one by one: a rare one needs to know whether it was new.
absl::Status SqliteStore::WriteLocked(absl::Span<const v1::Envelope* const> envelopes,
                                      WriteResult& result) {
  SqliteTransaction tx(Source(options_.path), writer_.get());
  if (absl::Status s = tx.Begin(); !s.ok()) return s;
  WriteResult counts;
  size_t pending = 0;
  for (const v1::Envelope* env : envelopes) {
    if (env == nullptr) return absl::InvalidArgumentError("store: null envelope in Write");
    Row& row = chunk_[pending];
    if (absl::Status s = PrepareRow(*env, row); !s.ok()) return s;
    if (IsRareKind(EnvelopeKind(*env))) {
      absl::StatusOr<bool> stored = InsertOne(row);
      if (!stored.ok()) return stored.status();
      ++(*stored ? counts.stored : counts.duplicates);
      continue;
    }
    BindRow(insert_chunk_.get(), static_cast<int>(pending) * kEventColumns + 1, row);
    if (++pending < kChunkRows) continue;
    const int rc = sqlite3_step(insert_chunk_.get());
    sqlite3_reset(insert_chunk_.get());
    if (rc != SQLITE_DONE) return EventError(rc, chunk_[0], chunk_[kChunkRows - 1]);
    const auto stored = static_cast<uint64_t>(sqlite3_changes64(writer_.get()));
    counts.stored += stored;
    counts.duplicates += kChunkRows - stored;
    pending = 0;
  }
  for (size_t i = 0; i < pending; ++i) {
    absl::StatusOr<bool> stored = InsertOne(chunk_[i]);
    if (!stored.ok()) return stored.status();
    ++(*stored ? counts.stored : counts.duplicates);
  }
  // Replays add their facts again: the upsert leaves them as they were.
  if (absl::Status s = WriteFactsLocked(envelopes); !s.ok()) return s;
  if (absl::Status s = tx.Commit(); !s.ok()) return s;
  result = counts;
  return absl::OkStatus();
}

absl::Status SqliteStore::UpsertHost(const v1::Hello& hello, absl::Time now) {
  const v1::Hello* one[] = {&hello};
  return UpsertHosts(one, now);
}

absl::Status SqliteStore::UpsertHosts(absl::Span<const v1::Hello* const> hellos, absl::Time now) {
  if (absl::Status s = CheckHellos(hellos); !s.ok()) return s;
  if (hellos.empty()) return absl::OkStatus();
  absl::MutexLock lock(&write_mu_);
  SqliteTransaction tx(Source(options_.path), writer_.get());
  if (absl::Status s = tx.Begin(); !s.ok()) return s;
  for (const v1::Hello* h : hellos)
    if (absl::Status s = UpsertHostLocked(*h, now); !s.ok()) return s;
  return tx.Commit();
}

absl::Status SqliteStore::UpsertHostLocked(const v1::Hello& hello, absl::Time now) {
  std::string blob;
  if (!hello.SerializeToString(&blob))
    return absl::InternalError(absl::StrCat("store: cannot serialize Hello of ", hello.host_id()));
  sqlite3_stmt* st = upsert_host_.get();
  auto text = [st](int i, const std::string& s) {
    sqlite3_bind_text(st, i, s.data(), static_cast<int>(s.size()), SQLITE_STATIC);
  };
  text(1, hello.host_id());
  text(2, hello.hostname());
  text(3, hello.kernel_release());
  text(4, hello.agent_version());
  sqlite3_bind_int64(st, 5, absl::ToUnixNanos(now));
  sqlite3_bind_blob(st, 6, blob.data(), static_cast<int>(blob.size()), SQLITE_STATIC);
  const int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE)
    return SqliteError(Source(options_.path), writer_.get(), rc,
                       absl::StrCat("upsert host ", hello.host_id()));
  return absl::OkStatus();
}

}  // namespace sockwatch
