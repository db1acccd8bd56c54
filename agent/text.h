// Text hygiene for what the kernel hands us: argv and paths are arbitrary
// bytes, and none of them may reach a terminal or a proto string unmended.
#ifndef SOCKWATCH_AGENT_TEXT_H_
#define SOCKWATCH_AGENT_TEXT_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace sockwatch {

bool IsValidUtf8(absl::string_view s);
// Invalid UTF-8 sequences become U+FFFD.
std::string ValidUtf8(absl::string_view s);
// For people: control characters (C0, DEL, C1) and invalid UTF-8 become
// visible escapes (\n, \t, \x1b, \\), so output can never drive a terminal.
std::string EscapeForTerminal(absl::string_view s);

// A time given on a command line: "now", a duration ago (30m, 2h, 7d,
// 1d12h), an RFC 3339 time or a UTC date (2024-05-01). The error names
// --flag and the accepted forms.
absl::StatusOr<absl::Time> ParseWhen(absl::string_view flag, absl::string_view s, absl::Time now);

}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_TEXT_H_
