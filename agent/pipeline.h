// Detection and local history behind the capture: identity of each image,
// baseline + detectors, reviewed exceptions, and the history store that
// incident responders query with `sockwatch-agent history`.
#ifndef SOCKWATCH_AGENT_PIPELINE_H_
#define SOCKWATCH_AGENT_PIPELINE_H_

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/baseline.h"
#include "agent/detector.h"
#include "agent/exceptions.h"
#include "agent/history.h"
#include "agent/identity.h"
#include "agent/inspector.h"
#include "agent/protocol_table.h"

namespace sockwatch {

struct PipelineOptions {
  std::string state_dir = "/var/lib/sockwatch";
  std::string cgroup2_path;
  absl::Duration learning_period = absl::Hours(24);
  size_t max_images = 200'000;
  size_t max_behaviors = 2'000'000;
  absl::Duration dedup_window = absl::Minutes(10);
  std::string exceptions_path;  // "" = none
  bool history = true;
  absl::Duration history_max_age = absl::Hours(24 * 7);
  uint64_t history_max_bytes = 512ull << 20;
  std::string id_prefix;  // alert ids
  // Protocol inspection: the protocol table ("" = the built-in one, which
  // is deploy/protocols.yaml) and the inspector's thresholds.
  std::string protocols_path;
  InspectorOptions inspect;
};

using EmitFn = std::function<void(v1::Envelope&)>;

class Pipeline {
 public:
  static absl::StatusOr<std::unique_ptr<Pipeline>> Open(const PipelineOptions& opts,
                                                        const ProcessTable* table, const BootClock* clock);
  ~Pipeline();

  // Every envelope the agent emits passes here once it has its seq; alerts it
  // raises are handed to emit (and come back here to be kept in history).
  void OnEnvelope(const v1::Envelope& env, const EmitFn& emit);
  // Sets p.sha256 when the image's digest is known already (the detector
  // identifies the same process anyway, so this costs a cache lookup).
  void StampSha256(v1::Process& p);
  void OnLoss(absl::Time first, absl::Time last) { detector_->NoteLoss(first, last); }
  // A tc record (payload sample or orphan packet).
  void OnPacket(const PacketRecord& rec, const EmitFn& emit);
  // Judges waiting flows and the kernel's orphan counters (read by the caller).
  void InspectTick(absl::Time now, const std::vector<OrphanSource>& orphans, const EmitFn& emit);
  const Inspector& inspector() const { return *inspector_; }
  // Whether the tc probes run: without them the inspector's per-event
  // socket bookkeeping is skipped.
  void set_inspecting(bool on) { inspecting_ = on; }
  // Periodic work: history and baseline writes, dedup windows, retention,
  // learning status.
  void Tick(absl::Time now, const EmitFn& emit);
  // SIGHUP: a bad file is refused with its line and reason; the old set stays.
  void ReloadExceptions();
  // Final writes.
  absl::Status Close(const EmitFn& emit);
  v1::LearningStatus Learning(absl::Time now) const;

 private:
  Pipeline(const PipelineOptions& opts, const ProcessTable* table, const BootClock* clock);
  v1::ImageIdentity Identify(const v1::Process& p) { return Identified(p); }
  // The cached identity itself: valid until the next Identify/Identified
  // (which may move or clear the cache), so use it at once.
  const v1::ImageIdentity& Identified(const v1::Process& p);
  bool Excepted(const v1::Alert& a);
  void FlushHistory();
  static void EmitAlerts(std::vector<v1::Alert>& alerts, const EmitFn& emit);

  PipelineOptions opts_;
  const ProcessTable* table_;
  const BootClock* clock_;
  std::unique_ptr<Baseline> baseline_;
  std::unique_ptr<Detector> detector_;
  ProtocolTable protocols_;
  std::unique_ptr<Inspector> inspector_;
  uint64_t reported_inspect_dropped_ = 0;
  bool inspecting_ = false;
  std::unique_ptr<HistoryStore> history_;
  std::unique_ptr<ExceptionUsage> usage_;
  ExceptionSet exceptions_;
  Sha256Cache sha_;
  CgroupPaths cgroups_;
  StatModeCache stat_cache_;
  StatModeFn stat_ = stat_cache_.AsFn();
  // (pid, start) -> identity; cleared at exec and exit, bounded.
  absl::flat_hash_map<std::pair<uint32_t, uint64_t>, v1::ImageIdentity> identities_;
  HistoryBatch history_batch_;
  uint64_t history_dropped_ = 0;
  bool was_learning_ = false;
  absl::Time next_baseline_flush_;
  absl::Time next_retention_;
  absl::Time next_status_;
};

}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_PIPELINE_H_
