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

class Decoder {
 public:
  Decoder(ProcessTable* table, const BootClock* clock) : table_(table), clock_(clock) {}

  // Decodes one record into *out (cleared first). Returns false for records that yield no envelope
  // (unknown kind: counted, skipped). A malformed record is an error.
  absl::StatusOr<bool> Decode(absl::Span<const uint8_t> record, v1::Envelope* out);

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
