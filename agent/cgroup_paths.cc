#include "agent/identity.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/identity_internal.h"
#include "agent/text.h"

namespace sockwatch {
namespace {

using identity_internal::ScopedFd;

// Linux's FILEID_KERNFS: the handle is the 64-bit kernfs node id.
constexpr int kFileIdKernfs = 0xfe;

struct DirCloser {
  void operator()(DIR* dir) const { closedir(dir); }
};

bool IsHex(absl::string_view s) {
  return !s.empty() &&
         std::all_of(s.begin(), s.end(), [](char c) { return absl::ascii_isxdigit(c); });
}

}  // namespace

std::string ContainerIdFromCgroupPath(absl::string_view cgroup_path) {
  const std::vector<absl::string_view> parts = absl::StrSplit(cgroup_path, '/', absl::SkipEmpty());
  // Innermost first: a container's own sub-cgroups ("…/libpod-ID.scope/container")
  // and nested runtimes (docker inside lxc) resolve to the closest container.
  for (size_t k = parts.size(); k-- > 0;) {
    absl::string_view c = parts[k];
    const absl::string_view parent = k > 0 ? parts[k - 1] : "";
    if (absl::StartsWith(c, "lxc.monitor.")) return "";
    if (absl::ConsumePrefix(&c, "lxc.payload.") || parent == "lxc") {
      if (!c.empty()) return ValidUtf8(c);
      continue;
    }
    absl::string_view s = c;
    absl::ConsumeSuffix(&s, ".scope");
    if (absl::StartsWith(s, "crio-conmon-") || absl::StartsWith(s, "libpod-conmon-")) return "";
    for (absl::string_view prefix : {"docker-", "cri-containerd-", "crio-", "libpod-"}) {
      absl::string_view id = s;
      if (absl::ConsumePrefix(&id, prefix) && id.size() >= 12 && IsHex(id))
        return absl::AsciiStrToLower(id);
    }
    // cgroupfs drivers: /docker/ID, /kubepods/<qos>/pod<uid>/ID.
    if (IsHex(c) && (c.size() == 64 ||
                     (c.size() >= 12 && (parent == "docker" || absl::StartsWith(parent, "pod")))))
      return absl::AsciiStrToLower(c);
  }
  return "";
}

// ---- cgroup id -> path --------------------------------------------------

CgroupPaths::CgroupPaths(std::string mount, CgroupPathsOptions opts)
    : opts_(opts), use_handles_(opts.use_handles) {
  // readlink of an opened cgroup reports the canonical path; compare like with like.
  std::unique_ptr<char, decltype(&free)> real(realpath(mount.c_str(), nullptr), &free);
  mount_ = real ? std::string(real.get()) : std::move(mount);
  while (mount_.size() > 1 && mount_.back() == '/') mount_.pop_back();
  opts_.max_entries = std::max<size_t>(opts_.max_entries, 1);
  mount_fd_ = open(mount_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (mount_fd_ < 0 || !use_handles_) {
    use_handles_ = false;
    return;
  }
  // Probe once: a filesystem without kernfs handles, or no CAP_DAC_READ_SEARCH,
  // would otherwise look like "every id is unknown".
  struct stat st;
  use_handles_ = fstat(mount_fd_, &st) == 0 && ResolveByHandle(st.st_ino).has_value();
}

CgroupPaths::~CgroupPaths() {
  if (mount_fd_ >= 0) close(mount_fd_);
}

std::optional<std::string> CgroupPaths::ResolveByHandle(uint64_t cgroup_id) {
  alignas(file_handle) unsigned char buf[sizeof(file_handle) + sizeof(uint64_t)];
  auto* fh = reinterpret_cast<file_handle*>(buf);
  fh->handle_bytes = sizeof(uint64_t);
  fh->handle_type = kFileIdKernfs;
  memcpy(fh->f_handle, &cgroup_id, sizeof(cgroup_id));
  ScopedFd fd(open_by_handle_at(mount_fd_, fh, O_PATH | O_CLOEXEC));
  if (!fd.valid()) return std::nullopt;
  char target[PATH_MAX];
  const ssize_t n =
      readlink(absl::StrCat("/proc/self/fd/", fd.get()).c_str(), target, sizeof(target));
  if (n <= 0) return std::nullopt;
  absl::string_view path(target, static_cast<size_t>(n));
  if (mount_ == "/") return std::string(path);
  if (!absl::ConsumePrefix(&path, mount_)) return std::nullopt;
  if (path.empty()) return "/";
  if (path[0] != '/') return std::nullopt;  // a sibling like /sys/fs/cgroup2
  return std::string(path);
}

void CgroupPaths::Insert(uint64_t cgroup_id, std::string path) {
  if (cache_.size() >= opts_.max_entries && !cache_.contains(cgroup_id)) {
    cache_.clear();
    ++cache_clears_;
  }
  cache_[cgroup_id] = std::move(path);
}

std::optional<std::string> CgroupPaths::Walk(uint64_t wanted) {
  last_walk_ = absl::Now();
  // Bounded: a pathological tree costs at most this many stat calls per walk
  // (and walks are rate-limited).
  constexpr size_t kMaxWalkDirs = 1 << 20;
  std::optional<std::string> found;
  auto note = [&](uint64_t ino, const std::string& path) {
    if (ino == wanted) found = path;
    // Prime the cache, but never clear it mid-walk: that would only thrash.
    if (cache_.size() < opts_.max_entries) cache_.emplace(ino, ValidUtf8(path));
  };
  struct stat st;
  if (fstat(mount_fd_, &st) != 0) return std::nullopt;
  note(st.st_ino, "/");
  std::vector<std::string> todo = {""};
  size_t visited = 0;
  while (!todo.empty() && visited < kMaxWalkDirs) {
    const std::string rel = std::move(todo.back());
    todo.pop_back();
    std::unique_ptr<DIR, DirCloser> dir(opendir((mount_ + rel).c_str()));
    if (!dir) continue;
    while (const dirent* d = readdir(dir.get())) {
      if (d->d_type != DT_DIR && d->d_type != DT_UNKNOWN) continue;
      if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0) continue;
      if (fstatat(dirfd(dir.get()), d->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
          !S_ISDIR(st.st_mode))
        continue;
      std::string child = absl::StrCat(rel, "/", d->d_name);
      note(st.st_ino, child);
      todo.push_back(std::move(child));
      if (++visited >= kMaxWalkDirs) break;
    }
  }
  return found;
}

std::string CgroupPaths::Resolve(uint64_t cgroup_id) {
  if (auto it = cache_.find(cgroup_id); it != cache_.end()) return it->second;
  if (mount_fd_ < 0) return "";
  std::optional<std::string> path;
  if (use_handles_) {
    path = ResolveByHandle(cgroup_id);  // nullopt: removed already (ids are never reused)
  } else if (absl::Now() - last_walk_ >= opts_.rewalk_interval) {
    path = Walk(cgroup_id);
  }
  if (!path) return "";
  std::string valid = ValidUtf8(*path);  // cgroup names are any bytes; ours go into protos
  Insert(cgroup_id, valid);
  return valid;
}

std::string CgroupPaths::FindMount(const std::string& mounts_file) {
  std::ifstream in(mounts_file);
  std::string line;
  while (std::getline(in, line)) {
    const std::vector<absl::string_view> f = absl::StrSplit(line, ' ');
    if (f.size() < 3 || f[2] != "cgroup2") continue;
    std::string out;  // /proc/mounts escapes space, tab, newline and '\' as \ooo
    for (size_t i = 0; i < f[1].size(); ++i) {
      if (f[1][i] == '\\' && i + 3 < f[1].size() &&
          std::all_of(f[1].begin() + i + 1, f[1].begin() + i + 4,
                      [](char c) { return c >= '0' && c <= '7'; })) {
        out += static_cast<char>((f[1][i + 1] - '0') * 64 + (f[1][i + 2] - '0') * 8 +
                                 (f[1][i + 3] - '0'));
        i += 3;
      } else {
        out += f[1][i];
      }
    }
    return out;
  }
  return "";
}

}  // namespace sockwatch
