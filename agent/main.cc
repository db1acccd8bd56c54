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
#include <iostream>

#include "agent/agent.h"
#include "agent/exceptions.h"
#include "agent/history.h"
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
ABSL_FLAG(bool, detect, true, "Learn a baseline and raise alerts (off: capture only)");
ABSL_FLAG(std::string, state_dir, "/var/lib/sockwatch",
          "Where the baseline, local history and exception usage are kept");
ABSL_FLAG(absl::Duration, learning_period, absl::Hours(24),
          "Behaviour enters the baseline without alerts for this long after the first start "
          "(0s: alert at once); suspicious images alert even while learning");
ABSL_FLAG(std::string, exceptions, "", "Reviewed exceptions (YAML); reloaded on SIGHUP");
ABSL_FLAG(absl::Duration, dedup_window, absl::Minutes(10),
          "Repeats of one alert within this window are counted, then summarized");
ABSL_FLAG(uint64_t, baseline_max_images, 200000, "Baseline bound: images (least recently seen go first)");
ABSL_FLAG(uint64_t, baseline_max_behaviors, 2000000, "Baseline bound: behaviours");
ABSL_FLAG(bool, history, true, "Keep network events and alerts in the local history");
ABSL_FLAG(absl::Duration, history_max_age, absl::Hours(24 * 7), "Local history: oldest kept");
ABSL_FLAG(uint64_t, history_max_bytes, 512ull << 20, "Local history: size bound in bytes (oldest out first)");
ABSL_FLAG(std::string, host_id, "", "Host id on every event (default: /etc/machine-id, else the hostname)");

namespace {

sockwatch::Agent* g_agent = nullptr;

void OnSignal(int sig) {
  if (!g_agent) return;
  if (sig == SIGHUP)
    g_agent->RequestReload();
  else
    g_agent->Stop();
}

int Fail(absl::string_view msg) {
  fprintf(stderr, "sockwatch-agent: %.*s\n", static_cast<int>(msg.size()), msg.data());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  // Subcommands for responders, which read the state directory; they work
  // without root and while the agent runs.
  if (argc > 1 && (std::string(argv[1]) == "history" || std::string(argv[1]) == "exceptions")) {
    const std::vector<std::string> args(argv + 2, argv + argc);
    return std::string(argv[1]) == "history" ? sockwatch::HistoryMain(args, std::cout, std::cerr)
                                             : sockwatch::ExceptionsMain(args, std::cout, std::cerr);
  }
  absl::FlagsUsageConfig cfg;
  cfg.contains_help_flags = [](absl::string_view f) { return absl::StrContains(f, "agent/main.cc"); };
  cfg.contains_helpshort_flags = cfg.contains_help_flags;
  cfg.normalize_filename = [](absl::string_view f) { return std::string(f); };
  absl::SetFlagsUsageConfig(cfg);
  absl::SetProgramUsageMessage(
      "sockwatch-agent: records which process, with which command line, talked to whom.\n"
      "Loads eBPF probes (exec/fork/exit, TCP connect/accept/listen/close, UDP send/recv)\n"
      "and prints one event per line. Runs as root on Linux >= 5.17 with BTF and cgroup v2.\n\n"
      "Usage: sockwatch-agent [--print=json|text|none] [flags]\n"
      "       sockwatch-agent history [--since 2h] [--exe PATH] [--pid N] [--remote CIDR] [--port N] [--json]\n"
      "       sockwatch-agent exceptions review|check --exceptions=FILE\n"
      "(each subcommand has its own --help)");
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
  // One write per drained batch, not per line.
  static char out_buf[1 << 20];
  setvbuf(stdout, out_buf, _IOFBF, sizeof(out_buf));
  opts.after_drain = [] { fflush(stdout); };
  opts.detect = absl::GetFlag(FLAGS_detect);
  opts.pipeline.state_dir = absl::GetFlag(FLAGS_state_dir);
  opts.pipeline.learning_period = absl::GetFlag(FLAGS_learning_period);
  opts.pipeline.exceptions_path = absl::GetFlag(FLAGS_exceptions);
  opts.pipeline.dedup_window = absl::GetFlag(FLAGS_dedup_window);
  opts.pipeline.max_images = absl::GetFlag(FLAGS_baseline_max_images);
  opts.pipeline.max_behaviors = absl::GetFlag(FLAGS_baseline_max_behaviors);
  opts.pipeline.history = absl::GetFlag(FLAGS_history);
  opts.pipeline.history_max_age = absl::GetFlag(FLAGS_history_max_age);
  opts.pipeline.history_max_bytes = absl::GetFlag(FLAGS_history_max_bytes);

  const sockwatch::PrintFormat fmt = *format;
  sockwatch::Agent agent(opts, [fmt](const sockwatch::v1::Envelope& env) {
    if (fmt == sockwatch::PrintFormat::kNone) return;
    const std::string line = fmt == sockwatch::PrintFormat::kJson ? sockwatch::EnvelopeToJson(env)
                                                                  : sockwatch::EnvelopeToText(env);
    fwrite(line.data(), 1, line.size(), stdout);
    fputc('\n', stdout);
  });
  g_agent = &agent;
  struct sigaction sa = {};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  if (absl::Status s = agent.Start(); !s.ok()) return Fail(s.ToString());
  fprintf(stderr, "sockwatch-agent: coverage: %s\n", sockwatch::CoverageToText(agent.coverage()).c_str());
  fprintf(stderr, "sockwatch-agent: running; Ctrl-C or SIGTERM stops\n");
  if (absl::Status s = agent.Run(); !s.ok()) return Fail(s.ToString());
  fprintf(stderr, "sockwatch-agent: stopped after %llu events\n",
          static_cast<unsigned long long>(agent.emitted()));
  return 0;
}
