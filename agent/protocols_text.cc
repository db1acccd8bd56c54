// The line-based protocols: HTTP/1, SSH's identification line, SMTP.
//
// Line ends: a bare LF is accepted where CRLF is the rule, as the receivers
// do (RFC 9112 2.2 lets HTTP recipients accept it, OpenSSH and SMTP servers
// accept it): flagging it would only flag odd clients, not broken syntax.
// A bare CR inside a line is a control character and is flagged.
#include <algorithm>
#include <array>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/protocols_internal.h"

namespace sockwatch::protocols_internal {
namespace {

// Below this, a sample that stops mid-line is simply short (a client that
// typed "GET" and paused), not judged unterminated.
constexpr size_t kMinJudgedLine = 8;
constexpr size_t kMaxSshLine = 255;   // RFC 4253 4.2, CR LF included
constexpr size_t kMaxSmtpLine = 512;  // RFC 5321 4.5.3.1.4-5, CRLF included

struct Line {
  absl::string_view text;  // without the line end
  bool complete = false;   // a line end was seen
  size_t next = 0;         // offset after the line end
};

Line FirstLine(absl::string_view s, size_t from = 0) {
  const size_t lf = s.find('\n', from);
  if (lf == absl::string_view::npos) {
    // A CR as the last byte may be the first half of a CRLF the sample cut.
    absl::string_view t = s.substr(from);
    if (!t.empty() && t.back() == '\r') t.remove_suffix(1);
    return {t, false, s.size()};
  }
  absl::string_view t = s.substr(from, lf - from);
  if (!t.empty() && t.back() == '\r') t.remove_suffix(1);
  return {t, true, lf + 1};
}

bool IsCtl(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u < 0x20 || u == 0x7f;
}

// The first control character (HTAB allowed if `tab_ok`), or npos.
size_t FindCtl(absl::string_view s, bool tab_ok) {
  for (size_t i = 0; i < s.size(); ++i) {
    if (IsCtl(s[i]) && !(tab_ok && s[i] == '\t')) return i;
  }
  return absl::string_view::npos;
}

std::string CtlReason(absl::string_view where, char c) {
  return absl::StrCat("control character ", Hex(static_cast<unsigned char>(c), 2), " in the ",
                      where);
}

// `got` is all of a field when `whole`, else a prefix of it (the sample
// ended): true if it is, or may still become, one of `allowed`.
template <size_t N>
bool OneOf(absl::string_view got, bool whole, const std::array<absl::string_view, N>& allowed) {
  return std::any_of(allowed.begin(), allowed.end(), [&](absl::string_view a) {
    return whole ? got == a : absl::StartsWith(a, got);
  });
}

bool Unterminated(const Line& line, absl::string_view s, bool truncated) {
  return !line.complete && !truncated && s.size() >= kMinJudgedLine;
}

// ---------------------------------------------------------------- HTTP/1

constexpr std::array<absl::string_view, 9> kMethods = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"};
constexpr std::array<absl::string_view, 2> kHttpVersions = {"HTTP/1.0", "HTTP/1.1"};
// The HTTP/2 prior-knowledge preface (RFC 9113 3.4) starts like a request.
constexpr absl::string_view kH2Preface = "PRI * HTTP/2.0\r\n";

// "" when the request line is fine so far; else what is wrong.
std::string CheckRequestLine(absl::string_view s, bool truncated) {
  const Line line = FirstLine(s);
  absl::string_view rest = line.text;
  rest.remove_prefix(std::min(rest.find(' ') + 1, rest.size()));  // the method and its SP
  const size_t sp = rest.find(' ');
  const absl::string_view target = rest.substr(0, sp);
  if (const size_t c = FindCtl(target, false); c != absl::string_view::npos)
    return CtlReason("request target", target[c]);
  if (sp == absl::string_view::npos) {
    if (line.complete) return "request line has no HTTP version";
    return Unterminated(line, s, truncated) ? "request line not terminated by CRLF" : "";
  }
  if (target.empty()) return "empty request target";
  const absl::string_view version = rest.substr(sp + 1);
  if (!OneOf(version, line.complete, kHttpVersions)) {
    const size_t last = version.rfind(' ');
    if (last != absl::string_view::npos && OneOf(version.substr(last + 1), true, kHttpVersions))
      return "space in the request target";
    return absl::StrCat("HTTP version '", Escape(version), "'");
  }
  return Unterminated(line, s, truncated) ? "request line not terminated by CRLF" : "";
}

std::string CheckStatusLine(absl::string_view s, bool truncated) {
  const Line line = FirstLine(s);
  const absl::string_view t = line.text;
  const absl::string_view version = t.substr(0, std::min(t.find(' '), t.size()));
  const bool version_whole = version.size() < t.size() || line.complete;
  if (!OneOf(version, version_whole, kHttpVersions))
    return absl::StrCat("HTTP version '", Escape(version), "'");
  absl::string_view rest = t.substr(version.size());
  if (!rest.empty()) rest.remove_prefix(1);  // the SP
  const absl::string_view code = rest.substr(0, 3);
  const bool code_digits = std::all_of(code.begin(), code.end(), absl::ascii_isdigit);
  if (!code_digits || (code.size() < 3 && line.complete) ||
      (version_whole && rest.empty() && line.complete)) {
    return absl::StrCat("HTTP status code '", Escape(code), "'");
  }
  const absl::string_view after = rest.substr(code.size());
  // RFC 9112 4: SP reason-phrase, where the phrase may be empty; "200" with
  // no SP at all is common enough from small servers to let pass.
  if (!after.empty() && after[0] != ' ') return "no space after the HTTP status code";
  if (const size_t c = FindCtl(after, true); c != absl::string_view::npos)
    return CtlReason("HTTP reason phrase", after[c]);
  return Unterminated(line, s, truncated) ? "status line not terminated by CRLF" : "";
}

// An uppercase token that is not a method we know: HTTP only when the whole
// request line is there and valid (WebDAV's PROPFIND, ...).
bool IsOtherMethodRequest(absl::string_view s) {
  const size_t sp = s.find(' ');
  if (sp == 0 || sp == absl::string_view::npos || sp > 20) return false;
  for (size_t i = 0; i < sp; ++i) {
    if (!absl::ascii_isupper(s[i]) && s[i] != '-' && s[i] != '_') return false;
  }
  return FirstLine(s).complete && CheckRequestLine(s, false).empty();
}

}  // namespace

Verdict ClassifyHttp(Bytes bytes, bool truncated) {
  const absl::string_view s = AsText(bytes);
  if (absl::StartsWith(s, "HTTP/")) {
    std::string why = CheckStatusLine(s, truncated);
    return why.empty() ? Ok(Proto::kHttp) : Bad(Proto::kHttp, std::move(why));
  }
  if (absl::StartsWith(s, kH2Preface)) return Ok(Proto::kHttp);
  for (absl::string_view m : kMethods) {
    if (s.size() > m.size() && absl::StartsWith(s, m) && s[m.size()] == ' ') {
      std::string why = CheckRequestLine(s, truncated);
      return why.empty() ? Ok(Proto::kHttp) : Bad(Proto::kHttp, std::move(why));
    }
  }
  return IsOtherMethodRequest(s) ? Ok(Proto::kHttp) : Verdict{};
}

// ---------------------------------------------------------------- SSH

namespace {

constexpr std::array<absl::string_view, 2> kSshVersions = {"2.0", "1.99"};
constexpr uint32_t kMaxSshPacket = 256 * 1024;  // OpenSSH's PACKET_MAX_SIZE

std::string CheckSshBanner(absl::string_view s, bool truncated, size_t* end) {
  const Line line = FirstLine(s);
  *end = line.complete ? line.next : s.size();
  if (line.text.size() + 2 > kMaxSshLine && (line.complete || line.text.size() >= kMaxSshLine))
    return "SSH banner longer than 255 bytes";
  if (const size_t c = FindCtl(line.text, false); c != absl::string_view::npos)
    return CtlReason("SSH banner", line.text[c]);
  absl::string_view rest = line.text.substr(4);  // "SSH-"
  const size_t dash = rest.find('-');
  const absl::string_view proto = rest.substr(0, dash);
  if (!OneOf(proto, dash != absl::string_view::npos || line.complete, kSshVersions))
    return absl::StrCat("SSH protocol version '", Escape(proto), "'");
  if (dash == absl::string_view::npos) {
    return Unterminated(line, s, truncated) ? "SSH banner not terminated by CRLF" : "";
  }
  rest.remove_prefix(dash + 1);
  const absl::string_view software = rest.substr(0, rest.find(' '));
  // RFC 4253 forbids '-' here, but Cisco IOS sends "SSH-2.0-Cisco-1.25" and
  // every client accepts it: flagging it would flag routers, not attacks.
  if (software.empty() && (line.complete || rest.size() > software.size()))
    return "empty SSH software version";
  if (Unterminated(line, s, truncated)) return "SSH banner not terminated by CRLF";
  return "";
}

// The first binary packet after a 2.0 banner (RFC 4253 6): the key exchange
// starts in the clear, so its framing can be checked.
std::string CheckSshPacket(absl::string_view p) {
  if (p.size() < 5) return "";
  const uint32_t len = (uint32_t{static_cast<uint8_t>(p[0])} << 24) |
                       (uint32_t{static_cast<uint8_t>(p[1])} << 16) |
                       (uint32_t{static_cast<uint8_t>(p[2])} << 8) | static_cast<uint8_t>(p[3]);
  const uint32_t padding = static_cast<uint8_t>(p[4]);
  if (len < 12 || len > kMaxSshPacket)
    return absl::StrCat("SSH packet length ", len, " after the banner");
  if ((len + 4) % 8 != 0) return absl::StrCat("SSH packet length ", len, " not a multiple of 8");
  if (padding < 4 || padding + 1 >= len)
    return absl::StrCat("SSH padding length ", padding, " in a packet of ", len);
  return "";
}

}  // namespace

Verdict ClassifySsh(Bytes bytes, bool truncated) {
  const absl::string_view s = AsText(bytes);
  if (!absl::StartsWith(s, "SSH-")) return Verdict{};
  size_t end = 0;
  std::string why = CheckSshBanner(s, truncated, &end);
  if (why.empty() && absl::StartsWith(s, "SSH-2.0-")) why = CheckSshPacket(s.substr(end));
  return why.empty() ? Ok(Proto::kSsh) : Bad(Proto::kSsh, std::move(why));
}

// ---------------------------------------------------------------- SMTP

namespace {

// Claims the server side: a greeting (220, or 554 "no service here", RFC
// 5321 4.3.1), or a reply line whose code is broken but starts like one
// ("22x greeting"). FTP greets with the same "220 " line: without an FTP
// parser it comes out as SMTP, which the port table resolves (port 21 has
// no SMTP expectation).
bool ClaimsSmtpServer(absl::string_view s) {
  if (s.size() < 4) return false;
  const absl::string_view two = s.substr(0, 2);
  if (two != "22" && two != "55") return false;
  if (absl::StartsWith(s, "220") || absl::StartsWith(s, "554")) return true;
  return absl::ascii_isgraph(s[2]) && (s[3] == ' ' || s[3] == '-');
}

// Reply lines (RFC 5321 4.2): 3DIGIT [SP / "-" text] CRLF, digits 2-5 then
// 0-5; continuation lines ('-') share the final line's code.
std::string CheckSmtpReplies(absl::string_view s, bool truncated) {
  size_t pos = 0;
  absl::string_view continued;  // the code of an open multi-line reply
  for (int n = 0; pos < s.size(); ++n) {
    const Line line = FirstLine(s, pos);
    const absl::string_view t = line.text;
    if (t.size() + 2 > kMaxSmtpLine) return "SMTP reply line longer than 512 bytes";
    const absl::string_view code = t.substr(0, 3);
    const bool code_ok = std::all_of(code.begin(), code.end(), absl::ascii_isdigit) &&
                         (code.size() < 1 || (code[0] >= '2' && code[0] <= '5')) &&
                         (code.size() < 2 || code[1] <= '5');
    if (!code_ok || (line.complete && code.size() < 3))
      return absl::StrCat("SMTP reply code '", Escape(code), "'");
    if (t.size() > 3 && t[3] != ' ' && t[3] != '-')
      return absl::StrCat("SMTP reply separator ", Hex(static_cast<unsigned char>(t[3]), 2));
    if (const size_t c = FindCtl(t, true); c != absl::string_view::npos)
      return CtlReason("SMTP reply", t[c]);
    if (!continued.empty() && code.size() == 3 && code != continued)
      return absl::StrCat("SMTP reply code ", code, " inside a multi-line ", continued, " reply");
    if (!line.complete) {
      return Unterminated(line, s, truncated) ? "SMTP reply not terminated by CRLF" : "";
    }
    continued = (t.size() > 3 && t[3] == '-') ? code : absl::string_view();
    // A later 220 is the go-ahead for STARTTLS: TLS bytes may follow.
    if (n > 0 && continued.empty() && code == "220") break;
    pos = line.next;
  }
  return "";
}

bool StartsWithNoCase(absl::string_view s, absl::string_view prefix) {
  return s.size() >= prefix.size() && absl::EqualsIgnoreCase(s.substr(0, prefix.size()), prefix);
}

// The client's first command. Only that line is checked: after STARTTLS,
// AUTH or DATA the next bytes are TLS, base64 or a message, none of them
// SMTP syntax.
std::string CheckHelo(absl::string_view s, bool truncated) {
  const Line line = FirstLine(s);
  if (line.text.size() + 2 > kMaxSmtpLine) return "SMTP command line longer than 512 bytes";
  if (const size_t c = FindCtl(line.text, false); c != absl::string_view::npos)
    return CtlReason("SMTP command", line.text[c]);
  if (line.complete && absl::StripAsciiWhitespace(line.text.substr(5)).empty())
    return absl::StrCat(Escape(line.text.substr(0, 4)), " without a domain");
  return Unterminated(line, s, truncated) ? "SMTP command not terminated by CRLF" : "";
}

}  // namespace

Verdict ClassifySmtp(Bytes bytes, bool truncated) {
  const absl::string_view s = AsText(bytes);
  std::string why;
  if (StartsWithNoCase(s, "EHLO ") || StartsWithNoCase(s, "HELO ")) {
    why = CheckHelo(s, truncated);
  } else if (ClaimsSmtpServer(s)) {
    why = CheckSmtpReplies(s, truncated);
  } else {
    return Verdict{};
  }
  return why.empty() ? Ok(Proto::kSmtp) : Bad(Proto::kSmtp, std::move(why));
}

}  // namespace sockwatch::protocols_internal
