// RAII owners for SQLite handles, shared by every store in the agent.
#ifndef SOCKWATCH_AGENT_SQLITE_UTIL_H_
#define SOCKWATCH_AGENT_SQLITE_UTIL_H_

#include <sqlite3.h>

#include <memory>

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

}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_SQLITE_UTIL_H_
