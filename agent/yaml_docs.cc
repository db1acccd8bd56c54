#include "agent/yaml_docs.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"

namespace sockwatch {

int SecondYamlDocumentLine(absl::string_view yaml) {
  bool content = false, ended = false;
  int line = 0;
  for (absl::string_view l : absl::StrSplit(yaml, '\n')) {
    ++line;
    auto marker = [&](absl::string_view m) {
      return absl::StartsWith(l, m) && (l.size() == 3 || absl::ascii_isspace(l[3]));
    };
    if (marker("---")) {
      if (content || ended) return line;
    } else if (marker("...")) {
      ended = true;
    } else if (const absl::string_view t = absl::StripLeadingAsciiWhitespace(l);
               !t.empty() && t[0] != '#' && t[0] != '%') {
      if (ended) return line;
      content = true;
    }
  }
  return 0;
}

}  // namespace sockwatch
