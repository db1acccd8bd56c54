// Protocol inspection in userspace: joins the tc samples (packet.bpf.c) of
// each new flow with the process that owns its socket, identifies what the
// first bytes of each side claim to be (agent/protocols.h) and raises
//   protocol_port_mismatch  a port of the protocol table carries another protocol, or none
//   malformed_protocol      the bytes claim a protocol and break its syntax
//   protocol_change         an image that spoke X on a port now speaks Y there (baseline)
//   orphan_packets          packets outside established flows from one source, over a
//                           threshold in a window, with counts by TCP flag pattern
//   gratuitous_traffic      unsolicited answers: a SYN-ACK with no SYN, a DNS answer with
//                           no query
// through the detector (exceptions, de-duplication, ancestry).
#ifndef SOCKWATCH_AGENT_INSPECTOR_H_
#define SOCKWATCH_AGENT_INSPECTOR_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "agent/baseline.h"
#include "agent/decoder.h"
#include "agent/detector.h"
#include "agent/packet_probe.h"
#include "agent/process_table.h"
#include "agent/protocol_table.h"
#include "sockwatch/v1/event.pb.h"

namespace sockwatch {

struct InspectorOptions {
  // What the kernel samples per flow direction (packet.bpf.c): a side that
  // has this much is complete.
  uint32_t sample_bytes = 256;
  uint32_t sample_segments = 3;
  // A flow is judged when both sides are complete, or this long after its
  // first sample (a server that never answers).
  absl::Duration judge_after = absl::Milliseconds(500);
  // orphan_packets: at least this many orphan packets from one source in the window.
  uint64_t orphan_threshold = 20;
  absl::Duration orphan_window = absl::Seconds(10);
  size_t max_flows = 65536;    // flows waiting to be judged
  size_t max_sockets = 65536;  // socket cookie -> process
};

class Inspector {
 public:
  Inspector(Detector* detector, Baseline* baseline, const ProcessTable* table, const BootClock* clock,
            Detector::Identify identify, const ProtocolTable* protocols, InspectorOptions opts = {});

  // Network events: who owns which socket (by cookie).
  void OnEnvelope(const v1::Envelope& env);
  // A payload sample or orphan packet from the kernel.
  void OnPacket(const PacketRecord& rec, absl::Time now, std::vector<v1::Alert>* out);
  // Judges the flows whose time has come and the orphan counters (the
  // kernel's per-source counts; empty when not read this time).
  void Tick(absl::Time now, const std::vector<OrphanSource>& orphans, std::vector<v1::Alert>* out);

  uint64_t flows_judged() const { return flows_judged_; }
  // Flows not judged because the table of waiting flows was full (a loss).
  uint64_t flows_dropped() const { return flows_dropped_; }

 private:
  struct Side {
    std::string bytes;
    uint32_t segments = 0;
  };
  struct Flow {
    v1::Protocol transport = v1::PROTOCOL_UNSPECIFIED;
    std::string client_ip, server_ip;
    std::vector<uint8_t> client_addr, server_addr;
    uint16_t client_port = 0, server_port = 0;
    bool local_is_client = true;
    uint64_t cookie = 0;
    uint32_t owner_tgid = 0;
    uint64_t owner_start_ns = 0;
    Side client, server;
    absl::Time first;
  };
  struct Source {
    std::string ip;
    std::vector<uint32_t> ports;  // local ports hit (sampled), distinct, bounded
    uint64_t listener_cookie = 0;
    v1::Protocol listener_protocol = v1::PROTOCOL_UNSPECIFIED;
    uint32_t listener_port = 0;  // a local port with a socket the packets hit
    v1::Protocol protocol = v1::PROTOCOL_UNSPECIFIED;  // of the latest sample
    std::array<uint64_t, SW_ORPHAN_MAX> base{};  // kernel counts at window start
    absl::Time window_start;
    bool seen = false;  // window_start set
  };
  // A process as its latest network event showed it, shared by its sockets
  // and ports: one copy per process, not one per event.
  using SharedProcess = std::shared_ptr<const v1::Process>;
  struct Socket {
    SharedProcess process;
    absl::Time closed = absl::InfiniteFuture();
  };
  struct Pending {  // a gratuitous packet, judged once the socket events are in
    PacketRecord rec;
    absl::Time seen;
  };

  bool Complete(const Side& s) const;
  void Judge(const Flow& f, absl::Time now, std::vector<v1::Alert>* out);
  // The process owning the flow's socket, if known.
  bool ProcessOf(uint64_t cookie, uint32_t tgid, uint64_t start_ns, v1::Process* out) const;
  // The process bound to a local port (listeners, UDP sockets), if known.
  bool PortOwner(v1::Protocol protocol, uint32_t port, v1::Process* out) const;
  v1::Alert Base(const Flow& f, const char* rule, v1::Severity severity, bool* has_process);
  // p, shared with the earlier sockets of the same process while it shows
  // the same image, command line and user.
  SharedProcess Share(const v1::Process& p);
  void Gratuitous(const PacketRecord& rec, absl::Time now, std::vector<v1::Alert>* out);

  Detector* detector_;
  Baseline* baseline_;
  const ProcessTable* table_;
  const BootClock* clock_;
  Detector::Identify identify_;
  const ProtocolTable* protocols_;
  InspectorOptions opts_;
  absl::flat_hash_map<std::string, Flow> flows_;       // canonical tuple -> flow
  absl::flat_hash_map<uint64_t, Socket> sockets_;      // cookie -> owner
  absl::flat_hash_map<std::string, Source> sources_;   // 16-byte address -> orphan state
  // (protocol, local port) -> the listener or UDP socket's process.
  absl::flat_hash_map<std::pair<int, uint32_t>, SharedProcess> ports_;
  // (pid, start) -> the process its latest network event showed.
  absl::flat_hash_map<std::pair<uint32_t, uint64_t>, SharedProcess> procs_;
  std::vector<Pending> pending_;
  uint64_t flows_judged_ = 0, flows_dropped_ = 0;
};

// Printable head of a sample: ASCII as is, everything else \xNN.
std::string SampleHead(absl::string_view bytes, size_t max_bytes = 64);

}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_INSPECTOR_H_
