// The identity of what ran, as the detectors' baseline keys it: for an
// interpreter the script (or inline code) matters more than the interpreter
// binary, so "python3 a.py" and "python3 b.py" are different images. Also the
// facts that make an image suspicious, its container, and its SHA-256
// (computed off the event path: hashing a binary must never stall decoding).
#ifndef SOCKWATCH_AGENT_IDENTITY_H_
#define SOCKWATCH_AGENT_IDENTITY_H_

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "sockwatch/v1/event.pb.h"

namespace sockwatch {

// True when exe's basename is an interpreter ClassifyImage knows: python,
// perl, ruby, node, php (each with an optional version suffix), sh, bash,
// dash, zsh, ksh, java. /usr/bin/env is not one: by the time a socket exists
// env has exec'd the real interpreter, which gets its own exec event.
bool IsInterpreter(absl::string_view exe);

// Fills exe, interpreter, script, inline_code and key (sha256, container and
// marks come from the other helpers). argv[0] is the program name. Relative
// scripts are made absolute against cwd (when given, absolute) and normalized
// lexically. Keys: exe; exe|SCRIPT; exe|-m MODULE (python); exe|-c (the
// inline-code flag, long node forms folded to -e/-p); exe|- for stdin; java
// without a main class or jar keys as exe. All strings are valid UTF-8;
// inline code is capped at 4 KiB plus "…".
v1::ImageIdentity ClassifyImage(absl::string_view exe, absl::Span<const std::string> argv,
                                absl::string_view cwd = "");

// The container id in a cgroup path (docker, containerd, kubepods, cri-o,
// podman; the name for lxc), innermost first; "" on the host. conmon scopes
// are runtime monitors on the host, so they yield "".
std::string ContainerIdFromCgroupPath(absl::string_view cgroup_path);

struct CgroupPathsOptions {
  size_t max_entries = 65536;
  // false forces the directory walk (tests; kernels without kernfs handles).
  bool use_handles = true;
  // A miss re-walks the tree at most this often (walk mode only).
  absl::Duration rewalk_interval = absl::Seconds(5);
};

// cgroup v2 id (kernfs node id == inode number, as bpf_get_current_cgroup_id
// reports it) -> path relative to the cgroup2 mount ("/" for the root).
// Not thread-safe: one owner, the event loop.
class CgroupPaths {
 public:
  explicit CgroupPaths(std::string mount, CgroupPathsOptions opts = {});
  ~CgroupPaths();
  CgroupPaths(const CgroupPaths&) = delete;
  CgroupPaths& operator=(const CgroupPaths&) = delete;

  // Valid UTF-8 (cgroup names are any bytes); "" when the id is unknown
  // (cgroup removed, mount unusable).
  std::string Resolve(uint64_t cgroup_id);

  // The first cgroup2 mount point in mounts_file; "" when there is none.
  static std::string FindMount(const std::string& mounts_file = "/proc/mounts");

  bool using_handles() const { return use_handles_; }
  size_t size() const { return cache_.size(); }
  // Times the cache was full and cleared.
  uint64_t cache_clears() const { return cache_clears_; }

 private:
  std::optional<std::string> ResolveByHandle(uint64_t cgroup_id);
  // Walks the whole tree (priming the cache) and returns wanted's path.
  std::optional<std::string> Walk(uint64_t wanted);
  void Insert(uint64_t cgroup_id, std::string path);

  std::string mount_;  // canonical, no trailing slash
  CgroupPathsOptions opts_;
  int mount_fd_ = -1;
  bool use_handles_;
  absl::Time last_walk_ = absl::InfinitePast();
  absl::flat_hash_map<uint64_t, std::string> cache_;
  uint64_t cache_clears_ = 0;
};

// The mode bits of path (following symlinks), nullopt when it cannot be stat'd.
using StatModeFn = std::function<std::optional<mode_t>(const std::string& path)>;
std::optional<mode_t> StatMode(const std::string& path);

// StatMode, remembered for a while: the directories on executable paths
// rarely change mode, and a stat() per path component on every exec was most
// of the detection pipeline's cost. Not thread-safe; bounded (cleared when
// full).
class StatModeCache {
 public:
  explicit StatModeCache(absl::Duration ttl = absl::Seconds(10), size_t max_entries = 16384)
      : ttl_(ttl), max_entries_(max_entries) {}
  std::optional<mode_t> operator()(const std::string& path);
  // A StatModeFn reading through this cache (which must outlive it).
  StatModeFn AsFn() {
    return [this](const std::string& path) { return (*this)(path); };
  }

 private:
  absl::Duration ttl_;
  size_t max_entries_;
  absl::flat_hash_map<std::string, std::pair<std::optional<mode_t>, absl::Time>> entries_;
};

// Why an image looks planted: "deleted" (and not memfd), "memfd",
// "world_writable_dir" (any ancestor directory is o+w, sticky or not),
// "hidden_dir" (any directory component starts with '.'), in that order.
std::vector<std::string> SuspiciousMarks(absl::string_view exe, bool exe_deleted,
                                         const StatModeFn& stat_mode = StatMode);

struct Sha256CacheOptions {
  size_t max_entries = 4096;  // digests (and remembered errors) kept, LRU
  size_t max_queue = 256;     // files waiting for the worker
  // A file that could not be read is not retried for this long.
  absl::Duration error_ttl = absl::Seconds(60);
  // Bigger files are not hashed (an error), so one huge file cannot hog the worker.
  uint64_t max_file_bytes = uint64_t{1} << 30;
  std::string proc_root = "/proc";
};

// SHA-256 of executables keyed by (st_dev, st_ino, mtime ns, size), hashed by
// one background thread. Thread-safe.
class Sha256Cache {
 public:
  explicit Sha256Cache(Sha256CacheOptions opts = {});
  ~Sha256Cache();  // stops and joins the worker
  Sha256Cache(const Sha256Cache&) = delete;
  Sha256Cache& operator=(const Sha256Cache&) = delete;

  // The lowercase hex digest when known; else queues the file and returns
  // nullopt. The file is read through /proc/<pid>/exe while pid still runs exe
  // (so deleted, memfd and other-namespace images hash), else exe's path in
  // the agent's mount namespace (pid 0: no process). Caveat: for a process in
  // a container that has exited, that path names the host's file, if any.
  // Costs a readlink and a stat or two; never reads the file.
  std::optional<std::string> Lookup(uint32_t pid, absl::string_view exe);
  // Test hook: true once the queue is empty and the worker idle.
  bool WaitIdle(absl::Duration timeout);
  // Test hook: a paused worker takes no jobs (to fill the queue at will).
  void SetPausedForTest(bool paused);

  // Exe paths this run saw with these bytes, oldest first.
  std::vector<std::string> PathsWithSha(absl::string_view sha) const;
  // The digest path had before current_sha this run, if any ("new bytes under
  // a known path").
  std::optional<std::string> PreviousShaForPath(absl::string_view path,
                                                absl::string_view current_sha) const;

  size_t size() const;
  uint64_t evictions() const;
  uint64_t queue_drops() const;
  uint64_t read_errors() const;
  // Times the path/digest index was full and cleared.
  uint64_t index_resets() const;

  static absl::StatusOr<std::string> Sha256File(const std::string& path);

 private:
  struct Key {
    uint64_t dev = 0, ino = 0, size = 0;
    int64_t mtime_ns = 0;
    bool operator==(const Key& o) const {
      return dev == o.dev && ino == o.ino && size == o.size && mtime_ns == o.mtime_ns;
    }
    template <typename H>
    friend H AbslHashValue(H h, const Key& k) {
      return H::combine(std::move(h), k.dev, k.ino, k.size, k.mtime_ns);
    }
  };
  enum class State { kPending, kDone, kError };
  struct Entry {
    State state = State::kPending;
    std::string digest;
    absl::Time retry_after;  // kError only
    std::list<Key>::iterator lru;
  };
  struct Job {
    Key key;
    uint32_t pid;
    std::string exe;
  };
  struct PathShas {
    std::string latest, before;
  };

  void Run();
  absl::StatusOr<std::string> Hash(const Job& job) const;
  void Finish(const Job& job, const absl::StatusOr<std::string>& digest);
  void Touch(Entry& e);
  void EnforceBound();
  void NoteSeen(const std::string& path, const std::string& digest);

  const Sha256CacheOptions opts_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_, idle_cv_;
  absl::flat_hash_map<Key, Entry> entries_;
  std::list<Key> lru_;  // front = most recent
  std::deque<Job> queue_;
  bool busy_ = false, paused_ = false, stop_ = false;
  absl::flat_hash_map<std::string, std::vector<std::string>> paths_by_sha_;
  absl::flat_hash_map<std::string, PathShas> shas_by_path_;
  uint64_t evictions_ = 0, queue_drops_ = 0, read_errors_ = 0, index_resets_ = 0;
  std::thread worker_;  // last: starts once everything above exists
};

}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_IDENTITY_H_
