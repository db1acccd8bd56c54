#include "agent/identity.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "agent/identity_internal.h"
#include "agent/text.h"

namespace sockwatch {
namespace {

using identity_internal::ScopedFd;

absl::StatusOr<std::string> HashFd(int fd, uint64_t max_bytes) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
    return absl::InternalError("EVP_DigestInit_ex(sha256) failed");
  std::vector<char> buf(1 << 16);
  uint64_t total = 0;
  while (true) {
    const ssize_t n = read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::ErrnoToStatus(errno, "read");
    if (n == 0) break;
    total += static_cast<uint64_t>(n);
    if (total > max_bytes) return absl::ResourceExhaustedError("file too big to hash");
    if (EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(n)) != 1)
      return absl::InternalError("EVP_DigestUpdate failed");
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), md, &len) != 1)
    return absl::InternalError("EVP_DigestFinal_ex failed");
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(md), len));
}

bool IsPathLike(absl::string_view exe) {
  return absl::StartsWith(exe, "/") && !absl::StartsWith(exe, "/memfd:");
}

// Whether the process behind proc_exe still runs exe: it may have exec'd
// since the event, and its new bytes must not be filed under the old path.
// Both sides name the file as seen in the process's mount namespace.
bool RunsImage(const std::string& proc_exe, absl::string_view exe) {
  if (exe.empty()) return true;
  char buf[PATH_MAX];
  const ssize_t n = readlink(proc_exe.c_str(), buf, sizeof(buf));
  if (n <= 0) return false;
  absl::string_view link(buf, static_cast<size_t>(n));
  absl::ConsumeSuffix(&link, " (deleted)");
  absl::ConsumeSuffix(&exe, " (deleted)");
  return link == exe;
}

}  // namespace

absl::StatusOr<std::string> Sha256Cache::Sha256File(const std::string& path) {
  ScopedFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd.valid()) return absl::ErrnoToStatus(errno, absl::StrCat("open ", path));
  return HashFd(fd.get(), UINT64_MAX);
}

Sha256Cache::Sha256Cache(Sha256CacheOptions opts)
    : opts_(std::move(opts)), worker_([this] { Run(); }) {}

Sha256Cache::~Sha256Cache() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  worker_.join();
}

std::optional<std::string> Sha256Cache::Lookup(uint32_t pid, absl::string_view exe) {
  struct stat st;
  bool ok = false;
  if (pid != 0) {
    const std::string proc_exe = absl::StrCat(opts_.proc_root, "/", pid, "/exe");
    ok = RunsImage(proc_exe, exe) && stat(proc_exe.c_str(), &st) == 0;
  }
  if (!ok && IsPathLike(exe)) ok = stat(std::string(exe).c_str(), &st) == 0;
  if (!ok || !S_ISREG(st.st_mode)) return std::nullopt;
  const Key key{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino),
                static_cast<uint64_t>(st.st_size),
                int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec};
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it != entries_.end()) {
    Entry& e = it->second;
    if (e.state == State::kDone) {
      Touch(e);
      NoteSeen(ValidUtf8(exe), e.digest);
      return e.digest;
    }
    if (e.state == State::kPending || absl::Now() < e.retry_after) return std::nullopt;
  }
  if (queue_.size() >= opts_.max_queue) {
    ++queue_drops_;  // not marked pending: a later sighting queues it again
    return std::nullopt;
  }
  if (it == entries_.end()) {
    lru_.push_front(key);
    it =
        entries_.emplace(key, Entry{State::kPending, "", absl::InfinitePast(), lru_.begin()}).first;
  } else {
    it->second.state = State::kPending;
    Touch(it->second);
  }
  queue_.push_back(Job{key, pid, std::string(exe)});
  EnforceBound();
  work_cv_.notify_one();
  return std::nullopt;
}

void Sha256Cache::Touch(Entry& e) {
  lru_.splice(lru_.begin(), lru_, e.lru);  // no allocation on the hot path
}

void Sha256Cache::EnforceBound() {
  while (entries_.size() > std::max<size_t>(opts_.max_entries, 1)) {
    entries_.erase(lru_.back());
    lru_.pop_back();
    ++evictions_;
  }
}

absl::StatusOr<std::string> Sha256Cache::Hash(const Job& job) const {
  // Only the file the key describes: the pid may have exec'd or been reused,
  // the path replaced, since Lookup.
  auto try_path = [&](const std::string& path) -> std::optional<absl::StatusOr<std::string>> {
    // O_NONBLOCK: if a FIFO took the path's place, fail instead of hanging the worker.
    ScopedFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
    struct stat st;
    auto same = [&] {
      return fstat(fd.get(), &st) == 0 && static_cast<uint64_t>(st.st_dev) == job.key.dev &&
             static_cast<uint64_t>(st.st_ino) == job.key.ino &&
             static_cast<uint64_t>(st.st_size) == job.key.size &&
             int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec == job.key.mtime_ns;
    };
    if (!fd.valid() || !same()) return std::nullopt;
    if (job.key.size > opts_.max_file_bytes)
      return absl::ResourceExhaustedError("file too big to hash");
    absl::StatusOr<std::string> digest = HashFd(fd.get(), opts_.max_file_bytes);
    if (digest.ok() && !same()) return absl::AbortedError("file changed while hashing");
    return digest;
  };
  if (job.pid != 0) {
    if (auto r = try_path(absl::StrCat(opts_.proc_root, "/", job.pid, "/exe"))) return *r;
  }
  if (IsPathLike(job.exe)) {
    if (auto r = try_path(job.exe)) return *r;
  }
  return absl::NotFoundError("file gone or changed before it was hashed");
}

void Sha256Cache::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    work_cv_.wait(lock, [this] { return stop_ || (!paused_ && !queue_.empty()); });
    if (stop_) return;
    Job job = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    lock.unlock();
    const absl::StatusOr<std::string> digest = Hash(job);
    lock.lock();
    Finish(job, digest);
    busy_ = false;
    if (queue_.empty()) idle_cv_.notify_all();
  }
}

void Sha256Cache::Finish(const Job& job, const absl::StatusOr<std::string>& digest) {
  auto [it, inserted] = entries_.try_emplace(job.key);
  if (inserted) {
    lru_.push_front(job.key);
    it->second.lru = lru_.begin();
  } else {
    Touch(it->second);
  }
  if (digest.ok()) {
    it->second.state = State::kDone;
    it->second.digest = *digest;
    NoteSeen(ValidUtf8(job.exe), *digest);
  } else {
    it->second.state = State::kError;
    it->second.retry_after = absl::Now() + opts_.error_ttl;
    ++read_errors_;
  }
  EnforceBound();
}

void Sha256Cache::NoteSeen(const std::string& path, const std::string& digest) {
  constexpr size_t kMaxPathsPerSha = 16;
  auto known = shas_by_path_.find(path);
  if (known != shas_by_path_.end() && known->second.latest == digest) return;  // the hot case
  if (shas_by_path_.size() >= opts_.max_entries || paths_by_sha_.size() >= opts_.max_entries) {
    shas_by_path_.clear();
    paths_by_sha_.clear();
    ++index_resets_;
  }
  PathShas& ps = shas_by_path_[path];
  if (!ps.latest.empty()) ps.before = std::move(ps.latest);
  ps.latest = digest;
  std::vector<std::string>& paths = paths_by_sha_[digest];
  if (paths.size() < kMaxPathsPerSha && std::find(paths.begin(), paths.end(), path) == paths.end())
    paths.push_back(path);
}

bool Sha256Cache::WaitIdle(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return idle_cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                           [this] { return queue_.empty() && !busy_; });
}

void Sha256Cache::SetPausedForTest(bool paused) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    paused_ = paused;
  }
  work_cv_.notify_all();
}

std::vector<std::string> Sha256Cache::PathsWithSha(absl::string_view sha) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = paths_by_sha_.find(std::string(sha));
  return it == paths_by_sha_.end() ? std::vector<std::string>() : it->second;
}

std::optional<std::string> Sha256Cache::PreviousShaForPath(absl::string_view path,
                                                           absl::string_view current_sha) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = shas_by_path_.find(std::string(path));
  if (it == shas_by_path_.end()) return std::nullopt;
  for (const std::string* sha : {&it->second.latest, &it->second.before}) {
    if (!sha->empty() && *sha != current_sha) return *sha;
  }
  return std::nullopt;
}

size_t Sha256Cache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}
uint64_t Sha256Cache::evictions() const {
  std::lock_guard<std::mutex> lock(mu_);
  return evictions_;
}
uint64_t Sha256Cache::queue_drops() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_drops_;
}
uint64_t Sha256Cache::read_errors() const {
  std::lock_guard<std::mutex> lock(mu_);
  return read_errors_;
}
uint64_t Sha256Cache::index_resets() const {
  std::lock_guard<std::mutex> lock(mu_);
  return index_resets_;
}

}  // namespace sockwatch
