// Facts about the host the agent runs on, and the prerequisites it checks
// before loading anything, each failure with one line on how to fix it.
#ifndef SOCKWATCH_AGENT_HOST_H_
#define SOCKWATCH_AGENT_HOST_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sockwatch {

// The oldest kernel the probes load on: bpf_loop (exe path walk) is 5.17.
inline constexpr int kMinKernelMajor = 5;
inline constexpr int kMinKernelMinor = 17;

std::string KernelRelease();
std::string Hostname();
// /etc/machine-id, else the hostname.
std::string HostId();
// Where cgroup v2 is mounted, from a /proc/mounts-format text.
absl::StatusOr<std::string> FindCgroup2Mount(absl::string_view proc_mounts);
// Release "6.1.0-18-amd64" -> true when >= major.minor.
bool KernelAtLeast(absl::string_view release, int major, int minor);

struct HostPrereqs {
  std::string cgroup2_path;
  std::string kernel_release;
};
// Root, BTF, kernel version, cgroup v2 mount.
absl::StatusOr<HostPrereqs> CheckHost();

}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_HOST_H_
