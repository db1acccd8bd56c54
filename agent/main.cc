// sockwatch-agent: loads the probes and prints process-attributed network events.
#include <csignal>
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/agent.h"
#include "agent/host.h"
#include "agent/output.h"

ABSL_FLAG(std::string, print, "text", "Output on stdout, one line per event: json, text or none");
ABSL_FLAG(uint32_t, ring_buffer_size, 8u << 20,
          "Kernel ring buffer size in bytes (a power of two, at least 4096)");
ABSL_FLAG(absl::Duration, drain_interval, absl::Milliseconds(10),
          "How often the ring buffer is drained (records are batched, not woken one by one)");
ABSL_FLAG(uint64_t, wakeup_bytes, 256u << 10,
          "Wake the agent early once this many bytes wait in the ring buffer");
ABSL_FLAG(uint32_t, udp_dedup_entries, 16384,
          "Size of the in-kernel LRU that suppresses repeated UDP (process, socket, remote) events");
ABSL_FLAG(uint64_t, max_processes, 131072, "Process table bound (oldest exited go first)");
ABSL_FLAG(bool, snapshot, true, "Emit existing processes and sockets at start");
ABSL_FLAG(absl::Duration, duration, absl::InfiniteDuration(), "Stop after this long (default: run until SIGINT/SIGTERM)");
ABSL_FLAG(std::string, record, "",
          "Also append every raw kernel record to this file (for replay in benchmarks)");
ABSL_FLAG(std::string, host_id, "", "Host id on every event (default: /etc/machine-id, else the hostname)");

namespace {

sockwatch::Agent* g_agent = nullptr;

void OnSignal(int) {
  if (g_agent) g_agent->Stop();
}

int Fail(absl::string_view msg) {
  fprintf(stderr, "sockwatch-agent: %.*s\n", static_cast<int>(msg.size()), msg.data());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::FlagsUsageConfig cfg;
  cfg.contains_help_flags = [](absl::string_view f) { return absl::StrContains(f, "agent/main.cc"); };
  cfg.contains_helpshort_flags = cfg.contains_help_flags;
  cfg.normalize_filename = [](absl::string_view f) { return std::string(f); };
  absl::SetFlagsUsageConfig(cfg);
  absl::SetProgramUsageMessage(
      "sockwatch-agent: records which process, with which command line, talked to whom.\n"
      "Loads eBPF probes (exec/fork/exit, TCP connect/accept/listen/close, UDP send/recv)\n"
      "and prints one event per line. Runs as root on Linux >= 5.17 with BTF and cgroup v2.\n\n"
      "Usage: sockwatch-agent [--print=json|text|none] [flags]");
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) return Fail(absl::StrCat("unexpected argument '", rest[1], "' (see --help)"));

  auto format = sockwatch::ParsePrintFormat(absl::GetFlag(FLAGS_print));
  if (!format.ok()) return Fail(format.status().message());
  const uint32_t ring = absl::GetFlag(FLAGS_ring_buffer_size);
  if (ring < 4096 || (ring & (ring - 1)) != 0)
    return Fail(absl::StrCat("--ring_buffer_size=", ring, ": must be a power of two >= 4096"));

  auto host = sockwatch::CheckHost();
  if (!host.ok()) return Fail(host.status().message());

  sockwatch::AgentOptions opts;
  opts.probes.ring_bytes = ring;
  opts.probes.wakeup_bytes = absl::GetFlag(FLAGS_wakeup_bytes);
  opts.probes.udp_dedup_entries = absl::GetFlag(FLAGS_udp_dedup_entries);
  opts.probes.cgroup2_path = host->cgroup2_path;
  opts.drain_interval = absl::GetFlag(FLAGS_drain_interval);
  opts.run_for = absl::GetFlag(FLAGS_duration);
  opts.snapshot = absl::GetFlag(FLAGS_snapshot);
  opts.max_processes = absl::GetFlag(FLAGS_max_processes);
  opts.host_id = absl::GetFlag(FLAGS_host_id);
  opts.record_path = absl::GetFlag(FLAGS_record);

  const sockwatch::PrintFormat fmt = *format;
  sockwatch::Agent agent(opts, [fmt](const sockwatch::v1::Envelope& env) {
    if (fmt == sockwatch::PrintFormat::kNone) return;
    const std::string line = fmt == sockwatch::PrintFormat::kJson ? sockwatch::EnvelopeToJson(env)
                                                                  : sockwatch::EnvelopeToText(env);
    fwrite(line.data(), 1, line.size(), stdout);
    fputc('\n', stdout);
    fflush(stdout);
  });
  g_agent = &agent;
  struct sigaction sa = {};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  if (absl::Status s = agent.Start(); !s.ok()) return Fail(s.ToString());
  fprintf(stderr, "sockwatch-agent: coverage: %s\n", sockwatch::CoverageToText(agent.coverage()).c_str());
  fprintf(stderr, "sockwatch-agent: running; Ctrl-C or SIGTERM stops\n");
  if (absl::Status s = agent.Run(); !s.ok()) return Fail(s.ToString());
  fprintf(stderr, "sockwatch-agent: stopped after %llu events\n",
          static_cast<unsigned long long>(agent.emitted()));
  return 0;
}
