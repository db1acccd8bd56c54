// The disk spool's on-disk format and the file primitives it is read and
// written with: CRC-32C, segment and record framing, the buffered segment
// reader behind Read's cursor, the damage scan run at open, and the state
// file's slots. Kept apart from spool.cc so that the Spool class there reads
// as policy (sequencing, overflow, acknowledgement, locking) over a format
// that stands on its own. Internal to the spool; nothing else includes it.
//
// All integers little-endian:
//
//   seg-<first seq, 20 digits>.log  one segment; lexical order is seq order.
//     header, 24 bytes: "SWSPSEG1" | u64 first seq | u32 version (1)
//                       | u32 CRC-32C of the 20 bytes before it
//     records:          u32 CRC-32C (of the 28 header bytes after it, then
//                       the payload) | u32 payload length | u64 seq
//                       | i64 event time (unix ns) | u64 carried_loss | payload
//   state             two 64-byte slots written in turn with pwrite, the
//                     newer valid one wins, so a torn write leaves the other:
//                     u32 "SWST" | u32 version (1) | u64 generation
//                     | u64 acked seq | u64 pending loss count
//                     | i64 loss first ns | i64 loss last ns | u32 0
//                     | u32 CRC-32C of the 52 bytes before it
//
// Seqs within a segment only increase (gaps only where damage was cut).
#ifndef SOCKWATCH_AGENT_SPOOL_FORMAT_H_
#define SOCKWATCH_AGENT_SPOOL_FORMAT_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/spool.h"

namespace sockwatch::spool_internal {

inline constexpr size_t kSegHeaderSize = 24;
inline constexpr size_t kRecHeaderSize = 32;
// Framing sanity at open; Append allows less (what fits in a segment).
inline constexpr uint64_t kMaxPayload = 16 << 20;
inline constexpr char kStateName[] = "state";

// Extends a finished CRC-32C (0 to start) with data.
uint32_t Crc32c(uint32_t crc, absl::string_view data);

struct RecordHeader {
  uint32_t crc = 0;
  uint32_t len = 0;
  uint64_t seq = 0;
  int64_t time_ns = 0;
  uint64_t carried = 0;
};

// `p` points at a whole record header (kRecHeaderSize bytes).
RecordHeader DecodeHeader(const char* p);

// Writes one whole record, CRC included, to `p`, which has room for
// kRecHeaderSize + payload.size() bytes.
void EncodeRecord(char* p, uint64_t seq, int64_t time_ns, uint64_t carried,
                  absl::string_view payload);

// Records in `records`, which holds whole records back to back.
uint64_t CountRecords(absl::string_view records);

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~UniqueFd() { reset(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void reset();

 private:
  int fd_ = -1;
};

absl::Status IoError(int err, absl::string_view what, absl::string_view path);
absl::Status PwriteAll(int fd, absl::string_view data, uint64_t off, absl::string_view path);
absl::Status PreadAll(int fd, char* buf, size_t size, uint64_t off, absl::string_view path);
// Creates dir (0700) and its parents if missing; fine if it is a directory.
absl::Status MakeDir(std::string dir);

// Event times in unix ns; unknown while first > last.
struct TimeRange {
  int64_t first = std::numeric_limits<int64_t>::max();
  int64_t last = std::numeric_limits<int64_t>::min();
  bool known() const { return first <= last; }
  void Add(int64_t t) {
    first = std::min(first, t);
    last = std::max(last, t);
  }
  void Merge(const TimeRange& o) {
    if (o.known()) {
      Add(o.first);
      Add(o.last);
    }
  }
};

std::string SegmentPath(absl::string_view dir, uint64_t first_seq);

// The segment files in dir as (first seq, file name), in seq order.
absl::StatusOr<std::vector<std::pair<uint64_t, std::string>>> ListSegments(const std::string& dir);

// Creates the segment file `path` (which must not exist) holding its header.
absl::StatusOr<UniqueFd> CreateSegment(const std::string& path, uint64_t first_seq);

struct Frame {
  RecordHeader h;
  absl::string_view payload;  // valid until the reader's next call
};
enum class FrameKind { kRecord, kEnd, kDamaged };

// Buffered sequential reading of records below a limit (the bytes known to
// be written), one pread per chunk instead of per record.
class ChunkReader {
 public:
  void Reset(int fd, uint64_t offset, absl::string_view path);
  uint64_t offset() const { return base_ + pos_; }  // of the next record

  // kDamaged leaves offset() at the damaged record.
  absl::StatusOr<FrameKind> Next(uint64_t limit, Frame* f);

 private:
  absl::Status Fill(uint64_t limit, size_t need);

  int fd_ = -1;
  uint64_t base_ = 0;  // file offset of buf_[0]
  size_t pos_ = 0;
  size_t len_ = 0;
  std::string buf_;
  std::string path_;
};

struct ReadPlan {
  std::string path;
  uint64_t first_seq = 0;
  uint64_t limit = 0;        // bytes of the file that are written
  uint64_t region_last = 0;  // seq of the last record below limit
};

// Read's position: the record at `offset` of segment `seg_first` is the first
// with seq >= next_seq. Kept across calls so that sequential reading goes on
// where it stopped instead of rescanning the segment.
struct Cursor {
  uint64_t seg_first = 0;
  uint64_t next_seq = 0;
  uint64_t offset = 0;
  UniqueFd fd;
  uint64_t fd_seg = 0;
  ChunkReader reader;
};

// A Read batch is full: max_records, or max_bytes with at least one record.
inline bool Full(const std::vector<SpoolRecord>& out, size_t bytes, size_t max_records,
                 size_t max_bytes) {
  return out.size() >= max_records || (!out.empty() && bytes >= max_bytes);
}

// Appends the records of p's region with seq >= want to *out (adding their
// payload sizes to *bytes) until Full, going on from and advancing *c.
// NotFound: the file is gone. DataLoss: a record no longer checks out, and
// c->reader is left at it.
absl::Status ReadSegment(const ReadPlan& p, uint64_t want, size_t max_records, size_t max_bytes,
                         Cursor* c, std::vector<SpoolRecord>* out, size_t* bytes);

// The same for records not yet written: `records` holds whole records back to
// back, read from *off on, which is left after the last record looked at.
// Returns the seq after that record, 0 if there was none.
uint64_t ReadBuffered(absl::string_view records, uint64_t want, size_t max_records,
                      size_t max_bytes, size_t* off, std::vector<SpoolRecord>* out, size_t* bytes);

struct Segment {
  uint64_t first_seq = 0;
  uint64_t last_seq = 0;  // first_seq - 1 while empty; includes buffered records
  uint64_t records = 0;
  uint64_t file_bytes = 0;  // in the file (the active one's buffer is extra)
  uint64_t carried = 0;     // sum of carried_loss
  TimeRange times;
  std::string path;

  void Add(uint64_t seq, int64_t time_ns, uint64_t carried_loss) {
    last_seq = seq;
    ++records;
    carried += carried_loss;
    times.Add(time_ns);
  }
};

struct SegmentScan {
  Segment seg;
  uint64_t lost = 0;  // damaged records cut, not counting acknowledged ones
  TimeRange lost_times;
  uint64_t highest_seq = 0;  // seen in the file, damage included; never reuse
};

// Checks every record of the segment file `path`; at the first damaged one
// the file is cut (and fdatasync'ed if `sync`). Records at or below `acked`
// are not counted as lost.
absl::StatusOr<SegmentScan> ScanSegment(const std::string& path, uint64_t first, uint64_t acked,
                                        bool sync);

// What dropping a segment loses: records above the acknowledged position.
struct SegLoss {
  uint64_t records = 0;
  uint64_t carried = 0;
  TimeRange times;
};

// Reads the first `limit` bytes of a segment file to count the records above
// `acked`; nullopt if they cannot be read through.
std::optional<SegLoss> CountAbove(const std::string& path, uint64_t limit, uint64_t acked);

struct StateSlot {
  uint64_t gen = 0;
  uint64_t acked = 0;
  uint64_t loss_count = 0;
  TimeRange loss_times;
};

// Opens (creating it) and locks dir's state file, whose flock keeps a second
// agent out of the directory.
absl::StatusOr<UniqueFd> OpenStateFile(const std::string& dir);
// The newer valid slot. Neither valid (torn, or never written): the zero
// state -- the acked position is unknown, so everything kept is replayed
// (duplicates rather than loss).
absl::StatusOr<StateSlot> ReadStateFile(int fd, const std::string& path);
// Writes into slot gen % 2, leaving the other one intact.
absl::Status WriteStateSlot(int fd, const StateSlot& s, const std::string& path);

}  // namespace sockwatch::spool_internal

#endif  // SOCKWATCH_AGENT_SPOOL_FORMAT_H_
