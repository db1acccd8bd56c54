// Table, CSV and JSON-lines primitives shared by the `sockwatch` CLI's
// writers (cli_format.cc, cli_fleet.cc). Not for other users.
#ifndef SOCKWATCH_COLLECTOR_CLI_TABLE_H_
#define SOCKWATCH_COLLECTOR_CLI_TABLE_H_

#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "collector/cli_format.h"
#include "google/protobuf/message.h"
#include "google/protobuf/timestamp.pb.h"

namespace sockwatch::cli_table {

using Row = std::vector<std::string>;

// Every cell is escaped once, when it is built (Esc); the writers never
// escape again (that would double the backslashes of the escapes).
struct Table {
  std::vector<std::string> header;  // upper case; also the CSV header
  std::vector<bool> cut;            // per column: may be cut in tables
  std::vector<Row> rows;
};

// Terminal control characters and invalid UTF-8 escaped.
std::string Esc(absl::string_view s);

// Rows of escaped cells as lines, columns two spaces apart, empty cells
// shown as `empty`; cells of `cut` columns longer than 60 columns cut.
std::vector<std::string> Align(const std::vector<Row>& rows, const std::vector<bool>& cut,
                               absl::string_view empty);

// A table (header even with no rows) or CSV (RFC 4180, LF line ends).
void WriteTable(const Table& t, OutputFormat format, std::ostream& out);

// One JSON object per line, proto field names; invalid UTF-8 as U+FFFD.
void WriteJsonLine(const google::protobuf::Message& m, std::ostream& out);

absl::Time ToTime(const google::protobuf::Timestamp& ts);
// "2026-11-29T22:20:15Z".
std::string Rfc3339(const google::protobuf::Timestamp& ts);

}  // namespace sockwatch::cli_table

#endif  // SOCKWATCH_COLLECTOR_CLI_TABLE_H_
