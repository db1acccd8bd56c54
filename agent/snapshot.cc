#include "agent/snapshot.h"

#include <dirent.h>
#include <sched.h>
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace sockwatch {
namespace {

// Owns a file descriptor and closes it when it goes out of scope.
class ScopedFd {
 public:
  explicit ScopedFd(int fd) : fd_(fd) {}
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_;
};

struct DirCloser {
  void operator()(DIR* dir) const { closedir(dir); }
};
using ScopedDir = std::unique_ptr<DIR, DirCloser>;

constexpr uint64_t kNsPerSec = 1'000'000'000;
// Caps what one /proc file may cost us; cmdline is the only big one and a
// megabyte of argv is already far more than any attribution needs.
constexpr size_t kMaxProcFileBytes = 1 << 20;
// Kernel dump skbs are capped at 32 KiB; twice that leaves headroom, and
// MSG_TRUNC is still checked in case a future kernel sends more.
constexpr size_t kNetlinkBufferBytes = 64 * 1024;
constexpr absl::string_view kDeletedSuffix = " (deleted)";

// TCP states 1 (ESTABLISHED) .. 11 (CLOSING), minus TIME_WAIT and SYN_RECV:
// asking for SYN_RECV makes the kernel also dump request socks (which have no
// inode or owner), and TIME_WAIT socks belong to no process either.
constexpr uint32_t kTcpStates =
    0xFFEu & ~((1u << TCP_TIME_WAIT) | (1u << TCP_SYN_RECV));
// UDP sockets only ever report CLOSE (unconnected) or ESTABLISHED (connected).
constexpr uint32_t kUdpStates = (1u << TCP_ESTABLISHED) | (1u << TCP_CLOSE);

// /proc files report st_size 0, so read until EOF (or the cap).
bool ReadFile(const std::string& path, std::string* out) {
  out->clear();
  ScopedFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return false;
  char buf[4096];
  while (out->size() < kMaxProcFileBytes) {
    const ssize_t n = read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) break;
    out->append(buf, std::min<size_t>(n, kMaxProcFileBytes - out->size()));
  }
  return true;
}

bool ReadLinkAt(int dir_fd, const char* name, std::string* out) {
  char buf[PATH_MAX];
  const ssize_t n = readlinkat(dir_fd, name, buf, sizeof(buf));
  if (n < 0) return false;
  out->assign(buf, static_cast<size_t>(n));
  return true;
}

// Numeric directory names only; "self", "net", etc. are not processes.
bool ParsePid(absl::string_view name, uint32_t* pid) {
  return !name.empty() && absl::ascii_isdigit(name.front()) &&
         absl::ascii_isdigit(name.back()) && absl::SimpleAtoi(name, pid) &&
         *pid != 0;
}

// readdir of proc_root lists thread-group leaders only; threads live under
// PID/task, so this is exactly the process list.
absl::StatusOr<std::vector<uint32_t>> ListPids(const std::string& proc_root) {
  ScopedDir dir(opendir(proc_root.c_str()));
  if (dir == nullptr) {
    return absl::ErrnoToStatus(errno, absl::StrCat("opendir ", proc_root));
  }
  std::vector<uint32_t> pids;
  while (const dirent* entry = readdir(dir.get())) {
    uint32_t pid = 0;
    if (ParsePid(entry->d_name, &pid)) pids.push_back(pid);
  }
  return pids;
}

// comm (field 2) may contain spaces and ')', so fields are counted from the
// last ')' rather than split from the start.
bool ParseStat(absl::string_view stat, uint32_t* ppid, uint64_t* start_ticks) {
  const size_t close_paren = stat.rfind(')');
  if (close_paren == absl::string_view::npos) return false;
  std::vector<absl::string_view> fields = absl::StrSplit(
      stat.substr(close_paren + 1), absl::ByAnyChar(" \n"), absl::SkipEmpty());
  // fields[0] is field 3 (state): ppid is field 4, starttime field 22.
  if (fields.size() < 20) return false;
  return absl::SimpleAtoi(fields[1], ppid) &&
         absl::SimpleAtoi(fields[19], start_ticks);
}

// The real uid/gid: first of the four ids on the "Uid:" / "Gid:" lines. (The
// owner of /proc/PID is not usable: it is root for non-dumpable processes.)
bool ParseStatus(absl::string_view status, uint32_t* uid, uint32_t* gid) {
  int found = 0;
  for (absl::string_view line : absl::StrSplit(status, '\n')) {
    uint32_t* target = absl::ConsumePrefix(&line, "Uid:")   ? uid
                       : absl::ConsumePrefix(&line, "Gid:") ? gid
                                                            : nullptr;
    if (target == nullptr) continue;
    std::vector<absl::string_view> ids =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (!ids.empty() && absl::SimpleAtoi(ids[0], target)) {
      found |= target == uid ? 1 : 2;
    }
  }
  return found == 3;
}

std::vector<std::string> SplitCmdline(absl::string_view raw) {
  if (raw.empty()) return {};  // Kernel thread or zombie.
  // Arguments are NUL-terminated, not NUL-separated; a process that rewrote
  // its argv may have dropped the final NUL, so remove it only if present.
  absl::ConsumeSuffix(&raw, absl::string_view("\0", 1));
  return absl::StrSplit(raw, '\0');
}

// st_ino of the cgroup2 directory equals the kernel cgroup id, i.e. what
// bpf_get_current_cgroup_id() returns for the process's tasks.
uint64_t CgroupId(const std::string& cgroup2_mount, absl::string_view file) {
  for (absl::string_view line : absl::StrSplit(file, '\n')) {
    if (!absl::ConsumePrefix(&line, "0::") || line.empty()) continue;
    struct stat st;
    if (stat(absl::StrCat(cgroup2_mount, line).c_str(), &st) != 0) return 0;
    return st.st_ino;
  }
  return 0;
}

// Split so that ticks * 1e9 cannot overflow even after centuries of uptime.
uint64_t TicksToNs(uint64_t ticks, uint64_t hz) {
  return ticks / hz * kNsPerSec + ticks % hz * kNsPerSec / hz;
}

uint64_t ClockTicksPerSecond() {
  const long hz = sysconf(_SC_CLK_TCK);
  return hz > 0 ? static_cast<uint64_t>(hz) : 100;  // USER_HZ fallback.
}

// Reads one process; false if it vanished (or is otherwise unreadable).
bool ReadProcess(const std::string& proc_root, uint32_t pid,
                 const std::string& cgroup2_mount, uint64_t hz,
                 SnapshotProcess* p) {
  const std::string dir = absl::StrCat(proc_root, "/", pid);
  std::string buf;
  uint64_t start_ticks = 0;
  if (!ReadFile(dir + "/stat", &buf) ||
      !ParseStat(buf, &p->ppid, &start_ticks)) {
    return false;
  }
  if (!ReadFile(dir + "/status", &buf) || !ParseStatus(buf, &p->uid, &p->gid)) {
    return false;
  }
  p->pid = pid;
  p->start_boottime_ns = TicksToNs(start_ticks, hz);
  // The rest is best effort: kernel threads and zombies have no exe and an
  // empty cmdline, and a process exiting now still deserves its entry.
  if (ReadLinkAt(AT_FDCWD, (dir + "/exe").c_str(), &p->exe) &&
      absl::EndsWith(p->exe, kDeletedSuffix)) {
    p->exe.resize(p->exe.size() - kDeletedSuffix.size());
    p->exe_deleted = true;
  }
  if (ReadFile(dir + "/cmdline", &buf)) p->argv = SplitCmdline(buf);
  if (ReadFile(dir + "/comm", &buf)) {
    p->comm = std::string(absl::StripSuffix(buf, "\n"));
  }
  if (!cgroup2_mount.empty() && ReadFile(dir + "/cgroup", &buf)) {
    p->cgroup_id = CgroupId(cgroup2_mount, buf);
  }
  return true;
}

// Maps a netlink error code (a negative errno) to a Status.
absl::Status NetlinkError(int err) {
  const int errnum = (err < 0 && err > -4096) ? -err : EIO;
  return absl::ErrnoToStatus(errnum, "netlink error");
}

// Returns false (skip) for families other than IPv4/IPv6.
bool ToSnapshotSocket(const inet_diag_msg& m, uint8_t protocol,
                      SnapshotSocket* s) {
  if (m.idiag_family != AF_INET && m.idiag_family != AF_INET6) return false;
  const size_t ip_len = m.idiag_family == AF_INET ? 4 : 16;
  s->protocol = protocol;
  s->family = m.idiag_family;
  // idiag_src/dst are __be32 words, so a byte copy keeps network order.
  std::memcpy(s->local_ip.data(), m.id.idiag_src, ip_len);
  std::memcpy(s->remote_ip.data(), m.id.idiag_dst, ip_len);
  s->local_port = ntohs(m.id.idiag_sport);
  s->remote_port = ntohs(m.id.idiag_dport);
  s->state = m.idiag_state;
  s->inode = m.idiag_inode;
  // Same split as the kernel's sock_diag_save_cookie(), so this equals
  // SO_COOKIE and bpf_get_socket_cookie().
  s->cookie = static_cast<uint64_t>(m.id.idiag_cookie[0]) |
              static_cast<uint64_t>(m.id.idiag_cookie[1]) << 32;
  s->uid = m.idiag_uid;
  return true;
}

struct DumpSpec {
  uint8_t family, protocol;
  uint32_t states;
  const char* name;  // For error messages.
};

// Runs one SOCK_DIAG_BY_FAMILY dump to completion, appending to `out`.
absl::Status DumpSockets(int fd, const DumpSpec& spec, uint32_t seq,
                         std::vector<SnapshotSocket>* out) {
  struct {
    nlmsghdr nlh;
    inet_diag_req_v2 req;
  } request{};
  request.nlh.nlmsg_len = sizeof(request);
  request.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  request.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  request.nlh.nlmsg_seq = seq;
  request.req.sdiag_family = spec.family;
  request.req.sdiag_protocol = spec.protocol;
  request.req.idiag_states = spec.states;

  const std::string what = absl::StrCat("sock_diag dump ", spec.name);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  ssize_t sent;
  do {
    sent = sendto(fd, &request, sizeof(request), 0,
                  reinterpret_cast<const sockaddr*>(&kernel), sizeof(kernel));
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) return absl::ErrnoToStatus(errno, what + ": sendto");
  if (static_cast<size_t>(sent) != sizeof(request)) {
    return absl::InternalError(what + ": short sendto");
  }

  std::vector<char> buf(kNetlinkBufferBytes);
  for (;;) {
    sockaddr_nl from{};
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_name = &from;
    msg.msg_namelen = sizeof(from);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    const ssize_t n = recvmsg(fd, &msg, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return absl::DeadlineExceededError(what + ": no reply from the kernel");
    }
    if (n < 0) return absl::ErrnoToStatus(errno, what + ": recvmsg");
    if (msg.msg_flags & MSG_TRUNC) {
      return absl::InternalError(what + ": netlink reply truncated");
    }
    if (from.nl_pid != 0) continue;  // Only the kernel may answer.
    absl::StatusOr<bool> done = internal::ParseSockDiagReplies(
        absl::string_view(buf.data(), static_cast<size_t>(n)), seq,
        spec.protocol, spec.states, out);
    if (!done.ok()) {
      return absl::Status(done.status().code(),
                          absl::StrCat(what, ": ", done.status().message()));
    }
    if (*done) return absl::OkStatus();
  }
}

}  // namespace

namespace internal {

absl::StatusOr<bool> ParseSockDiagReplies(absl::string_view data, uint32_t seq,
                                          uint8_t protocol, uint32_t states,
                                          std::vector<SnapshotSocket>* out) {
  while (data.size() >= sizeof(nlmsghdr)) {
    // memcpy rather than casts: the bytes are untrusted and a read through a
    // misaligned struct pointer would be undefined behaviour.
    nlmsghdr h;
    std::memcpy(&h, data.data(), sizeof(h));
    if (h.nlmsg_len < sizeof(h) || h.nlmsg_len > data.size()) {
      return absl::InternalError("malformed netlink message length");
    }
    const absl::string_view payload =
        data.substr(NLMSG_HDRLEN, h.nlmsg_len - NLMSG_HDRLEN);
    // NLMSG_ALIGN in size_t: the macro's 32-bit arithmetic could wrap to 0.
    const size_t aligned_len = (size_t{h.nlmsg_len} + 3) & ~size_t{3};
    data.remove_prefix(std::min(data.size(), aligned_len));
    if (h.nlmsg_seq != seq) continue;  // Stale reply to an earlier request.

    int err = 0;
    if (h.nlmsg_type == NLMSG_DONE) {
      // A dump that failed midway reports its error in the DONE payload.
      if (payload.size() >= sizeof(err)) {
        std::memcpy(&err, payload.data(), sizeof(err));
      }
      if (err < 0) return NetlinkError(err);
      return true;
    }
    if (h.nlmsg_type == NLMSG_ERROR) {
      if (payload.size() < sizeof(err)) {
        return absl::InternalError("short NLMSG_ERROR");
      }
      std::memcpy(&err, payload.data(), sizeof(err));
      if (err == 0) continue;  // An ACK, not an error.
      return NetlinkError(err);
    }
    if (h.nlmsg_type != SOCK_DIAG_BY_FAMILY) continue;  // E.g. NLMSG_NOOP.
    inet_diag_msg m;
    if (payload.size() < sizeof(m)) {
      return absl::InternalError("short inet_diag_msg");
    }
    std::memcpy(&m, payload.data(), sizeof(m));
    // The kernel already filters by state; re-check so that nothing we asked
    // to exclude slips in.
    if (m.idiag_state >= 32 || !(states & (1u << m.idiag_state))) continue;
    SnapshotSocket s;
    if (ToSnapshotSocket(m, protocol, &s)) out->push_back(std::move(s));
  }
  return false;  // More parts of the dump follow.
}

}  // namespace internal

absl::StatusOr<std::vector<SnapshotProcess>> SnapshotProcesses(
    const std::string& cgroup2_mount, const std::string& proc_root) {
  absl::StatusOr<std::vector<uint32_t>> pids = ListPids(proc_root);
  if (!pids.ok()) return pids.status();
  const uint64_t hz = ClockTicksPerSecond();
  std::vector<SnapshotProcess> procs;
  procs.reserve(pids->size());
  for (uint32_t pid : *pids) {
    SnapshotProcess p;
    if (ReadProcess(proc_root, pid, cgroup2_mount, hz, &p)) {
      procs.push_back(std::move(p));
    }
  }
  // Parent start times come from this same scan; a parent that vanished
  // before we read it stays 0 ("unknown").
  absl::flat_hash_map<uint32_t, uint64_t> start_by_pid;
  for (const SnapshotProcess& p : procs) {
    start_by_pid[p.pid] = p.start_boottime_ns;
  }
  for (SnapshotProcess& p : procs) {
    auto it = start_by_pid.find(p.ppid);
    if (it != start_by_pid.end()) p.parent_start_boottime_ns = it->second;
  }
  return procs;
}

absl::flat_hash_map<uint32_t, std::vector<uint32_t>> SocketInodeOwners(
    const std::string& proc_root) {
  absl::flat_hash_map<uint32_t, std::vector<uint32_t>> owners;
  absl::StatusOr<std::vector<uint32_t>> pids = ListPids(proc_root);
  if (!pids.ok()) return owners;
  std::string target;
  for (uint32_t pid : *pids) {
    const std::string fd_dir = absl::StrCat(proc_root, "/", pid, "/fd");
    ScopedDir dir(opendir(fd_dir.c_str()));
    if (dir == nullptr) continue;  // Vanished, or not ours to read.
    while (const dirent* entry = readdir(dir.get())) {
      if (entry->d_name[0] == '.') continue;
      if (!ReadLinkAt(dirfd(dir.get()), entry->d_name, &target)) continue;
      absl::string_view link = target;
      uint32_t inode = 0;
      if (absl::ConsumePrefix(&link, "socket:[") &&
          absl::ConsumeSuffix(&link, "]") && absl::SimpleAtoi(link, &inode)) {
        owners[inode].push_back(pid);
      }
    }
  }
  // A process may hold several fds (dup, SCM_RIGHTS) to the same socket.
  for (auto& [inode, owner_pids] : owners) {
    std::sort(owner_pids.begin(), owner_pids.end());
    owner_pids.erase(std::unique(owner_pids.begin(), owner_pids.end()),
                     owner_pids.end());
  }
  return owners;
}

namespace {

// The four dumps of the network namespace the calling thread is in.
absl::StatusOr<std::vector<SnapshotSocket>> DumpCurrentNamespace(uint32_t netns_ino) {
  ScopedFd fd(socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!fd.valid()) {
    return absl::ErrnoToStatus(errno, "socket(AF_NETLINK, NETLINK_SOCK_DIAG)");
  }
  // The kernel always ends a dump, but a bound on the wait keeps agent
  // start-up from hanging forever if something goes badly wrong.
  const timeval timeout{10, 0};
  if (setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout,
                 sizeof(timeout)) != 0) {
    return absl::ErrnoToStatus(errno, "setsockopt(SO_RCVTIMEO)");
  }
  // One dump per (family, protocol): sock_diag has no AF_UNSPEC handler.
  constexpr DumpSpec kDumps[] = {
      {AF_INET, IPPROTO_TCP, kTcpStates, "tcp4"},
      {AF_INET6, IPPROTO_TCP, kTcpStates, "tcp6"},
      {AF_INET, IPPROTO_UDP, kUdpStates, "udp4"},
      {AF_INET6, IPPROTO_UDP, kUdpStates, "udp6"},
  };
  std::vector<SnapshotSocket> sockets;
  uint32_t seq = 0;
  for (const DumpSpec& spec : kDumps) {
    absl::Status status = DumpSockets(fd.get(), spec, ++seq, &sockets);
    if (!status.ok()) return status;
  }
  for (SnapshotSocket& s : sockets) s.netns_ino = netns_ino;
  return sockets;
}

uint32_t NetnsInode(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? static_cast<uint32_t>(st.st_ino) : 0;
}

}  // namespace

absl::StatusOr<std::vector<SnapshotSocket>> SnapshotSockets(
    const std::string& proc_root) {
  // Containers live in network namespaces of their own: dump each one seen in
  // /proc, from a thread that joins it (setns moves only the calling thread).
  const uint32_t own_ns = NetnsInode(proc_root + "/self/ns/net");
  absl::flat_hash_map<uint32_t, std::string> namespaces;  // inode -> ns path
  auto pids = ListPids(proc_root);
  if (pids.ok()) {
    for (uint32_t pid : *pids) {
      std::string path = absl::StrCat(proc_root, "/", pid, "/ns/net");
      const uint32_t ino = NetnsInode(path);
      if (ino != 0 && ino != own_ns) namespaces.emplace(ino, std::move(path));
    }
  }
  auto own = DumpCurrentNamespace(own_ns);
  if (!own.ok()) return own.status();
  std::vector<SnapshotSocket> sockets = std::move(*own);
  for (const auto& [ino, path] : namespaces) {
    absl::StatusOr<std::vector<SnapshotSocket>> found =
        absl::InternalError("not run");
    std::thread t([&, ino = ino, path = path] {
      ScopedFd ns(open(path.c_str(), O_RDONLY | O_CLOEXEC));
      if (!ns.valid() || setns(ns.get(), CLONE_NEWNET) != 0) {
        found = absl::ErrnoToStatus(errno, absl::StrCat("join ", path));
        return;
      }
      found = DumpCurrentNamespace(ino);
    });
    t.join();
    // A namespace that vanished mid-scan is a race, not an error.
    if (found.ok())
      sockets.insert(sockets.end(), found->begin(), found->end());
  }
  // Owners are read after the dumps so that sockets created during them are
  // not left without their pids.
  const auto owners = SocketInodeOwners(proc_root);
  for (SnapshotSocket& s : sockets) {
    if (s.inode == 0) continue;  // Not (or no longer) attached to a file.
    auto it = owners.find(s.inode);
    if (it != owners.end()) s.pids = it->second;
  }
  return sockets;
}

}  // namespace sockwatch
