#include "agent/protocols.h"

#include <algorithm>
#include <array>

#include "absl/strings/str_cat.h"
#include "agent/protocols_internal.h"

namespace sockwatch {
namespace protocols_internal {

std::string Escape(absl::string_view s, size_t max) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(std::min(s.size(), max) + 8);
  for (size_t i = 0; i < s.size() && i < max; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      out += "\\x";
      out.push_back(kDigits[c >> 4]);
      out.push_back(kDigits[c & 0xf]);
    }
  }
  if (s.size() > max) out += "...";
  return out;
}

std::string Hex(uint32_t v, int digits) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out = "0x";
  for (int i = digits - 1; i >= 0; --i) out.push_back(kDigits[(v >> (4 * i)) & 0xf]);
  return out;
}

}  // namespace protocols_internal

namespace {
constexpr std::array<const char*, 6> kNames = {"unknown", "tls", "http", "ssh", "dns", "smtp"};
}  // namespace

const char* ProtoName(Proto p) {
  const auto i = static_cast<size_t>(p);
  return i < kNames.size() ? kNames[i] : "unknown";
}

std::optional<Proto> ProtoFromName(absl::string_view name) {
  for (size_t i = 0; i < kNames.size(); ++i) {
    if (name == kNames[i]) return static_cast<Proto>(i);
  }
  return std::nullopt;
}

Verdict Classify(absl::Span<const uint8_t> bytes, Transport transport, bool truncated) {
  namespace pi = protocols_internal;
  if (bytes.empty()) return Verdict{};
  // UDP carries only DNS among our protocols (TLS over UDP is DTLS, with
  // other versions; HTTP/3 is QUIC). Text that merely looks like HTTP in a
  // datagram is not HTTP, so it stays unknown.
  if (transport == Transport::kUdp) return pi::ClassifyDns(bytes, transport, truncated);
  // The magic-prefix protocols first: their claims are disjoint (first byte
  // 0x14-0x17, "SSH-", an uppercase method or "HTTP/", "220"/"EHLO"), and DNS
  // comes last, so text and TLS can never be taken for DNS.
  for (Verdict (*parse)(pi::Bytes, bool) :
       {&pi::ClassifyTls, &pi::ClassifySsh, &pi::ClassifyHttp, &pi::ClassifySmtp}) {
    Verdict v = parse(bytes, truncated);
    if (v.protocol != Proto::kUnknown) return v;
  }
  return pi::ClassifyDns(bytes, transport, truncated);
}

}  // namespace sockwatch
