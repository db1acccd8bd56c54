// Protocol classifier throughput (agent/protocols.h): flows per second on
// one core, for the real samples of tests/unit/protocol_samples.h cut to the
// kernel's default 256-byte capture, per protocol and mixed, plus random
// bytes (what unknown traffic costs). Rates use wall time: one core, one
// thread, so that is the throughput a flow sees.
#include <random>
#include <vector>

#include "agent/protocols.h"
#include "benchmark/benchmark.h"
#include "protocol_samples.h"

namespace sockwatch {
namespace {

constexpr size_t kCapture = 256;

struct Flow {
  std::vector<uint8_t> bytes;
  Transport transport;
  bool truncated;
};

// `proto` kUnknown: random bytes; std::nullopt: every sample plus random.
std::vector<Flow> Flows(std::optional<Proto> proto) {
  std::vector<Flow> out;
  for (const auto& s : samples::kProtocolSamples) {
    if (proto.has_value() && *proto != s.proto) continue;
    const size_t n = std::min(s.bytes.size(), kCapture);
    out.push_back({std::vector<uint8_t>(s.bytes.begin(), s.bytes.begin() + n), s.transport,
                   s.truncated || n < s.bytes.size()});
  }
  if (!proto.has_value() || *proto == Proto::kUnknown) {
    std::mt19937 rng(1);
    for (int i = 0; i < 4; ++i) {
      std::vector<uint8_t> b(kCapture);
      for (auto& c : b) c = static_cast<uint8_t>(rng());
      out.push_back({std::move(b), i % 2 ? Transport::kUdp : Transport::kTcp, true});
    }
  }
  return out;
}

void Run(benchmark::State& state, std::optional<Proto> proto) {
  const std::vector<Flow> flows = Flows(proto);
  size_t i = 0, malformed = 0;
  for (auto _ : state) {
    const Flow& f = flows[i];
    i = i + 1 == flows.size() ? 0 : i + 1;
    const Verdict v = Classify(f.bytes, f.transport, f.truncated);
    malformed += v.malformed;
    benchmark::DoNotOptimize(v);
  }
  if (malformed != 0) state.SkipWithError("a real sample classified as malformed");
  state.counters["flows/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

BENCHMARK_CAPTURE(Run, tls, Proto::kTls)->UseRealTime();
BENCHMARK_CAPTURE(Run, http, Proto::kHttp)->UseRealTime();
BENCHMARK_CAPTURE(Run, ssh, Proto::kSsh)->UseRealTime();
BENCHMARK_CAPTURE(Run, dns, Proto::kDns)->UseRealTime();
BENCHMARK_CAPTURE(Run, smtp, Proto::kSmtp)->UseRealTime();
BENCHMARK_CAPTURE(Run, random, Proto::kUnknown)->UseRealTime();
BENCHMARK_CAPTURE(Run, mixed, std::nullopt)->UseRealTime();

}  // namespace
}  // namespace sockwatch

BENCHMARK_MAIN();
