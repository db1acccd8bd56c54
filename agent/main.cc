// sockwatch-agent: loads the probes and prints process-attributed network events.
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include <iostream>

#include "agent/agent.h"
#include "agent/exporter.h"
#include "agent/spool.h"
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
ABSL_FLAG(std::string, collector, "",
          "Stream events to this collector (HOST:PORT); without it the agent runs standalone");
ABSL_FLAG(std::string, tls_ca, "/etc/sockwatch/tls/ca.pem", "CA that signed the collector's certificate (PEM)");
ABSL_FLAG(std::string, tls_cert, "/etc/sockwatch/tls/agent.pem",
          "This host's certificate (PEM); its CN must be the --host_id");
ABSL_FLAG(std::string, tls_key, "/etc/sockwatch/tls/agent.key", "This host's private key (PEM)");
ABSL_FLAG(std::string, tls_server_name, "",
          "Name to verify in the collector's certificate (default: the --collector host)");
ABSL_FLAG(bool, insecure, false, "Plaintext to the collector; only to a loopback --collector");
ABSL_FLAG(uint64_t, spool_max_bytes, 256ull << 20,
          "Spool bound (state_dir/spool): past it the oldest unsent events go, counted as loss");
ABSL_FLAG(uint64_t, spool_segment_bytes, 8ull << 20, "Spool segment file size");
ABSL_FLAG(std::string, spool_fsync, "interval",
          "Spool durability: always (every write), interval (once a second) or never");
ABSL_FLAG(uint64_t, export_batch, 1000, "Most events per batch sent to the collector");
ABSL_FLAG(absl::Duration, reconnect_max, absl::Seconds(30),
          "Longest wait between attempts to reach the collector (exponential backoff with jitter)");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(5),
          "On stop, how long to wait for the collector to acknowledge what is spooled");
ABSL_FLAG(std::string, host_id, "", "Host id on every event (default: /etc/machine-id, else the hostname)");
ABSL_FLAG(std::string, inspect_interfaces, "all",
          "Protocol inspection (tc): 'all' = every non-loopback Ethernet interface that is up, new ones "
          "picked up as they come; a comma-separated list of names; or 'none' (off). Needs --detect");
ABSL_FLAG(std::string, inspect_netns, "",
          "Inspect the interfaces of this network namespace (e.g. /run/netns/NAME) instead of the agent's own");
ABSL_FLAG(uint32_t, inspect_bytes, 256, "Protocol inspection: first payload bytes per flow direction (1-1024)");
ABSL_FLAG(uint32_t, inspect_segments, 3, "Protocol inspection: over at most this many segments (1-16)");
ABSL_FLAG(std::string, protocols, "",
          "Protocol table (YAML: which protocol each well-known port expects); default: the built-in "
          "table, deploy/protocols.yaml");
ABSL_FLAG(uint64_t, orphan_threshold, 20,
          "orphan_packets: alert when one source sends this many packets outside established flows...");
ABSL_FLAG(absl::Duration, orphan_window, absl::Seconds(10), "... within this window");

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
      "records which process, with which command line, talked to whom.\n"
      "Loads eBPF probes (exec/fork/exit, TCP connect/accept/listen/close, UDP send/recv,\n"
      "tc inspection of first payload bytes and orphan packets) and prints one event per line. Runs as root on Linux >= 5.17 with BTF and cgroup v2.\n\n"
      "Usage: sockwatch-agent [--print=json|text|none] [flags]\n"
      "       sockwatch-agent history [--since 2h] [--exe PATH] [--pid N] [--remote CIDR] [--port N] [--json]\n"
      "       sockwatch-agent exceptions review|check --exceptions=FILE\n"
      "       sockwatch-agent --collector=HOST:PORT [--tls_ca --tls_cert --tls_key] [--print=none]\n"
      "(each subcommand has its own --help)");
  // --flag-name is accepted for --flag_name (the issue texts and many users
  // write dashes).
  std::vector<std::string> normalized(argv, argv + argc);
  for (size_t i = 1; i < normalized.size(); ++i) {
    std::string& a = normalized[i];
    if (a == "--") break;
    if (a.rfind("--", 0) != 0) continue;
    const size_t end = std::min(a.find('='), a.size());
    std::replace(a.begin() + 2, a.begin() + end, '-', '_');
  }
  std::vector<char*> nargv;
  for (std::string& a : normalized) nargv.push_back(a.data());
  nargv.push_back(nullptr);
  std::vector<char*> rest = absl::ParseCommandLine(argc, nargv.data());
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
  const std::string inspect = absl::GetFlag(FLAGS_inspect_interfaces);
  opts.probes.inspect = opts.detect && inspect != "none";
  if (inspect != "all" && inspect != "none")
    opts.probes.packet.interfaces = absl::StrSplit(inspect, ',', absl::SkipWhitespace());
  opts.probes.packet.netns = absl::GetFlag(FLAGS_inspect_netns);
  opts.probes.packet.sample_bytes = absl::GetFlag(FLAGS_inspect_bytes);
  opts.probes.packet.sample_segments = absl::GetFlag(FLAGS_inspect_segments);
  if (opts.probes.packet.sample_bytes < 1 || opts.probes.packet.sample_bytes > SW_SAMPLE_MAX)
    return Fail(absl::StrCat("--inspect_bytes must be 1-", SW_SAMPLE_MAX));
  if (opts.probes.packet.sample_segments < 1 || opts.probes.packet.sample_segments > 16)
    return Fail("--inspect_segments must be 1-16");
  opts.pipeline.protocols_path = absl::GetFlag(FLAGS_protocols);
  opts.pipeline.inspect.sample_bytes = opts.probes.packet.sample_bytes;
  opts.pipeline.inspect.sample_segments = opts.probes.packet.sample_segments;
  opts.pipeline.inspect.orphan_threshold = absl::GetFlag(FLAGS_orphan_threshold);
  opts.pipeline.inspect.orphan_window = absl::GetFlag(FLAGS_orphan_window);
  if (opts.pipeline.inspect.orphan_threshold < 1) return Fail("--orphan_threshold must be at least 1");
  if (opts.pipeline.inspect.orphan_window < absl::Seconds(1)) return Fail("--orphan_window must be at least 1s");

  // To a collector: every event goes through the spool, which the exporter
  // sends and replays; capture never waits for the network.
  const std::string collector = absl::GetFlag(FLAGS_collector);
  std::unique_ptr<sockwatch::Spool> spool;
  sockwatch::ExporterOptions xopts;
  if (!collector.empty()) {
    xopts.address = collector;
    xopts.insecure = absl::GetFlag(FLAGS_insecure);
    xopts.tls = {absl::GetFlag(FLAGS_tls_ca), absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key)};
    xopts.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
    xopts.batch_envelopes = absl::GetFlag(FLAGS_export_batch);
    xopts.backoff_max = std::max(absl::GetFlag(FLAGS_reconnect_max), xopts.backoff_initial);
    if (xopts.batch_envelopes < 1 || xopts.batch_envelopes > sockwatch::kMaxBatchEnvelopes)
      return Fail(absl::StrCat("--export_batch must be 1-", sockwatch::kMaxBatchEnvelopes));
    // Checks the address and the TLS files before any probe is loaded.
    if (auto check = sockwatch::Exporter::Create(xopts, nullptr, {}); !check.ok())
      return Fail(check.status().message());
    auto fsync = sockwatch::ParseSpoolFsync(absl::GetFlag(FLAGS_spool_fsync));
    if (!fsync.ok()) return Fail(absl::StrCat("--spool_fsync: ", fsync.status().message()));
    sockwatch::SpoolOptions sopts;
    sopts.dir = absl::GetFlag(FLAGS_state_dir) + "/spool";
    sopts.max_bytes = absl::GetFlag(FLAGS_spool_max_bytes);
    sopts.segment_bytes = absl::GetFlag(FLAGS_spool_segment_bytes);
    sopts.fsync = *fsync;
    auto opened = sockwatch::Spool::Open(sopts);
    if (!opened.ok()) return Fail(absl::StrCat("spool: ", opened.status().message()));
    spool = *std::move(opened);
    opts.spool = spool.get();
    opts.after_drain = [s = spool.get()] {
      fflush(stdout);
      if (absl::Status st = s->Flush(); !st.ok())
        fprintf(stderr, "sockwatch-agent: spool: %s\n", st.ToString().c_str());
    };
  }

  const sockwatch::PrintFormat fmt = *format;
  std::string payload;
  // Written and read on the agent's one event-loop thread.
  uint64_t spool_errors = 0;
  opts.unspooled = &spool_errors;
  sockwatch::Agent agent(opts, [&](const sockwatch::v1::Envelope& env) {
    if (spool) {
      payload.clear();
      env.SerializeToString(&payload);
      const uint64_t carried =
          env.has_loss() && env.loss().reason() == sockwatch::kSpoolLossReason ? env.loss().count() : 0;
      const absl::Time t = absl::FromUnixSeconds(env.time().seconds()) + absl::Nanoseconds(env.time().nanos());
      if (auto r = spool->Append(payload, t, carried); !r.ok() && (spool_errors++ & 1023) == 0)
        fprintf(stderr, "sockwatch-agent: spool: %s (%llu events not spooled)\n",
                r.status().ToString().c_str(), static_cast<unsigned long long>(spool_errors));
    }
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
  std::unique_ptr<sockwatch::Exporter> exporter;
  if (spool) {
    sockwatch::v1::Hello hello;
    hello.set_host_id(agent.host_id());
    hello.set_agent_instance(agent.instance());
    hello.set_hostname(agent.hostname());
    hello.set_kernel_release(sockwatch::KernelRelease());
    hello.set_agent_version(SOCKWATCH_VERSION);
    *hello.mutable_coverage() = agent.coverage();
    hello.mutable_started()->set_seconds(absl::ToUnixSeconds(absl::Now()));
    auto created = sockwatch::Exporter::Create(xopts, spool.get(), std::move(hello));
    if (!created.ok()) return Fail(created.status().message());
    exporter = *std::move(created);
    exporter->Start();
    fprintf(stderr, "sockwatch-agent: streaming to %s as host '%s' (spool %s)\n", collector.c_str(),
            agent.host_id().c_str(), (absl::GetFlag(FLAGS_state_dir) + "/spool").c_str());
  }
  fprintf(stderr, "sockwatch-agent: running; Ctrl-C or SIGTERM stops\n");
  absl::Status run = agent.Run();
  if (exporter) {
    if (absl::Status s = spool->Flush(); !s.ok())
      fprintf(stderr, "sockwatch-agent: spool: %s\n", s.ToString().c_str());
    exporter->Stop(absl::GetFlag(FLAGS_drain_timeout));
    const sockwatch::SpoolStats st = spool->stats();
    fprintf(stderr, "sockwatch-agent: collector acknowledged up to spool position %llu of %llu\n",
            static_cast<unsigned long long>(st.acked_seq), static_cast<unsigned long long>(st.last_seq));
  }
  if (!run.ok()) return Fail(run.ToString());
  fprintf(stderr, "sockwatch-agent: stopped after %llu events\n",
          static_cast<unsigned long long>(agent.emitted()));
  return 0;
}
