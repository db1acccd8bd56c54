// The agent's disk spool: everything not yet acknowledged by the collector.
//
// Append-only segment files under one directory; each record carries a CRC,
// so a torn write after a crash is found and cut at open (and counted). The
// spool survives agent restarts and collector outages; the exporter reads it
// in order from the last acknowledged position and replays it on reconnect.
// Bounded: when full, the oldest segments go first, even unacknowledged, and
// what they held is reported as a loss (count and time range) that the agent
// turns into a Loss event -- itself spooled and sent when the link returns.
#ifndef SOCKWATCH_AGENT_SPOOL_H_
#define SOCKWATCH_AGENT_SPOOL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace sockwatch {

enum class SpoolFsync {
  kNever,     // leave it to the kernel's writeback
  kInterval,  // fsync at most once per fsync_interval (on Flush)
  kAlways,    // fsync on every Flush
};

// "never", "interval" or "always".
absl::StatusOr<SpoolFsync> ParseSpoolFsync(absl::string_view text);

struct SpoolOptions {
  std::string dir;                      // created (0700) if missing
  uint64_t max_bytes = 256ull << 20;    // bound of all segments together
  uint64_t segment_bytes = 8ull << 20;  // a segment is closed past this size
  SpoolFsync fsync = SpoolFsync::kInterval;
  absl::Duration fsync_interval = absl::Seconds(1);
};

struct SpoolRecord {
  uint64_t seq = 0;     // spool position, strictly increasing, kept across restarts
  std::string payload;  // as appended (a serialized v1::Envelope)
};

// Records the spool lost: dropped on overflow, or damaged on disk.
struct SpoolLoss {
  uint64_t count = 0;
  absl::Time first = absl::InfinitePast();  // event time of the oldest lost record
  absl::Time last = absl::InfinitePast();   // event time of the newest lost record
};

struct SpoolStats {
  uint64_t appended = 0;        // records appended by this process
  uint64_t bytes = 0;           // on disk now, all segments
  uint64_t segments = 0;
  uint64_t unacked = 0;         // records after the acknowledged position
  uint64_t dropped = 0;         // records lost to overflow, since open
  uint64_t damaged = 0;         // records found damaged at open
  uint64_t acked_seq = 0;
  uint64_t last_seq = 0;
};

class Spool {
 public:
  // Opens (or creates) the spool in opts.dir, checks every segment's records
  // (a damaged tail is cut and counted as loss), and restores the
  // acknowledged position, the next sequence number and any loss not yet
  // taken. Clear error if the directory is unusable or opts are invalid
  // (max_bytes must be at least 2 * segment_bytes; segment_bytes >= 4 KiB).
  static absl::StatusOr<std::unique_ptr<Spool>> Open(const SpoolOptions& opts);
  ~Spool();

  // All methods are thread-safe (one appender thread, one exporter thread).

  // Appends one record; returns its sequence number. event_time is kept for
  // the loss time range. carried_loss: the record is itself a loss report of
  // that many records; if it is dropped, that count carries over to the next
  // loss (so losses of losses are not forgotten). Buffered until Flush (or
  // until the buffer is large); overflow is handled here.
  absl::StatusOr<uint64_t> Append(absl::string_view payload, absl::Time event_time,
                                  uint64_t carried_loss = 0);

  // Writes buffered records to the segment file, fsync per policy.
  absl::Status Flush();

  // Up to max_records records (and about max_bytes of payload, at least one
  // record) with seq > after, in order, including ones not yet flushed. If
  // records after `after` were dropped, continues with the oldest kept.
  absl::Status Read(uint64_t after, size_t max_records, size_t max_bytes,
                    std::vector<SpoolRecord>* out);

  // Waits until a record with seq > after exists, or timeout; true if one does.
  bool WaitFor(uint64_t after, absl::Duration timeout);

  // The collector stored everything up to seq: the position is persisted and
  // segments wholly at or below it are deleted. Lower than the current
  // position: ignored.
  absl::Status Ack(uint64_t seq);

  // Loss not yet reported (overflow since open, damage found at open, and
  // loss restored from a previous run); the pending loss is then cleared on
  // disk as well. nullopt if none.
  std::optional<SpoolLoss> TakeLoss();

  SpoolStats stats() const;

 private:
  struct Impl;
  explicit Spool(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_SPOOL_H_
