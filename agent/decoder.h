// Turns ring buffer records (bpf/sockwatch_events.h) into sockwatch.v1
// envelopes. The only place that reads kernel structs; it checks every size
// first and skips kinds it does not know.
#ifndef SOCKWATCH_AGENT_DECODER_H_
#define SOCKWATCH_AGENT_DECODER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "agent/process_table.h"
#include "sockwatch/v1/event.pb.h"

namespace sockwatch {

// Converts CLOCK_BOOTTIME nanoseconds to wall-clock time.
class BootClock {
 public:
  BootClock();  // measures the offset now
  explicit BootClock(int64_t offset_ns) : offset_ns_(offset_ns) {}
  static uint64_t NowBootNs();
  void ToTimestamp(uint64_t boot_ns, google::protobuf::Timestamp* ts) const;

 private:
  int64_t offset_ns_;  // realtime - boottime
};

// Fills a v1::Process from the table's entry.
void FillProcess(const ProcInfo& info, const BootClock& clock, v1::Process* out);

// Splits a NUL-separated argv block; a missing final NUL is tolerated.
std::vector<std::string> SplitArgv(absl::string_view block);

// Joins path components stored leaf first (each NUL terminated) into "/a/b".
std::string JoinReversedPath(absl::string_view components);

// A tc record (packet.bpf.c): payload sample or orphan packet. Not an
// envelope: the inspector judges it and raises alerts from it.
struct PacketRecord {
  enum Kind { kPayload, kOrphan } kind = kPayload;
  uint64_t boot_ns = 0;
  v1::Protocol protocol = v1::PROTOCOL_UNSPECIFIED;
  int ip_version = 4;
  std::string src_ip, dst_ip;  // as on the wire
  std::vector<uint8_t> src_addr, dst_addr;  // 4 or 16 bytes
  uint16_t src_port = 0, dst_port = 0;
  bool ingress = false;
  uint32_t ifindex = 0;
  uint64_t cookie = 0;  // the local socket; 0 if none
  uint8_t tcp_flags = 0;
  // kPayload
  uint32_t owner_tgid = 0;  // from the TCP owner map; 0 if unknown
  uint64_t owner_start_ns = 0;
  bool from_client = false;
  uint32_t offset = 0;    // bytes of this direction sampled before
  uint32_t wire_len = 0;  // payload bytes of the packet
  uint8_t segment = 0;
  std::string data;
  // kOrphan
  int pattern = 0;  // enum sw_orphan_pattern
  uint64_t source_total = 0;
};

// "null", "fin", ... for enum sw_orphan_pattern.
const char* OrphanPatternName(int pattern);

class Decoder {
 public:
  Decoder(ProcessTable* table, const BootClock* clock) : table_(table), clock_(clock) {}

  // Decodes one record into *out (cleared first). Returns false for records that yield no envelope
  // (unknown kind: counted, skipped). A malformed record is an error.
  absl::StatusOr<bool> Decode(absl::Span<const uint8_t> record, v1::Envelope* out);

  // Decodes a SW_KIND_PAYLOAD or SW_KIND_ORPHAN record.
  static absl::StatusOr<PacketRecord> DecodePacket(absl::Span<const uint8_t> record);
  static bool IsPacket(absl::Span<const uint8_t> record);

  uint64_t unknown_kinds() const { return unknown_kinds_; }
  // Network events whose process was not in the table.
  uint64_t unattributed() const { return unattributed_; }

 private:
  absl::StatusOr<bool> DecodeExec(absl::Span<const uint8_t> rec, v1::Envelope* out);
  absl::StatusOr<bool> DecodeFork(absl::Span<const uint8_t> rec, v1::Envelope* out);
  absl::StatusOr<bool> DecodeExit(absl::Span<const uint8_t> rec, v1::Envelope* out);
  absl::StatusOr<bool> DecodeNet(absl::Span<const uint8_t> rec, v1::Envelope* out);

  ProcessTable* table_;
  const BootClock* clock_;
  uint64_t unknown_kinds_ = 0;
  uint64_t unattributed_ = 0;
};

}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_DECODER_H_
