#include "agent/text.h"

#include <algorithm>
#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"

namespace sockwatch {
namespace {

// Length of the valid UTF-8 sequence at s[i], or 0 if there is none.
size_t Utf8SeqLen(absl::string_view s, size_t i) {
  const auto c = static_cast<uint8_t>(s[i]);
  if (c < 0x80) return 1;
  size_t len;
  uint32_t cp;
  if ((c & 0xE0) == 0xC0) {
    len = 2, cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    len = 3, cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    len = 4, cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    const auto cc = static_cast<uint8_t>(s[i + k]);
    if ((cc & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3F);
  }
  // Overlong forms, surrogates and values past U+10FFFF are invalid.
  static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

}  // namespace

bool IsValidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size() && static_cast<uint8_t>(s[i]) < 0x80) ++i;  // ASCII fast path
  while (i < s.size()) {
    const size_t n = Utf8SeqLen(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string ValidUtf8(absl::string_view s) {
  if (IsValidUtf8(s)) return std::string(s);
  std::string out;
  out.reserve(s.size() + 8);
  for (size_t i = 0; i < s.size();) {
    const size_t n = Utf8SeqLen(s, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
    } else {
      out.append(s.data() + i, n);
      i += n;
    }
  }
  return out;
}

std::string EscapeForTerminal(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t n = Utf8SeqLen(s, i);
    const auto c = static_cast<uint8_t>(s[i]);
    if (n == 0) {
      absl::StrAppendFormat(&out, "\\x%02x", c);
      ++i;
      continue;
    }
    if (n == 1) {
      switch (c) {
        case '\n': out += "\\n"; break;
        case '\t': out += "\\t"; break;
        case '\r': out += "\\r"; break;
        case '\\': out += "\\\\"; break;
        default:
          if (c < 0x20 || c == 0x7F)
            absl::StrAppendFormat(&out, "\\x%02x", c);
          else
            out += static_cast<char>(c);
      }
    } else if (n == 2 && c == 0xC2 && static_cast<uint8_t>(s[i + 1]) < 0xA0) {
      // C1 controls (U+0080..U+009F), e.g. the 8-bit CSI.
      absl::StrAppendFormat(&out, "\\u%04x", static_cast<uint8_t>(s[i + 1]));
    } else {
      out.append(s.data() + i, n);
    }
    i += n;
  }
  return out;
}

// absl::ParseDuration plus whole days in front ("7d", "1d12h"): responders
// think in days, Go-style durations stop at hours.
namespace {

absl::StatusOr<absl::Duration> ParseAgo(absl::string_view s) {
  absl::Duration d = absl::ZeroDuration();
  const size_t day = s.find('d');
  if (day != absl::string_view::npos) {
    int64_t days = 0;
    const absl::string_view num = s.substr(0, day);
    if (num.empty() || !std::all_of(num.begin(), num.end(), absl::ascii_isdigit) ||
        num.size() > 6 || !absl::SimpleAtoi(num, &days))
      return absl::InvalidArgumentError("bad day count");
    d = absl::Hours(24 * days);
    s.remove_prefix(day + 1);
    if (s.empty()) return d;
  }
  absl::Duration rest;
  if (!absl::ParseDuration(s, &rest) || rest < absl::ZeroDuration() ||
      rest == absl::InfiniteDuration())
    return absl::InvalidArgumentError("bad duration");
  return d + rest;
}

}  // namespace

absl::StatusOr<absl::Time> ParseWhen(absl::string_view flag, absl::string_view s, absl::Time now) {
  if (s == "now") return now;
  absl::Time t;
  std::string err;
  if (absl::ParseTime(absl::RFC3339_full, s, &t, &err)) return t;
  if (absl::ParseTime("%Y-%m-%d", s, absl::UTCTimeZone(), &t, &err)) return t;
  absl::StatusOr<absl::Duration> ago = ParseAgo(s);
  if (ago.ok()) return now - *ago;
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, "=", s, ": want a duration ago (30m, 2h, 7d) or an RFC 3339 time"));
}

}  // namespace sockwatch
