// The local detectors of the "uncommon data flows" analytic: each network
// event is judged against the baseline, then recorded in it.
//   first_network_use         an image that never used the network does
//   new_behavior              a networked image does something it never did
//   new_listener              an image listens on a port it never listened on
//   suspicious_image_network  a deleted/memfd/hidden/world-writable image uses the
//                             network (fires even while learning)
#ifndef SOCKWATCH_AGENT_DETECTOR_H_
#define SOCKWATCH_AGENT_DETECTOR_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "agent/baseline.h"
#include "agent/decoder.h"
#include "agent/process_table.h"
#include "sockwatch/v1/event.pb.h"

namespace sockwatch {

struct DetectorOptions {
  // Repeats of one alert within this window are counted, not reported; a
  // summary with the count follows when the window closes.
  absl::Duration dedup_window = absl::Minutes(10);
  size_t max_dedup_entries = 100'000;
  // Alerts this close to a loss window say their verdict may be incomplete.
  absl::Duration loss_margin = absl::Seconds(5);
  std::string id_prefix;  // alert ids are <id_prefix>-<n>
};

class Detector {
 public:
  // Identity of a process (exe, sha256, script, container, suspicious marks).
  using Identify = std::function<v1::ImageIdentity(const v1::Process&)>;
  // True when a reviewed exception covers the alert (it is then not raised).
  using ExceptionHook = std::function<bool(const v1::Alert&)>;

  Detector(Baseline* baseline, const ProcessTable* table, const BootClock* clock, Identify identify,
           std::vector<Subnet> subnets, DetectorOptions opts = {});

  void set_exception_hook(ExceptionHook hook) { exception_hook_ = std::move(hook); }

  // Feeds one envelope; alerts it raises are appended to out.
  void Observe(const v1::Envelope& env, std::vector<v1::Alert>* out);
  // Raises an alert another detector built (protocol inspection): adds the
  // ancestry of its process (when it has one) and loss proximity, then
  // de-duplicates by key like the detector's own alerts.
  void RaiseFrom(v1::Alert alert, const std::string& dedup_key, absl::Time now, std::vector<v1::Alert>* out);
  // True, and the repeat counted, when key is inside its de-duplication
  // window: check before building an alert that costs something.
  bool Repeat(const std::string& dedup_key, absl::Time now);
  // Events were lost between first and last.
  void NoteLoss(absl::Time first, absl::Time last);
  // Emits the repeat summaries of de-duplication windows closed by now.
  void Tick(absl::Time now, std::vector<v1::Alert>* out);

  uint64_t raised() const { return raised_; }
  uint64_t deduplicated() const { return deduplicated_; }
  uint64_t excepted() const { return excepted_; }
  uint64_t dedup_evicted() const { return dedup_evicted_; }

 private:
  struct Window {
    absl::Time ends;
    v1::Alert last;  // the first occurrence, with the count, for the summary
  };

  void Raise(v1::Alert alert, const std::string& dedup_key, absl::Time now, std::vector<v1::Alert>* out);
  std::vector<v1::Process> Ancestors(const v1::Process& p) const;
  bool NearLoss(absl::Time t) const;

  Baseline* baseline_;
  const ProcessTable* table_;
  const BootClock* clock_;
  Identify identify_;
  std::vector<Subnet> subnets_;
  DetectorOptions opts_;
  ExceptionHook exception_hook_;
  absl::flat_hash_map<std::string, Window> windows_;
  std::deque<std::pair<absl::Time, absl::Time>> losses_;
  uint64_t next_id_ = 0;
  uint64_t raised_ = 0, deduplicated_ = 0, excepted_ = 0, dedup_evicted_ = 0;
};

}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_DETECTOR_H_
