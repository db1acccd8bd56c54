// stream_bench: agent -> collector ingest, end to end on loopback. The real
// sockwatch-collector (fresh SQLite store each run) receives simulated agents
// -- the agent's real Spool and Exporter, pre-filled with synthetic network
// events -- streaming at once. One run compares agent counts, batch sizes and
// mTLS vs plaintext side by side; prints events/s and acknowledgement latency.
//
//   stream_bench [--events=N]   (events per configuration, default 400000)
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_format.h"
#include "tests/integration/collector_harness.h"

namespace sw = sockwatch::testing;

int main(int argc, char** argv) {
  int total = 400000;
  for (int i = 1; i < argc; ++i) {
    absl::string_view a = argv[i];
    if (!absl::ConsumePrefix(&a, "--events=") || !absl::SimpleAtoi(a, &total) || total < 1000) {
      fprintf(stderr, "usage: stream_bench [--events=N (>= 1000)]\n");
      return 2;
    }
  }
  struct Config {
    int agents;
    size_t batch;
    bool tls;
  };
  const std::vector<Config> configs = {
      {1, 1000, true}, {1, 5000, true}, {8, 1000, true},   {8, 1000, false},
      {64, 1000, true}, {200, 250, true}, {200, 1000, true},
  };
  std::vector<std::string> all_hosts;
  for (int i = 0; i < 200; ++i) all_hosts.push_back(absl::StrFormat("bench-%03d", i));
  sw::TestPki pki(all_hosts);
  if (!pki.ok()) {
    fprintf(stderr, "stream_bench: make-certs.sh failed\n");
    return 1;
  }
  printf("%-7s %-6s %-9s %9s %8s %11s  %s\n", "agents", "batch", "transport", "events", "seconds",
         "events/s", "ack latency per batch");
  for (const Config& c : configs) {
    char tmpl[] = "/var/tmp/sw_stream_bench_XXXXXX";
    const std::string dir = mkdtemp(tmpl);
    std::vector<std::string> flags = c.tls ? pki.CollectorFlags() : std::vector<std::string>{"--insecure"};
    flags.push_back("--log_streams=false");
    auto collector = sw::CollectorProcess::Start(sw::FreePort(), dir + "/c.db", flags);
    if (!collector) return 1;
    sw::FleetOptions fo;
    fo.address = collector->address();
    fo.pki = c.tls ? &pki : nullptr;
    fo.hosts.assign(all_hosts.begin(), all_hosts.begin() + c.agents);
    fo.events = total / c.agents;
    fo.batch = c.batch;
    fo.dir = dir;
    fo.timeout = absl::Minutes(5);
    const sw::FleetRun run = StreamFleet(fo);
    const int events = fo.events * c.agents;
    if (!run.error.empty() || run.agents_done != c.agents) {
      printf("%-7d %-6zu %-9s failed: %s (%d of %d agents done)\n", c.agents, c.batch,
             c.tls ? "mTLS" : "plain", run.error.c_str(), run.agents_done, c.agents);
    } else {
      const double secs = absl::ToDoubleSeconds(run.took);
      printf("%-7d %-6zu %-9s %9d %8.2f %11.0f  %s\n", c.agents, c.batch, c.tls ? "mTLS" : "plain",
             events, secs, events / secs, sw::LatencySummary(run.ack_latencies).c_str());
    }
    fflush(stdout);
    collector.reset();
    std::filesystem::remove_all(dir);
  }
  return 0;
}
