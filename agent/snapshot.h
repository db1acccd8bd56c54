// Start-up snapshot of the processes and sockets that already exist, so that
// connections opened before the agent attached its BPF programs can still be
// attributed to a process.

#ifndef SOCKWATCH_AGENT_SNAPSHOT_H_
#define SOCKWATCH_AGENT_SNAPSHOT_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sockwatch {

struct SnapshotProcess {
  uint32_t pid = 0, ppid = 0, uid = 0, gid = 0;
  // /proc/PID/stat field 22 (starttime, clock ticks since boot) converted to
  // nanoseconds, so it compares with CLOCK_BOOTTIME / bpf_ktime_get_boot_ns().
  uint64_t start_boottime_ns = 0;
  uint64_t parent_start_boottime_ns = 0;  // Same for ppid, 0 if unknown.
  std::string exe;           // readlink /proc/PID/exe minus " (deleted)".
  bool exe_deleted = false;  // readlink ended in " (deleted)".
  // /proc/PID/cmdline split on NUL; raw bytes, invalid UTF-8 kept as is.
  std::vector<std::string> argv;
  std::string comm;  // /proc/PID/comm without the newline.
  // st_ino of <cgroup2_mount>/<path of the "0::" line of /proc/PID/cgroup>,
  // which is what bpf_get_current_cgroup_id() reports; 0 if not found.
  uint64_t cgroup_id = 0;
};

// Every process (not thread) under proc_root. Processes that vanish mid-scan
// are skipped silently (a race, not an error); kernel threads are included
// with empty exe/argv. Fails only if proc_root itself cannot be listed.
// An empty cgroup2_mount leaves every cgroup_id at 0.
absl::StatusOr<std::vector<SnapshotProcess>> SnapshotProcesses(
    const std::string& cgroup2_mount, const std::string& proc_root = "/proc");

struct SnapshotSocket {
  uint8_t protocol = 0;  // IPPROTO_TCP or IPPROTO_UDP.
  uint16_t family = 0;   // AF_INET or AF_INET6.
  // Network byte order; IPv4 uses the first 4 bytes, the rest stay zero.
  std::array<uint8_t, 16> local_ip{}, remote_ip{};
  uint16_t local_port = 0, remote_port = 0;  // Host byte order.
  // Kernel TCP state number (1 ESTABLISHED ... 10 LISTEN); UDP sockets report
  // 7 (CLOSE) when unconnected and 1 (ESTABLISHED) when connected.
  uint8_t state = 0;
  uint32_t inode = 0;
  uint64_t cookie = 0;  // idiag_cookie[0] | idiag_cookie[1] << 32 (SO_COOKIE).
  uint32_t uid = 0;
  // Network namespace (inode of /proc/PID/ns/net) the socket lives in.
  uint32_t netns_ino = 0;
  // Every process holding an fd to the socket, sorted and unique.
  std::vector<uint32_t> pids;
};

// TCP (every state except TIME_WAIT, SYN_RECV and request socks) and UDP
// sockets, IPv4 and IPv6, of the caller's network namespace, read through
// NETLINK_SOCK_DIAG. Owners are resolved from proc_root/*/fd. Returns an
// error Status (carrying errno) if any netlink dump fails.
absl::StatusOr<std::vector<SnapshotSocket>> SnapshotSockets(
    const std::string& proc_root = "/proc");

// Socket inode -> pids (sorted, unique) holding an fd "socket:[inode]" in
// proc_root/PID/fd. Unreadable or vanished processes are skipped.
absl::flat_hash_map<uint32_t, std::vector<uint32_t>> SocketInodeOwners(
    const std::string& proc_root = "/proc");

namespace internal {

// Parses one recvmsg() worth of sock_diag dump replies to request `seq`,
// appending the IPv4/IPv6 sockets whose state bit is in `states` to `out`.
// Returns true once NLMSG_DONE arrives. Exposed so tests can feed it
// malformed bytes; every length is checked before it is read.
absl::StatusOr<bool> ParseSockDiagReplies(absl::string_view data, uint32_t seq,
                                          uint8_t protocol, uint32_t states,
                                          std::vector<SnapshotSocket>* out);

}  // namespace internal
}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_SNAPSHOT_H_
