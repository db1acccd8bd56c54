// libFuzzer target for the protocol parsers (agent/protocols*.cc). Built
// once per parser family (tests/fuzz/CMakeLists.txt defines SW_FUZZ_PARSER:
// 0 Classify, 1 TLS, 2 HTTP, 3 SSH, 4 SMTP, 5 DNS) so each gets the whole
// budget. Besides crashes and sanitizer reports, it traps on any broken
// promise of the interface: a claim outside the parser's protocol, a
// malformed verdict without a reason or the reverse, an unprintable reason.
#include <cstddef>
#include <cstdint>

#include "agent/protocols.h"
#include "agent/protocols_internal.h"

namespace {

using sockwatch::Proto;
using sockwatch::Transport;
using sockwatch::Verdict;
namespace pi = sockwatch::protocols_internal;

Verdict Parse(pi::Bytes b, [[maybe_unused]] Transport t, bool truncated, Proto* only) {
#if SW_FUZZ_PARSER == 1
  *only = Proto::kTls;
  return pi::ClassifyTls(b, truncated);
#elif SW_FUZZ_PARSER == 2
  *only = Proto::kHttp;
  return pi::ClassifyHttp(b, truncated);
#elif SW_FUZZ_PARSER == 3
  *only = Proto::kSsh;
  return pi::ClassifySsh(b, truncated);
#elif SW_FUZZ_PARSER == 4
  *only = Proto::kSmtp;
  return pi::ClassifySmtp(b, truncated);
#elif SW_FUZZ_PARSER == 5
  *only = Proto::kDns;
  return pi::ClassifyDns(b, t, truncated);
#else
  *only = Proto::kUnknown;  // any
  return sockwatch::Classify(b, t, truncated);
#endif
}

void Check(const Verdict& v, Proto only) {
  if (only != Proto::kUnknown && v.protocol != Proto::kUnknown && v.protocol != only)
    __builtin_trap();
  if (v.protocol == Proto::kUnknown && v.malformed) __builtin_trap();
  if (v.malformed == v.reason.empty()) __builtin_trap();
  for (char c : v.reason) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f)
      __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const pi::Bytes b(data, size);
  for (Transport t : {Transport::kTcp, Transport::kUdp}) {
    for (bool truncated : {false, true}) {
      Proto only = Proto::kUnknown;
      const Verdict v = Parse(b, t, truncated, &only);
      Check(v, only);
      // A cut sample is judged no harder than a whole one: what is malformed
      // with truncated=true is malformed without it too.
      if (truncated && v.malformed) {
        const Verdict whole = Parse(b, t, false, &only);
        if (!whole.malformed || whole.protocol != v.protocol) __builtin_trap();
      }
    }
  }
  return 0;
}
