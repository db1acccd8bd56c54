// The table, CSV and JSON-lines primitives of the `sockwatch` CLI output.
#include "collector/cli_table.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "agent/text.h"
#include "google/protobuf/util/json_util.h"

namespace sockwatch::cli_table {

namespace {

// Table cells longer than this (in columns) are cut and end in "…", so one
// long argv or summary cannot push every other row off the screen. CSV and
// JSON are never cut: scripts get the whole value.
constexpr size_t kMaxCellWidth = 60;

// Display width: one column per UTF-8 lead byte. Wide (CJK) characters are
// counted as one; good enough for the paths and commands we show.
size_t Width(absl::string_view s) {
  size_t w = 0;
  for (char c : s) w += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
  return w;
}

// Cuts at a character boundary; escaped text is valid UTF-8.
std::string Cut(absl::string_view s, size_t max) {
  if (Width(s) <= max) return std::string(s);
  size_t cols = 0;
  size_t i = 0;
  for (; i < s.size(); ++i) {
    if ((static_cast<uint8_t>(s[i]) & 0xC0) != 0x80 && cols++ == max - 1) break;
  }
  return absl::StrCat(s.substr(0, i), "…");
}

// RFC 4180 quoting. Lines end in LF rather than CRLF, as Unix tools expect.
std::string CsvField(absl::string_view s) {
  if (s.find_first_of(",\"\r\n") == absl::string_view::npos) return std::string(s);
  std::string q = "\"";
  for (char c : s) {
    if (c == '"') q += '"';
    q += c;
  }
  return q + "\"";
}

void WriteCsvRow(const Row& row, std::ostream& out) {
  for (size_t c = 0; c < row.size(); ++c) out << (c ? "," : "") << CsvField(row[c]);
  out << '\n';
}

// The JSON printer drops invalid UTF-8 bytes with only a log line; show
// them as U+FFFD instead, as the agent does, so evidence is not lost silently.
void RepairUtf8(google::protobuf::Message* m) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::Reflection* r = m->GetReflection();
  std::vector<const FieldDescriptor*> fields;
  r->ListFields(*m, &fields);
  for (const FieldDescriptor* f : fields) {
    const int n = f->is_repeated() ? r->FieldSize(*m, f) : 1;
    for (int i = 0; i < n; ++i) {
      if (f->type() == FieldDescriptor::TYPE_STRING) {
        std::string s = f->is_repeated() ? r->GetRepeatedString(*m, f, i) : r->GetString(*m, f);
        if (IsValidUtf8(s)) continue;
        f->is_repeated() ? r->SetRepeatedString(m, f, i, ValidUtf8(s))
                         : r->SetString(m, f, ValidUtf8(s));
      } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
        RepairUtf8(f->is_repeated() ? r->MutableRepeatedMessage(m, f, i) : r->MutableMessage(m, f));
      }
    }
  }
}

}  // namespace

// Rows of escaped cells as lines, columns two spaces apart, empty cells
// shown as `empty`. No trailing padding after the last non-empty cell.
std::vector<std::string> Align(const std::vector<Row>& rows, const std::vector<bool>& cut,
                               absl::string_view empty) {
  std::vector<Row> shown = rows;
  std::vector<size_t> widths(cut.size(), 0);
  for (Row& row : shown) {
    for (size_t c = 0; c < row.size(); ++c) {
      if (row[c].empty()) row[c] = std::string(empty);
      if (cut[c]) row[c] = Cut(row[c], kMaxCellWidth);
      widths[c] = std::max(widths[c], Width(row[c]));
    }
  }
  std::vector<std::string> lines;
  for (const Row& row : shown) {
    size_t last = 0;
    for (size_t c = 0; c < row.size(); ++c) {
      if (!row[c].empty()) last = c;
    }
    std::string& line = lines.emplace_back();
    for (size_t c = 0; c <= last; ++c) {
      line += row[c];
      if (c < last) line.append(widths[c] - Width(row[c]) + 2, ' ');
    }
  }
  return lines;
}

std::string Esc(absl::string_view s) { return EscapeForTerminal(s); }

// Tables always print their header, even with no rows, so an empty result
// is told apart from a failure. CSV leaves empty values empty.
void WriteTable(const Table& t, OutputFormat format, std::ostream& out) {
  if (format == OutputFormat::kCsv) {
    WriteCsvRow(t.header, out);
    for (const Row& row : t.rows) WriteCsvRow(row, out);
    return;
  }
  std::vector<Row> all = {t.header};
  all.insert(all.end(), t.rows.begin(), t.rows.end());
  for (const std::string& line : Align(all, t.cut, "-")) out << line << '\n';
}

// One JSON object per line (the printer escapes control characters); a
// record it cannot encode becomes an error line, so lines still count records.
void WriteJsonLine(const google::protobuf::Message& m, std::ostream& out) {
  std::unique_ptr<google::protobuf::Message> copy(m.New());
  copy->CopyFrom(m);
  RepairUtf8(copy.get());
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = false;
  std::string json;
  if (google::protobuf::util::MessageToJsonString(*copy, &json, options).ok()) {
    out << json << '\n';
  } else {
    out << R"({"error":"record cannot be encoded as JSON"})" << '\n';
  }
}

absl::Time ToTime(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

std::string Rfc3339(const google::protobuf::Timestamp& ts) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", ToTime(ts), absl::UTCTimeZone());
}

}  // namespace sockwatch::cli_table
