// What the write path (sqlite_store.cc) and the read path
// (sqlite_store_query.cc, sqlite_store_fleet.cc) of SqliteStore share. Not for other users.
#ifndef SOCKWATCH_COLLECTOR_SQLITE_STORE_INTERNAL_H_
#define SOCKWATCH_COLLECTOR_SQLITE_STORE_INTERNAL_H_

#include <sqlite3.h>

#include "absl/strings/string_view.h"
#include "agent/sqlite_util.h"

namespace sockwatch::sqlite_store_internal {

// Errors name the store and its file: "store: <path>: <what>: <SQLite's message>".
inline SqliteSource Source(absl::string_view path) { return {"store", path}; }

// Kinds that also get a rare_events row, so asking for them skips the rest.
inline bool IsRareKind(absl::string_view kind) {
  return kind == "alert" || kind == "loss" || kind == "coverage" || kind == "learning";
}

// Column i of the current row as text (empty for NULL).
inline absl::string_view ColumnText(sqlite3_stmt* st, int i) {
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(st, i));
  // After column_text, so the length is of the text form.
  return text ? absl::string_view(text, static_cast<size_t>(sqlite3_column_bytes(st, i)))
              : absl::string_view();
}

}  // namespace sockwatch::sqlite_store_internal

#endif  // SOCKWATCH_COLLECTOR_SQLITE_STORE_INTERNAL_H_
