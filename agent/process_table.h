// The agent's view of live processes: (pid, start time) -> image, argv, parent.
// Bounded in memory; exited processes linger for a grace period so events the
// kernel emitted before the exit (a handshake finishing in softirq) still
// find their owner.
#ifndef SOCKWATCH_AGENT_PROCESS_TABLE_H_
#define SOCKWATCH_AGENT_PROCESS_TABLE_H_

#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace sockwatch {

struct ProcInfo {
  uint32_t pid = 0;
  uint32_t ppid = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t start_ns = 0;  // CLOCK_BOOTTIME
  uint64_t parent_start_ns = 0;
  uint64_t cgroup_id = 0;
  std::string exe;
  std::string comm;
  std::vector<std::string> argv;  // raw bytes
  uint32_t argv_full_len = 0;
  bool argv_truncated = false;
  bool exe_deleted = false;
  bool exe_truncated = false;
  bool from_snapshot = false;
  bool exited = false;
  // exe, comm and every argv are valid UTF-8 (checked once, at insert, so
  // each event of the process can copy them as they are).
  bool text_valid = false;
};

class ProcessTable {
 public:
  // /proc reports start times in clock ticks; keys are compared at that grain
  // so snapshot entries and live ones (nanoseconds) agree.
  static constexpr uint64_t kTickNs = 10'000'000;

  explicit ProcessTable(size_t max_entries = 131072, uint64_t exit_grace_ns = 30'000'000'000ULL)
      : max_entries_(max_entries), exit_grace_ns_(exit_grace_ns) {}

  // exec or snapshot: replaces whatever the table had for (pid, start).
  void Upsert(ProcInfo info);
  // fork: the child starts with its parent's image and argv.
  void Fork(const ProcInfo& child_facts);
  // The process ended at now_ns; kept for the grace period.
  void Exit(uint32_t pid, uint64_t start_ns, uint64_t now_ns);
  // start_ns == 0 means "the newest process with this pid" (hooks that cannot
  // read the start time). nullptr when unknown.
  const ProcInfo* Find(uint32_t pid, uint64_t start_ns) const;
  // Drops exited entries whose grace has passed.
  void Expire(uint64_t now_ns);

  size_t size() const { return entries_.size(); }
  // Live entries dropped because the table was full (attribution lost).
  uint64_t evicted() const { return evicted_; }

 private:
  using Key = std::pair<uint32_t, uint64_t>;  // pid, start tick
  static Key KeyOf(uint32_t pid, uint64_t start_ns) { return {pid, start_ns / kTickNs}; }
  void MakeRoom();

  size_t max_entries_;
  uint64_t exit_grace_ns_;
  absl::flat_hash_map<Key, ProcInfo> entries_;
  absl::flat_hash_map<uint32_t, uint64_t> newest_;  // pid -> start tick
  std::deque<std::pair<uint64_t, Key>> exited_;     // exit time order
  uint64_t evicted_ = 0;
};

}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_PROCESS_TABLE_H_
