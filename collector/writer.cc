#include "collector/writer.h"

#include <vector>

#include "absl/time/clock.h"

namespace sockwatch {

StoreWriter::StoreWriter(Store* store, size_t max_group_envelopes)
    : store_(store), max_group_envelopes_(max_group_envelopes), thread_([this] { Loop(); }) {}

void StoreWriter::Close() {
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

StoreWriter::~StoreWriter() { Close(); }

void StoreWriter::Submit(std::optional<v1::Hello> hello, std::unique_ptr<v1::Batch> batch,
                         Done done) {
  absl::MutexLock l(&mu_);
  queue_.push_back(Job{std::move(hello), std::move(batch), std::move(done)});
}

WriterStats StoreWriter::stats() const {
  absl::MutexLock l(&mu_);
  return stats_;
}

absl::Status StoreWriter::EnrichAlerts(std::vector<Job>& group) {
  std::optional<uint64_t> fleet_hosts;  // asked once per group, if there is an alert
  for (Job& j : group) {
    if (!j.batch) continue;
    for (v1::Envelope& e : *j.batch->mutable_envelopes()) {
      if (!e.has_alert()) continue;
      if (!fleet_hosts) {
        absl::StatusOr<uint64_t> hosts = store_->CountHosts();
        if (!hosts.ok()) return hosts.status();
        fleet_hosts = *hosts;
      }
      if (absl::Status s = AddFleetPrevalence(*store_, *fleet_hosts, e); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

void StoreWriter::Loop() {
  std::vector<Job> group;
  std::vector<const v1::Envelope*> envelopes;
  for (;;) {
    group.clear();
    envelopes.clear();
    {
      absl::MutexLock l(&mu_);
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stop_ || !queue_.empty(); };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping, nothing left
      // Everything queued, up to the group bound (at least one job).
      while (!queue_.empty()) {
        const size_t n = queue_.front().batch ? queue_.front().batch->envelopes_size() : 0;
        if (!group.empty() && envelopes.size() + n > max_group_envelopes_) break;
        group.push_back(std::move(queue_.front()));
        queue_.pop_front();
        if (group.back().batch)
          for (const v1::Envelope& e : group.back().batch->envelopes()) envelopes.push_back(&e);
      }
    }
    absl::Status status;
    const absl::Time now = absl::Now();
    std::vector<const v1::Hello*> hellos;
    for (const Job& j : group)
      if (j.hello) hellos.push_back(&*j.hello);
    if (!hellos.empty()) status = store_->UpsertHosts(hellos, now);
    if (status.ok()) status = EnrichAlerts(group);
    WriteResult result;
    if (status.ok() && !envelopes.empty()) {
      auto r = store_->Write(envelopes);
      if (r.ok())
        result = *r;
      else
        status = r.status();
    }
    {
      absl::MutexLock l(&mu_);
      stats_.stored += result.stored;
      stats_.duplicates += result.duplicates;
      ++(status.ok() ? stats_.commits : stats_.failed_commits);
    }
    for (Job& j : group)
      if (j.done) j.done(status);
  }
}

}  // namespace sockwatch
