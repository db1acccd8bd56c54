// The agent's main loop: drains the ring buffer in batches, decodes, joins
// with the process table, reports losses, and hands each envelope to a sink.
#ifndef SOCKWATCH_AGENT_AGENT_H_
#define SOCKWATCH_AGENT_AGENT_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/container/flat_hash_map.h"
#include "agent/decoder.h"
#include "agent/identity.h"
#include "agent/pipeline.h"
#include "agent/probes.h"
#include "agent/process_table.h"
#include "agent/spool.h"

struct ring_buffer;

namespace sockwatch {

// Loss.reason of records the spool to the collector lost (overflow while the
// collector was unreachable, or damaged on disk).
inline constexpr char kSpoolLossReason[] = "spool";
// How often waiting flows and orphan counters are judged, and interfaces rescanned.
inline constexpr absl::Duration kInspectInterval = absl::Milliseconds(250);
inline constexpr absl::Duration kInterfaceRefresh = absl::Seconds(2);
inline constexpr absl::Duration kOrphanReadInterval = absl::Seconds(1);

struct AgentOptions {
  ProbeOptions probes;
  absl::Duration drain_interval = absl::Milliseconds(10);
  absl::Duration loss_interval = absl::Seconds(1);
  absl::Duration run_for = absl::InfiniteDuration();
  bool snapshot = true;
  size_t max_processes = 131072;
  std::string host_id;
  // Raw ring buffer records are written here (u32 length + bytes; the file
  // is truncated at start), for replay by benchmarks and tests. Empty: off.
  std::string record_path;
  // Called after each drain of the ring buffer (e.g. to flush stdout once per
  // batch rather than once per line).
  std::function<void()> after_drain;
  // Baseline, detectors and local history; off: capture only.
  bool detect = true;
  PipelineOptions pipeline;
  // The spool to the collector, if any: its losses (overflow, damage) are
  // reported as Loss events like the kernel's. Not owned.
  Spool* spool = nullptr;
  // Events the sink could not write to the spool (I/O errors, disk full),
  // reported as Loss "spool_write_error". Not owned.
  const uint64_t* unspooled = nullptr;
};

using Sink = std::function<void(const v1::Envelope&)>;

class Agent {
 public:
  Agent(AgentOptions opts, Sink sink);
  ~Agent();

  // Loads and attaches the probes, emits the coverage and the start-up snapshot.
  absl::Status Start();
  // Runs until Stop() or run_for elapses, then drains what is left.
  absl::Status Run();
  // Safe from a signal handler.
  void Stop() { stop_.store(true); }
  // Safe from a signal handler: reload the exceptions file (SIGHUP).
  void RequestReload() { reload_.store(true); }

  uint64_t emitted() const { return seq_; }
  const std::string& host_id() const { return opts_.host_id; }
  const std::string& instance() const { return instance_; }
  const std::string& hostname() const { return hostname_; }
  // What the probes cover; valid after Start().
  const v1::Coverage& coverage() const { return probes_->coverage(); }
  uint64_t decode_errors() const { return decode_errors_; }

 private:
  static int OnRecord(void* ctx, void* data, size_t size);
  void Emit(v1::Envelope& env);
  void EmitSnapshot();
  void ReportLoss();
  void InspectTick(PacketProbe* pk, bool read_orphans);
  void RefreshInterfaces(PacketProbe* pk);
  // Container id of a cgroup (cached; "" on the host).
  const std::string& ContainerOf(uint64_t cgroup_id);

  AgentOptions opts_;
  Sink sink_;
  std::unique_ptr<Probes> probes_;
  ring_buffer* ring_ = nullptr;
  FILE* record_ = nullptr;
  BootClock clock_;
  ProcessTable table_;
  Decoder decoder_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> reload_{false};
  std::unique_ptr<Pipeline> pipeline_;
  std::unique_ptr<CgroupPaths> cgroups_;
  absl::flat_hash_map<uint64_t, std::string> containers_;
  std::string instance_;
  std::string hostname_;
  uint64_t seq_ = 0;
  uint64_t decode_errors_ = 0;
  uint64_t reported_decode_errors_ = 0;
  uint64_t reported_evictions_ = 0;
  uint64_t reported_unspooled_ = 0;
  Counters reported_{};
  uint64_t loss_window_start_ns_ = 0;
};

}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_AGENT_H_
