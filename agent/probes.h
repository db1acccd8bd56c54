// Loads the BPF programs in fixed stages (open -> configure -> load -> attach),
// one object per event family so that a family the kernel refuses becomes a
// reported blind spot instead of a dead agent. Owns every skeleton and link.
#ifndef SOCKWATCH_AGENT_PROBES_H_
#define SOCKWATCH_AGENT_PROBES_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "agent/packet_probe.h"
#include "sockwatch/v1/event.pb.h"

extern "C" {
#include "sockwatch_events.h"
}

struct process_bpf;
struct tcp_bpf;
struct udp_bpf;

namespace sockwatch {

struct ProbeOptions {
  uint32_t ring_bytes = 8u << 20;  // power of two, multiple of the page size
  uint64_t wakeup_bytes = 256u << 10;
  uint32_t udp_dedup_entries = 16384;
  std::string cgroup2_path;
  // Protocol inspection with tc (packet.bpf.c); off: not loaded.
  bool inspect = true;
  PacketProbeOptions packet;
};

using Counters = std::array<uint64_t, SW_CNT_MAX>;
// Name of a counter, as reported in loss events.
const char* CounterName(int index);
// Counters that are losses (records or attribution the kernel could not make).
bool CounterIsLoss(int index);

class Probes {
 public:
  static absl::StatusOr<std::unique_ptr<Probes>> Load(const ProbeOptions& opts);
  ~Probes();
  Probes(const Probes&) = delete;
  Probes& operator=(const Probes&) = delete;

  // Detaches every program but keeps the maps, so the ring can be drained
  // and the counters read after the last record was written.
  void Detach();

  int ring_fd() const;
  // Records the owner of a TCP socket that existed before the agent, so its
  // close is attributed. Never overwrites what the kernel recorded itself.
  absl::Status SeedSocketOwner(uint64_t cookie, const sw_sk_owner& owner);
  // Summed over CPUs.
  absl::StatusOr<Counters> ReadCounters() const;
  const v1::Coverage& coverage() const { return coverage_; }
  // The tc probes; nullptr when inspection is off or did not load.
  PacketProbe* packet() { return packet_.get(); }
  // Re-reads the inspected interfaces into coverage (after Refresh()).
  void UpdatePacketCoverage();

 private:
  Probes() = default;
  absl::Status LoadProcess(const ProbeOptions& opts);
  absl::Status LoadTcp(const ProbeOptions& opts);
  absl::Status LoadUdp(const ProbeOptions& opts);
  absl::Status LoadPacket(const ProbeOptions& opts);

  process_bpf* process_ = nullptr;
  tcp_bpf* tcp_ = nullptr;
  udp_bpf* udp_ = nullptr;
  std::unique_ptr<PacketProbe> packet_;
  int cgroup_fd_ = -1;
  v1::Coverage coverage_;
};

}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_PROBES_H_
