// Text hygiene for what the kernel hands us: argv and paths are arbitrary
// bytes, and none of them may reach a terminal or a proto string unmended.
#ifndef SOCKWATCH_AGENT_TEXT_H_
#define SOCKWATCH_AGENT_TEXT_H_

#include <string>

#include "absl/strings/string_view.h"

namespace sockwatch {

bool IsValidUtf8(absl::string_view s);
// Invalid UTF-8 sequences become U+FFFD.
std::string ValidUtf8(absl::string_view s);
// For people: control characters (C0, DEL, C1) and invalid UTF-8 become
// visible escapes (\n, \t, \x1b, \\), so output can never drive a terminal.
std::string EscapeForTerminal(absl::string_view s);

}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_TEXT_H_
