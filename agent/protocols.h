// Protocol identification and syntax checking for the first payload bytes of
// a flow (protocol inspection: "protocol/port mismatch, malformed syntax").
// Our own small parsers, not a DPI library: they only need to say what the
// bytes claim to be and whether they break that protocol's syntax, and they
// must stay cheap and safe on hostile input (fuzzed: tests/fuzz/).
//
// Depends only on the standard library and absl strings/types/span, so the
// same sources also compile with clang++ for libFuzzer.
#ifndef SOCKWATCH_AGENT_PROTOCOLS_H_
#define SOCKWATCH_AGENT_PROTOCOLS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace sockwatch {

enum class Proto { kUnknown = 0, kTls, kHttp, kSsh, kDns, kSmtp };

// "unknown", "tls", "http", "ssh", "dns", "smtp".
const char* ProtoName(Proto p);
// The inverse of ProtoName; nullopt for any other name.
std::optional<Proto> ProtoFromName(absl::string_view name);

enum class Transport { kTcp, kUdp };

struct Verdict {
  Proto protocol = Proto::kUnknown;  // what the bytes claim to be (kUnknown: none recognised)
  bool malformed = false;            // they claim `protocol` and break its syntax
  // When malformed: what broke, in words. ASCII only, and bytes from the
  // sample only ever appear hex-escaped, so it is safe on a terminal.
  std::string reason;
};

// bytes: the first payload bytes one side of a flow sent (concatenated
// segments; for UDP one datagram). truncated: the sample was cut at the
// capture limit, so only what is present is checked (a missing line end or a
// short handshake is not a fault then).
Verdict Classify(absl::Span<const uint8_t> bytes, Transport transport, bool truncated);

}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_PROTOCOLS_H_
