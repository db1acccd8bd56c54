#include "agent/host.h"

#include <sys/mount.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace sockwatch {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

std::string KernelRelease() {
  utsname u;
  return uname(&u) == 0 ? u.release : "";
}

std::string Hostname() {
  char buf[256] = {};
  gethostname(buf, sizeof(buf) - 1);
  return buf;
}

std::string HostId() {
  std::string id(absl::StripAsciiWhitespace(ReadFile("/etc/machine-id")));
  return id.empty() ? Hostname() : id;
}

absl::StatusOr<std::string> FindCgroup2Mount(absl::string_view proc_mounts) {
  for (absl::string_view line : absl::StrSplit(proc_mounts, '\n')) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ');
    if (f.size() >= 3 && f[2] == "cgroup2") return std::string(f[1]);
  }
  return absl::FailedPreconditionError(
      "no cgroup v2 mount in /proc/mounts: the UDP and socket hooks attach to it; mount it with "
      "`mount -t cgroup2 none /sys/fs/cgroup/unified` (or boot with systemd.unified_cgroup_hierarchy)");
}

bool KernelAtLeast(absl::string_view release, int major, int minor) {
  std::vector<absl::string_view> parts = absl::StrSplit(release, absl::MaxSplits('.', 2));
  int ma = 0, mi = 0;
  if (parts.size() < 2 || !absl::SimpleAtoi(parts[0], &ma)) return false;
  absl::string_view m = parts[1];
  size_t digits = 0;
  while (digits < m.size() && absl::ascii_isdigit(m[digits])) ++digits;
  if (!absl::SimpleAtoi(m.substr(0, digits), &mi)) return false;
  return ma > major || (ma == major && mi >= minor);
}

absl::StatusOr<HostPrereqs> CheckHost() {
  if (geteuid() != 0)
    return absl::PermissionDeniedError(
        "must run as root (loading BPF needs CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN): "
        "run it with sudo");
  HostPrereqs h;
  h.kernel_release = KernelRelease();
  if (!KernelAtLeast(h.kernel_release, kMinKernelMajor, kMinKernelMinor))
    return absl::FailedPreconditionError(absl::StrCat(
        "kernel ", h.kernel_release, " is too old: sockwatch needs Linux >= ", kMinKernelMajor, ".",
        kMinKernelMinor, " (bpf_loop, ring buffer, BTF tracepoints); upgrade the kernel"));
  if (access("/sys/kernel/btf/vmlinux", R_OK) != 0)
    return absl::FailedPreconditionError(
        "kernel has no BTF (/sys/kernel/btf/vmlinux missing): use a kernel built with "
        "CONFIG_DEBUG_INFO_BTF=y (the default on Debian, Ubuntu, RHEL and Fedora kernels)");
  // Tracepoints are found through tracefs; minimal hosts and containers often
  // have it unmounted, and libbpf looks at both usual places.
  if (access("/sys/kernel/tracing/events", F_OK) != 0 &&
      access("/sys/kernel/debug/tracing/events", F_OK) != 0 &&
      mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, nullptr) != 0)
    return absl::FailedPreconditionError(absl::StrCat(
        "tracefs is not mounted and mounting it at /sys/kernel/tracing failed (", strerror(errno),
        "): run `mount -t tracefs tracefs /sys/kernel/tracing` (in a container, mount the host's)"));
  auto cg = FindCgroup2Mount(ReadFile("/proc/mounts"));
  if (!cg.ok()) return cg.status();
  h.cgroup2_path = *cg;
  return h;
}

}  // namespace sockwatch
