// Group commit: one thread writes the batches of every stream to the store,
// many batches per transaction, and tells each stream once its batch is
// durable. Under load a commit carries the batches of many agents, so the
// store's per-transaction cost (fsync) is shared. Alerts get their fleet
// prevalence (store.h AddFleetPrevalence) just before they are written.
#ifndef SOCKWATCH_COLLECTOR_WRITER_H_
#define SOCKWATCH_COLLECTOR_WRITER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "collector/store.h"
#include "sockwatch/v1/ingest.pb.h"

namespace sockwatch {

struct WriterStats {
  uint64_t stored = 0;
  uint64_t duplicates = 0;
  uint64_t commits = 0;
  uint64_t failed_commits = 0;
};

class StoreWriter {
 public:
  // Called on the writer thread once the job is committed (or failed).
  using Done = std::function<void(const absl::Status&)>;

  StoreWriter(Store* store, size_t max_group_envelopes = 50000);
  // Writes what is queued, then stops (Close); stats stay readable.
  void Close();
  ~StoreWriter();

  // Queues a host's facts (if set) and a batch (if set).
  void Submit(std::optional<v1::Hello> hello, std::unique_ptr<v1::Batch> batch, Done done);

  WriterStats stats() const;

 private:
  struct Job {
    std::optional<v1::Hello> hello;
    std::unique_ptr<v1::Batch> batch;
    Done done;
  };
  void Loop();
  // Fleet prevalence into every alert of the group (AddFleetPrevalence).
  absl::Status EnrichAlerts(std::vector<Job>& group);

  Store* const store_;
  const size_t max_group_envelopes_;
  mutable absl::Mutex mu_;
  std::deque<Job> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  WriterStats stats_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace sockwatch

#endif  // SOCKWATCH_COLLECTOR_WRITER_H_
