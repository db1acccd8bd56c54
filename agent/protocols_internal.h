// The per-protocol parsers behind Classify, exposed for their unit tests and
// one fuzz target each (tests/fuzz/). Each returns protocol kUnknown when the
// bytes do not claim its protocol, and never claims another protocol.
#ifndef SOCKWATCH_AGENT_PROTOCOLS_INTERNAL_H_
#define SOCKWATCH_AGENT_PROTOCOLS_INTERNAL_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "agent/protocols.h"

namespace sockwatch::protocols_internal {

using Bytes = absl::Span<const uint8_t>;

Verdict ClassifyTls(Bytes bytes, bool truncated);
Verdict ClassifyHttp(Bytes bytes, bool truncated);
Verdict ClassifySsh(Bytes bytes, bool truncated);
Verdict ClassifySmtp(Bytes bytes, bool truncated);
Verdict ClassifyDns(Bytes bytes, Transport transport, bool truncated);

// Verdict helpers shared by the parsers.
inline Verdict Ok(Proto p) { return Verdict{p, false, {}}; }
inline Verdict Bad(Proto p, std::string reason) { return Verdict{p, true, std::move(reason)}; }

// Sample bytes for a reason string: printable ASCII stays, everything else
// (and the backslash) becomes \xNN, and at most `max` input bytes are shown.
std::string Escape(absl::string_view s, size_t max = 32);
// "0x0909"-style hex of a number, `digits` wide.
std::string Hex(uint32_t v, int digits);

inline absl::string_view AsText(Bytes b) {
  return absl::string_view(reinterpret_cast<const char*>(b.data()), b.size());
}

}  // namespace sockwatch::protocols_internal

#endif  // SOCKWATCH_AGENT_PROTOCOLS_INTERNAL_H_
