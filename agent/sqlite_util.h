// RAII owners for SQLite handles and the Status helpers around them, shared
// by every SQLite store: the agent's (history, exceptions, baseline) and the
// collector's.
#ifndef SOCKWATCH_AGENT_SQLITE_UTIL_H_
#define SOCKWATCH_AGENT_SQLITE_UTIL_H_

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace sockwatch {

struct SqliteCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using SqliteDb = std::unique_ptr<sqlite3, SqliteCloser>;

struct SqliteFinalizer {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using SqliteStmt = std::unique_ptr<sqlite3_stmt, SqliteFinalizer>;

// Prepares sql on db; null (with sqlite3_errmsg(db) set) on failure.
inline SqliteStmt Prepare(sqlite3* db, const char* sql) {
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(db, sql, -1, &s, nullptr);
  return SqliteStmt(s);
}

// Who reports an SQLite error, for its message: "<module>: <path>: <what>:
// <SQLite's message>", or "<module>: <what>: ..." without a path. Borrows
// both strings: they must outlive every call given this.
struct SqliteSource {
  absl::string_view module;  // "store", "history"
  absl::string_view path;    // the file; empty when `what` names it already
};

// rc as a Status whose code tells the caller what it can do: retry
// (Unavailable), restore (DataLoss), fix permissions, free space.
inline absl::Status SqliteError(const SqliteSource& src, sqlite3* db, int rc,
                                absl::string_view what) {
  const char* detail = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  std::string msg = src.path.empty()
                        ? absl::StrCat(src.module, ": ", what, ": ", detail)
                        : absl::StrCat(src.module, ": ", src.path, ": ", what, ": ", detail);
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::UnavailableError(msg);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(msg);
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_CANTOPEN:
      return absl::PermissionDeniedError(msg);
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

// Runs sql (one or more statements, no results); `what` names it in an
// error, the SQL itself when empty.
inline absl::Status SqliteExec(const SqliteSource& src, sqlite3* db, const char* sql,
                               absl::string_view what = {}) {
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return SqliteError(src, db, rc, what.empty() ? sql : what);
  return absl::OkStatus();
}

// persistent: a statement kept for the life of the connection.
inline absl::StatusOr<SqliteStmt> SqlitePrepare(const SqliteSource& src, sqlite3* db,
                                                absl::string_view sql, bool persistent = false) {
  sqlite3_stmt* raw = nullptr;
  const int rc = sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()),
                                    persistent ? SQLITE_PREPARE_PERSISTENT : 0, &raw, nullptr);
  SqliteStmt stmt(raw);
  if (rc != SQLITE_OK) return SqliteError(src, db, rc, absl::StrCat("prepare ", sql));
  return stmt;
}

// Runs sql and leaves the statement on its first row; no row is an error.
inline absl::StatusOr<SqliteStmt> SqliteQueryRow(const SqliteSource& src, sqlite3* db,
                                                 absl::string_view sql) {
  absl::StatusOr<SqliteStmt> stmt = SqlitePrepare(src, db, sql);
  if (!stmt.ok()) return stmt.status();
  const int rc = sqlite3_step(stmt->get());
  if (rc == SQLITE_ROW) return stmt;
  if (rc == SQLITE_DONE)
    return absl::InternalError(absl::StrCat(src.module, ": no row from ", sql));
  return SqliteError(src, db, rc, sql);
}

// The first column of the first row of sql.
inline absl::StatusOr<int64_t> SqliteQueryInt(const SqliteSource& src, sqlite3* db,
                                              absl::string_view sql) {
  absl::StatusOr<SqliteStmt> row = SqliteQueryRow(src, db, sql);
  if (!row.ok()) return row.status();
  return sqlite3_column_int64(row->get(), 0);
}

// Rolls back unless committed, so every early return leaves the file as it was.
class SqliteTransaction {
 public:
  SqliteTransaction(const SqliteSource& src, sqlite3* db) : src_(src), db_(db) {}
  ~SqliteTransaction() {
    // Some errors (SQLITE_FULL, IOERR, BUSY on commit) already rolled back.
    if (open_ && !sqlite3_get_autocommit(db_))
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  SqliteTransaction(const SqliteTransaction&) = delete;
  SqliteTransaction& operator=(const SqliteTransaction&) = delete;

  // IMMEDIATE takes the write lock up front: waiting happens here, under the
  // busy timeout, rather than as a failed upgrade halfway through. A reader
  // passes false: a plain BEGIN, for one consistent snapshot.
  absl::Status Begin(bool immediate = true) {
    absl::Status s = SqliteExec(src_, db_, immediate ? "BEGIN IMMEDIATE" : "BEGIN");
    open_ = s.ok();
    return s;
  }
  absl::Status Commit() {
    absl::Status s = SqliteExec(src_, db_, "COMMIT");
    if (s.ok()) open_ = false;
    return s;
  }

 private:
  const SqliteSource src_;
  sqlite3* const db_;
  bool open_ = false;
};

}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_SQLITE_UTIL_H_
