// The tc (clsact) half of the probes: packet.bpf.c on the inspected
// interfaces, ingress and egress. Attaches to every non-loopback Ethernet
// interface that is up (or the ones named), picks up new ones on Refresh(),
// keeps the kernel's list of local addresses current, and detaches its own
// filters (only its own: the clsact qdisc and other filters stay).
#ifndef SOCKWATCH_AGENT_PACKET_PROBE_H_
#define SOCKWATCH_AGENT_PACKET_PROBE_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

extern "C" {
#include "sockwatch_events.h"
}

struct packet_bpf;

namespace sockwatch {

struct PacketProbeOptions {
  // Interface names; empty: every non-loopback Ethernet interface that is up.
  std::vector<std::string> interfaces;
  // Network namespace whose interfaces are inspected (a path such as
  // /run/netns/NAME or /proc/PID/ns/net); "": the agent's own.
  std::string netns;
  uint32_t sample_bytes = 256;
  uint32_t sample_segments = 3;
  uint32_t orphan_samples_per_sec = 16;
  uint64_t wakeup_bytes = 256u << 10;
};

// Orphan packet counters of one source, as the kernel keeps them.
struct OrphanSource {
  // 16 bytes as the kernel keys it (IPv4 in the first 4); the orphan samples
  // of the source tell its family.
  std::vector<uint8_t> addr;
  std::array<uint64_t, SW_ORPHAN_MAX> counts{};
};

class PacketProbe {
 public:
  // events_fd/counters_fd: the shared ring buffer and counters; owner_fd: the
  // TCP owner map (-1 when the TCP probes did not load).
  static absl::StatusOr<std::unique_ptr<PacketProbe>> Load(const PacketProbeOptions& opts, int events_fd,
                                                           int counters_fd, int owner_fd);
  ~PacketProbe();
  PacketProbe(const PacketProbe&) = delete;
  PacketProbe& operator=(const PacketProbe&) = delete;

  // Attaches to interfaces that appeared, forgets those that went, and
  // refreshes the local addresses. Returns true when the set changed.
  absl::StatusOr<bool> Refresh();
  // Removes this agent's filters from every interface.
  void Detach();
  // Attached interfaces, as "name" (or "netns/name" in another namespace).
  std::vector<std::string> Interfaces() const;
  // Named interfaces that could not be attached, with why.
  const std::vector<std::string>& problems() const { return problems_; }
  absl::StatusOr<std::vector<OrphanSource>> ReadOrphans() const;

 private:
  struct Link {
    int ifindex;
    std::string name;
  };
  PacketProbe() = default;
  absl::Status Attach(int ifindex);
  void DetachOne(int ifindex);
  absl::Status UpdateLocalAddrs();

  PacketProbeOptions opts_;
  packet_bpf* skel_ = nullptr;
  int netns_fd_ = -1;  // -1: own namespace
  std::vector<Link> links_;
  std::vector<std::string> problems_;
};

}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_PACKET_PROBE_H_
