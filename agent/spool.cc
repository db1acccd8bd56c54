// The disk spool (see spool.h). On-disk format, all integers little-endian:
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
// Seqs within a segment only increase (gaps only where damage was cut). Each
// Open starts a new segment, so a file is only ever appended to by the
// process that created it. The state file also holds the flock that keeps a
// second agent out of the directory.
//
// Locks: mu guards everything shared; flush_mu serializes Flush so that fsync
// runs outside mu; read_mu serializes Read and owns its cursor, so segment
// reads (pread) run outside mu too. Order: flush_mu or read_mu, then mu.
#include "agent/spool.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <deque>
#include <filesystem>
#include <limits>
#include <system_error>
#include <utility>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace sockwatch {

namespace {

static_assert(std::endian::native == std::endian::little,
              "the spool format is little-endian; a big-endian port must swap in Put/Get");

constexpr char kSegMagic[8] = {'S', 'W', 'S', 'P', 'S', 'E', 'G', '1'};
constexpr size_t kSegHeaderSize = 24;
constexpr size_t kRecHeaderSize = 32;
// Framing sanity at open; Append allows less (what fits in a segment).
constexpr uint64_t kMaxPayload = 16 << 20;
constexpr size_t kReadChunk = 256 << 10;

void Put32(char* p, uint32_t v) { memcpy(p, &v, 4); }
void Put64(char* p, uint64_t v) { memcpy(p, &v, 8); }
uint32_t Get32(const char* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
uint64_t Get64(const char* p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

// CRC-32C (Castagnoli): SSE4.2 where the CPU has it (most of the append
// cost otherwise), else slicing-by-8 tables built at compile time.
constexpr std::array<std::array<uint32_t, 256>, 8> MakeCrcTables() {
  std::array<std::array<uint32_t, 256>, 8> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    t[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; ++i) {
    for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
  }
  return t;
}
constexpr auto kCrcTables = MakeCrcTables();

uint32_t Crc32cSoft(uint32_t c, const char* p, size_t n) {
  const auto& t = kCrcTables;
  for (; n >= 8; p += 8, n -= 8) {
    const uint64_t v = Get64(p) ^ c;
    c = t[7][v & 0xff] ^ t[6][(v >> 8) & 0xff] ^ t[5][(v >> 16) & 0xff] ^ t[4][(v >> 24) & 0xff] ^
        t[3][(v >> 32) & 0xff] ^ t[2][(v >> 40) & 0xff] ^ t[1][(v >> 48) & 0xff] ^ t[0][v >> 56];
  }
  for (; n > 0; ++p, --n) c = (c >> 8) ^ t[0][(c ^ static_cast<uint8_t>(*p)) & 0xff];
  return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t Crc32cHard(uint32_t c, const char* p, size_t n) {
  uint64_t c64 = c;
  for (; n >= 8; p += 8, n -= 8) c64 = _mm_crc32_u64(c64, Get64(p));
  c = static_cast<uint32_t>(c64);
  for (; n > 0; ++p, --n) c = _mm_crc32_u8(c, static_cast<uint8_t>(*p));
  return c;
}
#endif

// Extends a finished CRC (0 to start) with data.
uint32_t Crc32c(uint32_t crc, absl::string_view data) {
  uint32_t c = ~crc;
#if defined(__x86_64__)
  static const bool hard = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") != 0;
  }();
  if (hard) return ~Crc32cHard(c, data.data(), data.size());
#endif
  return ~Crc32cSoft(c, data.data(), data.size());
}

// `hdr` is a whole record header; its first 4 bytes are the CRC itself.
uint32_t RecordCrc(const char* hdr, absl::string_view payload) {
  return Crc32c(Crc32c(0, {hdr + 4, kRecHeaderSize - 4}), payload);
}

struct RecordHeader {
  uint32_t crc = 0;
  uint32_t len = 0;
  uint64_t seq = 0;
  int64_t time_ns = 0;
  uint64_t carried = 0;
};

RecordHeader DecodeHeader(const char* p) {
  return {Get32(p), Get32(p + 4), Get64(p + 8), static_cast<int64_t>(Get64(p + 16)), Get64(p + 24)};
}

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
  void reset() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

absl::Status IoError(int err, absl::string_view what, absl::string_view path) {
  return absl::ErrnoToStatus(err, absl::StrCat("spool: ", what, " ", path));
}

absl::Status PwriteAll(int fd, absl::string_view data, uint64_t off, absl::string_view path) {
  while (!data.empty()) {
    const ssize_t n = pwrite(fd, data.data(), data.size(), static_cast<off_t>(off));
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoError(errno, "write", path);
    }
    data.remove_prefix(static_cast<size_t>(n));
    off += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::Status PreadAll(int fd, char* buf, size_t size, uint64_t off, absl::string_view path) {
  while (size > 0) {
    const ssize_t n = pread(fd, buf, size, static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return IoError(errno, "read", path);
    if (n == 0) return absl::DataLossError(absl::StrCat("spool: ", path, " ends early"));
    buf += n;
    size -= static_cast<size_t>(n);
    off += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

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

std::string SegmentPath(absl::string_view dir, uint64_t first_seq) {
  return absl::StrCat(dir, "/seg-", absl::Dec(first_seq, absl::kZeroPad20), ".log");
}

struct Frame {
  RecordHeader h;
  absl::string_view payload;  // valid until the reader's next call
};
enum class FrameKind { kRecord, kEnd, kDamaged };

// Buffered sequential reading of records below a limit (the bytes known to
// be written), one pread per chunk instead of per record.
class ChunkReader {
 public:
  void Reset(int fd, uint64_t offset, absl::string_view path) {
    fd_ = fd;
    base_ = offset;
    pos_ = len_ = 0;
    path_ = std::string(path);
  }
  uint64_t offset() const { return base_ + pos_; }  // of the next record

  // kDamaged leaves offset() at the damaged record.
  absl::StatusOr<FrameKind> Next(uint64_t limit, Frame* f) {
    const uint64_t off = offset();
    if (off >= limit) return off == limit ? FrameKind::kEnd : FrameKind::kDamaged;
    if (absl::Status s = Fill(limit, kRecHeaderSize); !s.ok()) return s;
    if (len_ - pos_ < kRecHeaderSize) return FrameKind::kDamaged;  // torn header
    f->h = DecodeHeader(buf_.data() + pos_);
    if (f->h.len > kMaxPayload || f->h.len > limit - off - kRecHeaderSize) {
      return FrameKind::kDamaged;  // absurd length, or torn payload
    }
    const size_t size = kRecHeaderSize + f->h.len;
    if (absl::Status s = Fill(limit, size); !s.ok()) return s;
    if (len_ - pos_ < size) return FrameKind::kDamaged;  // file shorter than the limit
    const char* p = buf_.data() + pos_;
    f->payload = {p + kRecHeaderSize, f->h.len};
    if (RecordCrc(p, f->payload) != f->h.crc) return FrameKind::kDamaged;
    pos_ += size;
    return FrameKind::kRecord;
  }

 private:
  absl::Status Fill(uint64_t limit, size_t need) {
    if (len_ - pos_ >= need) return absl::OkStatus();
    if (pos_ > 0) {
      memmove(buf_.data(), buf_.data() + pos_, len_ - pos_);
      base_ += pos_;
      len_ -= pos_;
      pos_ = 0;
    }
    if (buf_.size() < std::max(need, kReadChunk)) buf_.resize(std::max(need, kReadChunk));
    while (len_ < need && base_ + len_ < limit) {
      const uint64_t at = base_ + len_;
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buf_.size() - len_, limit - at));
      const ssize_t r = pread(fd_, buf_.data() + len_, n, static_cast<off_t>(at));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return IoError(errno, "read", path_);
      if (r == 0) break;
      len_ += static_cast<size_t>(r);
    }
    return absl::OkStatus();
  }

  int fd_ = -1;
  uint64_t base_ = 0;  // file offset of buf_[0]
  size_t pos_ = 0;
  size_t len_ = 0;
  std::string buf_;
  std::string path_;
};

struct Damage {
  uint64_t first_seq = 0;    // of the damaged record, as far as known
  uint64_t count = 0;        // records counted lost, the damaged one included
  uint64_t highest_seq = 0;  // so that seqs are never used twice
  TimeRange times;           // of the framed records that had a good CRC
};

// The record at `off` is damaged: count it, then follow length fields while
// they lead to records with a good CRC or at least the expected seq.
absl::StatusOr<Damage> FrameDamaged(int fd, absl::string_view path, uint64_t off, uint64_t size,
                                    uint64_t expected_seq) {
  Damage d{expected_seq, 1, expected_seq, {}};
  uint64_t expect = expected_seq + 1;
  std::string payload;
  for (bool first = true;; first = false) {
    if (size - off < kRecHeaderSize) break;
    char hdr[kRecHeaderSize];
    if (absl::Status s = PreadAll(fd, hdr, kRecHeaderSize, off, path); !s.ok()) return s;
    const RecordHeader h = DecodeHeader(hdr);
    if (h.len > kMaxPayload || h.len > size - off - kRecHeaderSize) break;
    if (!first) {
      payload.resize(h.len);
      if (absl::Status s = PreadAll(fd, payload.data(), h.len, off + kRecHeaderSize, path);
          !s.ok()) {
        return s;
      }
      const bool good = RecordCrc(hdr, payload) == h.crc && h.seq >= expect;
      if (!good && h.seq != expect) break;
      if (good) d.times.Add(h.time_ns);
      expect = (good ? h.seq : expect) + 1;
      ++d.count;
      d.highest_seq = expect - 1;
    }
    off += kRecHeaderSize + h.len;
  }
  return d;
}

constexpr size_t kWriteBytes = 64 << 10;  // buffered records are written past this
constexpr size_t kMaxUnsynced = 16;       // closed segments awaiting fsync at most
constexpr char kStateName[] = "state";
constexpr uint32_t kStateMagic = 0x54535753;  // "SWST"
constexpr uint32_t kStateVersion = 1;
constexpr size_t kStateSlot = 64;
constexpr size_t kStateCrcAt = 52;

struct Segment {
  uint64_t first_seq = 0;
  uint64_t last_seq = 0;  // first_seq - 1 while empty; includes buffered records
  uint64_t records = 0;
  uint64_t file_bytes = 0;  // in the file (the active one's buffer is extra)
  uint64_t carried = 0;     // sum of carried_loss
  TimeRange times;
  std::string path;
};

// What dropping a segment loses: records above the acknowledged position.
struct SegLoss {
  uint64_t records = 0;
  uint64_t carried = 0;
  TimeRange times;
};

struct PendingLoss {
  uint64_t count = 0;
  TimeRange times;
  void Add(uint64_t n, const TimeRange& t) {
    count = n > std::numeric_limits<uint64_t>::max() - count ? std::numeric_limits<uint64_t>::max()
                                                             : count + n;
    times.Merge(t);
  }
};

// A rolled segment's fd, kept open until Flush fsyncs it (or finds it gone).
struct Unsynced {
  uint64_t first_seq = 0;
  UniqueFd fd;
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

bool Full(const std::vector<SpoolRecord>& out, size_t bytes, size_t max_records, size_t max_bytes) {
  return out.size() >= max_records || (!out.empty() && bytes >= max_bytes);
}

absl::Status MakeDir(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (mkdir(dir.c_str(), 0700) == 0) return absl::OkStatus();
  int err = errno;
  if (err == ENOENT) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(dir).parent_path(), ec);
    if (ec) {
      return absl::ErrnoToStatus(ec.value(), absl::StrCat("spool: create parents of ", dir));
    }
    if (mkdir(dir.c_str(), 0700) == 0) return absl::OkStatus();
    err = errno;
  }
  if (err != EEXIST) return IoError(err, "create directory", dir);
  struct stat st;
  if (stat(dir.c_str(), &st) != 0) return IoError(errno, "stat", dir);
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("spool: ", dir, " is not a directory"));
  }
  return absl::OkStatus();
}

bool ParseSegmentName(absl::string_view name, uint64_t* first) {
  constexpr absl::string_view kPrefix = "seg-", kSuffix = ".log";
  if (name.size() != kPrefix.size() + 20 + kSuffix.size() || !absl::StartsWith(name, kPrefix) ||
      !absl::EndsWith(name, kSuffix)) {
    return false;
  }
  absl::string_view digits = name.substr(kPrefix.size(), 20);
  if (!std::all_of(digits.begin(), digits.end(), absl::ascii_isdigit)) return false;
  return absl::SimpleAtoi(digits, first);
}

}  // namespace

absl::StatusOr<SpoolFsync> ParseSpoolFsync(absl::string_view text) {
  const std::string t = absl::AsciiStrToLower(text);
  if (t == "never") return SpoolFsync::kNever;
  if (t == "interval") return SpoolFsync::kInterval;
  if (t == "always") return SpoolFsync::kAlways;
  return absl::InvalidArgumentError(
      absl::StrCat("spool fsync must be never, interval or always, not \"", text, "\""));
}

struct Spool::Impl {
  explicit Impl(const SpoolOptions& o)
      : opts(o),
        max_payload(
            std::min<uint64_t>(kMaxPayload, o.segment_bytes - kSegHeaderSize - kRecHeaderSize)) {}

  absl::Status OpenFiles();
  absl::Status LoadState();
  absl::Status ScanSegments();
  absl::Status ScanSegment(const std::string& path, uint64_t first, Segment* seg,
                           PendingLoss* damage, uint64_t* highest);

  uint64_t last_seq() const { return next_seq - 1; }
  bool has_active() const { return active_fd.valid(); }
  absl::Status WriteBuffer();
  absl::Status Roll();
  SegLoss LostIn(const Segment& s);
  absl::Status WriteState();
  uint64_t ReadFloor() const {
    return std::max(acked, segments.empty() ? last_seq() : segments.front().first_seq - 1);
  }
  void ReadBuffer(uint64_t want, size_t max_records, size_t max_bytes,
                  std::vector<SpoolRecord>* out, size_t* bytes);
  absl::Status ReadSegment(const ReadPlan& p, uint64_t want, size_t max_records, size_t max_bytes,
                           std::vector<SpoolRecord>* out, size_t* bytes);
  void HandleReadDamage(const ReadPlan& p);
  absl::Status ForgetVanished(const ReadPlan& p);
  void AddLoss(uint64_t count, const TimeRange& t) { pending.Add(count, t); }
  std::deque<Segment>::iterator FindSegment(uint64_t first_seq) {
    auto it = std::partition_point(segments.begin(), segments.end(),
                                   [&](const Segment& s) { return s.first_seq < first_seq; });
    return it != segments.end() && it->first_seq == first_seq ? it : segments.end();
  }

  const SpoolOptions opts;
  const uint64_t max_payload;
  UniqueFd dir_fd;
  UniqueFd state_fd;  // holds the flock too

  absl::Mutex flush_mu;
  absl::Mutex read_mu;
  mutable absl::Mutex mu;

  Cursor cursor ABSL_GUARDED_BY(read_mu);

  std::deque<Segment> segments ABSL_GUARDED_BY(mu);  // oldest first; back() active if any
  UniqueFd active_fd ABSL_GUARDED_BY(mu);
  std::string buffer ABSL_GUARDED_BY(mu);             // records after the active file's end
  uint64_t flushed_last_seq ABSL_GUARDED_BY(mu) = 0;  // last seq in the active file
  // Where Read stopped in `buffer`: the record at buf_hint_off is the first
  // with seq >= buf_hint_seq (0: none). Saves reparsing the buffer per call.
  uint64_t buf_hint_seq ABSL_GUARDED_BY(mu) = 0;
  size_t buf_hint_off ABSL_GUARDED_BY(mu) = 0;
  std::vector<Unsynced> unsynced ABSL_GUARDED_BY(mu);
  bool dir_dirty ABSL_GUARDED_BY(mu) = false;
  bool state_dirty ABSL_GUARDED_BY(mu) = false;   // written, not fsynced
  bool state_failed ABSL_GUARDED_BY(mu) = false;  // last write failed: Flush retries
  absl::Time last_sync ABSL_GUARDED_BY(mu) = absl::InfinitePast();
  uint64_t next_seq ABSL_GUARDED_BY(mu) = 1;
  uint64_t acked ABSL_GUARDED_BY(mu) = 0;
  uint64_t state_gen ABSL_GUARDED_BY(mu) = 0;
  uint64_t total_bytes ABSL_GUARDED_BY(mu) = 0;  // files + buffer
  PendingLoss pending ABSL_GUARDED_BY(mu);
  uint64_t appended ABSL_GUARDED_BY(mu) = 0;
  uint64_t dropped ABSL_GUARDED_BY(mu) = 0;
  uint64_t damaged ABSL_GUARDED_BY(mu) = 0;
};

absl::Status Spool::Impl::OpenFiles() {
  if (absl::Status s = MakeDir(opts.dir); !s.ok()) return s;
  dir_fd = UniqueFd(open(opts.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd.valid()) return IoError(errno, "open directory", opts.dir);
  const std::string state_path = absl::StrCat(opts.dir, "/", kStateName);
  state_fd = UniqueFd(open(state_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!state_fd.valid()) return IoError(errno, "open", state_path);
  if (flock(state_fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat(
          "spool: ", opts.dir, " is in use by another spool (", state_path, " is locked)"));
    }
    return IoError(errno, "lock", state_path);
  }
  return absl::OkStatus();
}

absl::Status Spool::Impl::LoadState() {
  char buf[2 * kStateSlot];
  const ssize_t n = pread(state_fd.get(), buf, sizeof(buf), 0);
  if (n < 0) return IoError(errno, "read", absl::StrCat(opts.dir, "/", kStateName));
  for (size_t slot = 0; slot < 2; ++slot) {
    if (static_cast<size_t>(n) < (slot + 1) * kStateSlot) break;
    const char* p = buf + slot * kStateSlot;
    if (Get32(p) != kStateMagic || Get32(p + 4) != kStateVersion ||
        Get32(p + kStateCrcAt) != Crc32c(0, {p, kStateCrcAt})) {
      continue;  // torn or never written: the other slot holds the state
    }
    const uint64_t gen = Get64(p + 8);
    if (gen < state_gen) continue;
    state_gen = gen;
    acked = Get64(p + 16);
    pending.count = Get64(p + 24);
    pending.times.first = static_cast<int64_t>(Get64(p + 32));
    pending.times.last = static_cast<int64_t>(Get64(p + 40));
  }
  // Both slots bad: the acked position is unknown, so everything kept is
  // replayed (duplicates rather than loss).
  return absl::OkStatus();
}

absl::Status Spool::Impl::WriteState() {
  char p[kStateSlot] = {};
  ++state_gen;
  Put32(p, kStateMagic);
  Put32(p + 4, kStateVersion);
  Put64(p + 8, state_gen);
  Put64(p + 16, acked);
  Put64(p + 24, pending.count);
  Put64(p + 32, static_cast<uint64_t>(pending.times.first));
  Put64(p + 40, static_cast<uint64_t>(pending.times.last));
  Put32(p + kStateCrcAt, Crc32c(0, {p, kStateCrcAt}));
  state_dirty = true;
  absl::Status s = PwriteAll(state_fd.get(), {p, kStateSlot}, (state_gen % 2) * kStateSlot,
                             absl::StrCat(opts.dir, "/", kStateName));
  state_failed = !s.ok();
  return s;
}

absl::Status Spool::Impl::ScanSegments() {
  std::vector<std::pair<uint64_t, std::string>> found;
  {
    std::unique_ptr<DIR, int (*)(DIR*)> d(opendir(opts.dir.c_str()), closedir);
    if (!d) return IoError(errno, "list", opts.dir);
    while (struct dirent* e = readdir(d.get())) {
      uint64_t first = 0;
      if (ParseSegmentName(e->d_name, &first)) found.emplace_back(first, e->d_name);
    }
  }
  std::sort(found.begin(), found.end());
  uint64_t highest = acked;
  PendingLoss damage;
  bool removed = false;
  for (const auto& [first, name] : found) {
    const std::string path = absl::StrCat(opts.dir, "/", name);
    Segment seg;
    if (absl::Status s = ScanSegment(path, first, &seg, &damage, &highest); !s.ok()) return s;
    if (seg.records == 0 || seg.last_seq <= acked) {
      if (unlink(path.c_str()) != 0) return IoError(errno, "delete", path);
      removed = true;
      continue;
    }
    total_bytes += seg.file_bytes;
    segments.push_back(std::move(seg));
  }
  next_seq = highest + 1;
  if (damage.count > 0) {
    damaged += damage.count;
    pending.Add(damage.count, damage.times);
    if (absl::Status s = WriteState(); !s.ok()) return s;
  }
  if (opts.fsync != SpoolFsync::kNever && (removed || damage.count > 0)) {
    // So that the cut (and its count) is not found and counted again.
    if (fdatasync(state_fd.get()) != 0) return IoError(errno, "fsync", kStateName);
    if (fsync(dir_fd.get()) != 0) return IoError(errno, "fsync", opts.dir);
    state_dirty = false;
  }
  return absl::OkStatus();
}

// Checks every record; at the first damaged one the file is cut. How many
// records the cut loses is not known after a torn header, so this counts the
// damaged record plus each later one that can still be framed (a sane length
// leading to a record with a good CRC or the expected seq).
absl::Status Spool::Impl::ScanSegment(const std::string& path, uint64_t first, Segment* seg,
                                      PendingLoss* damage, uint64_t* highest) {
  UniqueFd fd(open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd.valid()) return IoError(errno, "open", path);
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return IoError(errno, "stat", path);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  seg->first_seq = first;
  seg->last_seq = first - 1;
  seg->path = path;
  seg->file_bytes = size;
  // The header is written before any record: a short one means no records.
  if (size < kSegHeaderSize) return absl::OkStatus();
  char hdr[kSegHeaderSize];
  if (absl::Status s = PreadAll(fd.get(), hdr, kSegHeaderSize, 0, path); !s.ok()) return s;
  if (memcmp(hdr, kSegMagic, 8) == 0 && Get32(hdr + 20) == Crc32c(0, {hdr, 20}) &&
      Get32(hdr + 16) != 1) {
    return absl::FailedPreconditionError(absl::StrCat("spool: ", path, " has format version ",
                                                      Get32(hdr + 16), "; this build reads 1"));
  }
  // A damaged header alone loses nothing: the records check themselves.
  ChunkReader reader;
  reader.Reset(fd.get(), kSegHeaderSize, path);
  uint64_t min_seq = first;
  for (;;) {
    Frame f;
    absl::StatusOr<FrameKind> kind = reader.Next(size, &f);
    if (!kind.ok()) return kind.status();
    if (*kind == FrameKind::kEnd) break;
    if (*kind == FrameKind::kRecord && f.h.seq >= min_seq) {
      seg->last_seq = f.h.seq;
      ++seg->records;
      seg->carried += f.h.carried;
      seg->times.Add(f.h.time_ns);
      min_seq = f.h.seq + 1;
      continue;
    }
    const uint64_t cut = reader.offset();
    absl::StatusOr<Damage> d = FrameDamaged(fd.get(), path, cut, size, min_seq);
    if (!d.ok()) return d.status();
    *highest = std::max(*highest, d->highest_seq);
    // Damaged records the collector already acknowledged are not lost.
    const uint64_t acked_part =
        acked >= d->first_seq ? std::min(d->count, acked - d->first_seq + 1) : 0;
    // The damaged record's time is unknown: bound it by the good records
    // around it, or by the file's mtime where there are none.
    const int64_t mtime = int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
    TimeRange t;
    t.Add(seg->times.known() ? seg->times.last : d->times.known() ? d->times.first : mtime);
    t.Add(d->times.known() ? d->times.last : mtime);
    if (d->count > acked_part) damage->Add(d->count - acked_part, t);
    if (ftruncate(fd.get(), static_cast<off_t>(cut)) != 0) return IoError(errno, "truncate", path);
    if (opts.fsync != SpoolFsync::kNever && fdatasync(fd.get()) != 0) {
      return IoError(errno, "fsync", path);
    }
    seg->file_bytes = cut;
    break;
  }
  *highest = std::max(*highest, seg->last_seq);
  return absl::OkStatus();
}

absl::Status Spool::Impl::WriteBuffer() {
  if (buffer.empty()) return absl::OkStatus();
  Segment& s = segments.back();
  if (absl::Status st = PwriteAll(active_fd.get(), buffer, s.file_bytes, s.path); !st.ok()) {
    // Undo a partial write so the file ends on a record; the buffer stays.
    (void)!ftruncate(active_fd.get(), static_cast<off_t>(s.file_bytes));
    return st;
  }
  s.file_bytes += buffer.size();
  flushed_last_seq = s.last_seq;
  buffer.clear();
  buf_hint_seq = 0;
  buf_hint_off = 0;
  return absl::OkStatus();
}

absl::Status Spool::Impl::Roll() {
  if (has_active()) {
    if (absl::Status s = WriteBuffer(); !s.ok()) return s;
    if (opts.fsync == SpoolFsync::kNever) {
      active_fd.reset();
    } else {
      unsynced.push_back({segments.back().first_seq, std::move(active_fd)});
      if (unsynced.size() >= kMaxUnsynced) {
        // Nobody calls Flush: sync here rather than hold fds without bound.
        for (Unsynced& u : unsynced) {
          if (FindSegment(u.first_seq) != segments.end() && fdatasync(u.fd.get()) != 0) {
            return IoError(errno, "fsync segment in", opts.dir);
          }
        }
        unsynced.clear();
      }
    }
  }
  const std::string path = SegmentPath(opts.dir, next_seq);
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd.valid()) return IoError(errno, "create", path);
  char hdr[kSegHeaderSize];
  memcpy(hdr, kSegMagic, 8);
  Put64(hdr + 8, next_seq);
  Put32(hdr + 16, 1);
  Put32(hdr + 20, Crc32c(0, {hdr, 20}));
  if (absl::Status s = PwriteAll(fd.get(), {hdr, kSegHeaderSize}, 0, path); !s.ok()) {
    unlink(path.c_str());
    return s;
  }
  Segment seg;
  seg.first_seq = next_seq;
  seg.last_seq = next_seq - 1;
  seg.file_bytes = kSegHeaderSize;
  seg.path = path;
  segments.push_back(std::move(seg));
  active_fd = std::move(fd);
  flushed_last_seq = next_seq - 1;
  total_bytes += kSegHeaderSize;
  dir_dirty = true;
  return absl::OkStatus();
}

SegLoss Spool::Impl::LostIn(const Segment& s) {
  SegLoss l;
  if (s.records == 0 || s.last_seq <= acked) return l;
  if (s.first_seq > acked) return {s.records, s.carried, s.times};
  // Partly acknowledged: read it to count exactly what lies above the position.
  UniqueFd fd(open(s.path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.valid()) {
    ChunkReader r;
    r.Reset(fd.get(), kSegHeaderSize, s.path);
    for (;;) {
      Frame f;
      absl::StatusOr<FrameKind> k = r.Next(s.file_bytes, &f);
      if (!k.ok() || *k == FrameKind::kDamaged) break;
      if (*k == FrameKind::kEnd) return l;
      if (f.h.seq > acked) {
        ++l.records;
        l.carried += f.h.carried;
        l.times.Add(f.h.time_ns);
      }
    }
  }
  // Unreadable now: estimate from the summary (seqs are nearly contiguous).
  return {s.last_seq - acked, s.carried, s.times};
}

absl::StatusOr<std::unique_ptr<Spool>> Spool::Open(const SpoolOptions& opts) {
  if (opts.dir.empty()) return absl::InvalidArgumentError("spool: dir is empty");
  if (opts.segment_bytes < 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("spool: segment_bytes is ", opts.segment_bytes, ", the minimum is 4096"));
  }
  if (opts.max_bytes / 2 < opts.segment_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("spool: max_bytes (", opts.max_bytes,
                                                   ") must be at least 2 * segment_bytes (",
                                                   opts.segment_bytes, ")"));
  }
  if (opts.fsync_interval < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("spool: fsync_interval is negative");
  }
  auto impl = std::make_unique<Impl>(opts);
  if (absl::Status s = impl->OpenFiles(); !s.ok()) return s;
  {
    absl::MutexLock l(&impl->mu);
    if (absl::Status s = impl->LoadState(); !s.ok()) return s;
    if (absl::Status s = impl->ScanSegments(); !s.ok()) return s;
  }
  return std::unique_ptr<Spool>(new Spool(std::move(impl)));
}

Spool::Spool(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Spool::~Spool() {
  Impl& m = *impl_;
  absl::MutexLock fl(&m.flush_mu);
  absl::MutexLock l(&m.mu);
  if (!m.WriteBuffer().ok()) {
    // Last chance to say so: the buffered records become a loss on disk.
    uint64_t n = 0;
    for (size_t off = 0; off < m.buffer.size(); ++n) {
      off += kRecHeaderSize + DecodeHeader(m.buffer.data() + off).len;
    }
    m.AddLoss(n, m.segments.back().times);
    (void)m.WriteState();
  }
  if (m.state_failed) (void)m.WriteState();
  if (m.opts.fsync == SpoolFsync::kNever) return;
  for (Unsynced& u : m.unsynced) {
    if (m.FindSegment(u.first_seq) != m.segments.end()) (void)fdatasync(u.fd.get());
  }
  if (m.has_active()) (void)fdatasync(m.active_fd.get());
  if (m.state_dirty) (void)fdatasync(m.state_fd.get());
  if (m.dir_dirty) (void)fsync(m.dir_fd.get());
}

absl::StatusOr<uint64_t> Spool::Append(absl::string_view payload, absl::Time event_time,
                                       uint64_t carried_loss) {
  Impl& m = *impl_;
  if (payload.size() > m.max_payload) {
    return absl::InvalidArgumentError(absl::StrCat("spool: record of ", payload.size(),
                                                   " bytes; at most ", m.max_payload, " fit"));
  }
  const uint64_t size = kRecHeaderSize + payload.size();
  std::vector<std::string> unlink_paths;
  bool sync_state = false;
  uint64_t seq = 0;
  {
    absl::MutexLock l(&m.mu);
    // Writing before adding keeps Append all-or-nothing when the disk fails.
    if (m.buffer.size() >= kWriteBytes) {
      if (absl::Status s = m.WriteBuffer(); !s.ok()) return s;
    }
    if (!m.has_active() ||
        (m.segments.back().records > 0 &&
         m.segments.back().file_bytes + m.buffer.size() + size > m.opts.segment_bytes)) {
      if (absl::Status s = m.Roll(); !s.ok()) return s;
    }
    bool lost = false;
    while (m.total_bytes + size > m.opts.max_bytes && m.segments.size() > 1) {
      const Segment& s = m.segments.front();
      const SegLoss l = m.LostIn(s);
      if (l.records > 0) {
        m.dropped += l.records;
        // A dropped loss report's own count carries over to the next one.
        m.AddLoss(l.records + l.carried, l.times);
        lost = true;
      }
      m.total_bytes -= s.file_bytes;
      unlink_paths.push_back(s.path);
      m.segments.pop_front();
    }
    // The loss is on disk (in the page cache at least) before the files go.
    // If that fails, the record is still in and the count still in memory;
    // the next Flush retries the write and reports the error.
    if (lost) sync_state = m.WriteState().ok() && m.opts.fsync == SpoolFsync::kAlways;
    seq = m.next_seq++;
    const size_t off = m.buffer.size();
    m.buffer.resize(off + size);
    char* p = m.buffer.data() + off;
    const int64_t ns = absl::ToUnixNanos(event_time);
    Put32(p + 4, static_cast<uint32_t>(payload.size()));
    Put64(p + 8, seq);
    Put64(p + 16, static_cast<uint64_t>(ns));
    Put64(p + 24, carried_loss);
    memcpy(p + kRecHeaderSize, payload.data(), payload.size());
    Put32(p, RecordCrc(p, payload));
    Segment& s = m.segments.back();
    s.last_seq = seq;
    ++s.records;
    s.carried += carried_loss;
    s.times.Add(ns);
    m.total_bytes += size;
    ++m.appended;
  }
  if (sync_state && fdatasync(m.state_fd.get()) != 0) {
    absl::MutexLock l(&m.mu);
    m.state_failed = true;
  }
  // Unlinking outside mu: a reader holding one open keeps reading it.
  for (const std::string& path : unlink_paths) unlink(path.c_str());
  return seq;
}

absl::Status Spool::Flush() {
  Impl& m = *impl_;
  absl::MutexLock fl(&m.flush_mu);
  std::vector<Unsynced> closed;
  std::vector<int> fds;
  bool sync_dir = false;
  {
    absl::MutexLock l(&m.mu);
    if (absl::Status s = m.WriteBuffer(); !s.ok()) return s;
    if (m.state_failed) {
      if (absl::Status s = m.WriteState(); !s.ok()) return s;
    }
    if (m.opts.fsync == SpoolFsync::kNever) return absl::OkStatus();
    const absl::Time now = absl::Now();
    if (m.opts.fsync == SpoolFsync::kInterval && now - m.last_sync < m.opts.fsync_interval) {
      return absl::OkStatus();
    }
    m.last_sync = now;
    closed = std::move(m.unsynced);
    m.unsynced.clear();
    // Segments acknowledged or dropped since need no sync: syncing them
    // would write back data already deleted.
    for (const Unsynced& u : closed) {
      if (m.FindSegment(u.first_seq) != m.segments.end()) fds.push_back(u.fd.get());
    }
    // The active fd stays open while we sync it: only Flush (serialized by
    // flush_mu) and the destructor close rolled fds.
    if (m.has_active()) fds.push_back(m.active_fd.get());
    if (m.state_dirty) fds.push_back(m.state_fd.get());
    m.state_dirty = false;
    sync_dir = m.dir_dirty;
    m.dir_dirty = false;
  }
  for (int fd : fds) {
    if (fdatasync(fd) != 0) return IoError(errno, "fsync in", m.opts.dir);
  }
  if (sync_dir && fsync(m.dir_fd.get()) != 0) return IoError(errno, "fsync", m.opts.dir);
  return absl::OkStatus();
}

void Spool::Impl::ReadBuffer(uint64_t want, size_t max_records, size_t max_bytes,
                             std::vector<SpoolRecord>* out, size_t* bytes) {
  size_t off = buf_hint_seq != 0 && buf_hint_seq <= want ? buf_hint_off : 0;
  uint64_t next = 0;
  while (off < buffer.size() && !Full(*out, *bytes, max_records, max_bytes)) {
    const char* p = buffer.data() + off;
    const RecordHeader h = DecodeHeader(p);
    if (h.seq >= want) {
      out->push_back({h.seq, std::string(p + kRecHeaderSize, h.len)});
      *bytes += h.len;
    }
    off += kRecHeaderSize + h.len;
    next = h.seq + 1;
  }
  if (next == 0) return;
  buf_hint_seq = next;
  buf_hint_off = off;
  // The buffer goes to the file at file_bytes, so the cursor can point there.
  cursor.seg_first = segments.back().first_seq;
  cursor.next_seq = next;
  cursor.offset = segments.back().file_bytes + off;
}

absl::Status Spool::Impl::ReadSegment(const ReadPlan& p, uint64_t want, size_t max_records,
                                      size_t max_bytes, std::vector<SpoolRecord>* out,
                                      size_t* bytes) {
  Cursor& c = cursor;
  bool reopened = false;
  if (c.fd_seg != p.first_seq || !c.fd.valid()) {
    c.fd.reset();
    c.fd = UniqueFd(open(p.path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!c.fd.valid()) {
      c.fd_seg = 0;
      if (errno == ENOENT) return absl::NotFoundError(p.path);
      return IoError(errno, "open", p.path);
    }
    c.fd_seg = p.first_seq;
    reopened = true;
    (void)posix_fadvise(c.fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  }
  if (c.seg_first != p.first_seq || c.next_seq > want) {
    c.seg_first = p.first_seq;
    c.next_seq = p.first_seq;
    c.offset = kSegHeaderSize;
  }
  if (reopened || c.reader.offset() != c.offset) c.reader.Reset(c.fd.get(), c.offset, p.path);
  while (!Full(*out, *bytes, max_records, max_bytes)) {
    Frame f;
    absl::StatusOr<FrameKind> kind = c.reader.Next(p.limit, &f);
    if (!kind.ok()) return kind.status();
    if (*kind == FrameKind::kEnd) {
      c.next_seq = std::max(c.next_seq, p.region_last + 1);
      break;
    }
    if (*kind == FrameKind::kDamaged || f.h.seq < c.next_seq) {
      return absl::DataLossError(absl::StrCat(p.path, " at ", c.reader.offset()));
    }
    c.next_seq = f.h.seq + 1;
    c.offset = c.reader.offset();
    if (f.h.seq < want) continue;
    out->push_back({f.h.seq, std::string(f.payload)});
    *bytes += f.payload.size();
  }
  c.offset = c.reader.offset();
  return absl::OkStatus();
}

// A record that checked out at open (or was written since) no longer does:
// skip the rest of what was readable of that segment and count it as
// damaged. A closed segment is also cut there, so that the next open does
// not count it again; the active one is left to the appender (the next open
// cuts it, counting what follows the damage once more: this is about a
// failing disk, where too high beats silent).
void Spool::Impl::HandleReadDamage(const ReadPlan& p) {
  Cursor& c = cursor;
  const uint64_t off = c.reader.offset();
  const uint64_t bad_seq = c.next_seq;
  c.seg_first = p.first_seq;
  c.offset = p.limit;
  c.next_seq = p.region_last + 1;
  c.reader.Reset(c.fd.get(), p.limit, p.path);
  auto it = FindSegment(p.first_seq);
  if (it == segments.end()) return;  // acknowledged or dropped meanwhile
  Segment& s = *it;
  const bool active = has_active() && std::next(it) == segments.end();
  const uint64_t from = std::max(bad_seq, acked + 1);
  const uint64_t lost = p.region_last >= from ? p.region_last - from + 1 : 0;
  s.records -= std::min(s.records, lost);
  if (!active && off <= s.file_bytes && truncate(s.path.c_str(), static_cast<off_t>(off)) == 0) {
    total_bytes -= s.file_bytes - off;
    s.file_bytes = off;
    c.offset = off;
    c.reader.Reset(c.fd.get(), off, p.path);
    s.last_seq = std::max(s.first_seq, bad_seq) - 1;
  }
  damaged += lost;
  AddLoss(lost, s.times);
  (void)WriteState();  // the count is in memory regardless
}

absl::Status Spool::Impl::ForgetVanished(const ReadPlan& p) {
  auto it = FindSegment(p.first_seq);
  if (it == segments.end()) return absl::OkStatus();  // went the normal way
  if (has_active() && std::next(it) == segments.end()) {
    return absl::DataLossError(absl::StrCat("spool: ", p.path, " (being written) vanished"));
  }
  const SegLoss l = LostIn(*it);
  damaged += l.records;
  AddLoss(l.records + l.carried, l.times);
  total_bytes -= it->file_bytes;
  segments.erase(it);
  return WriteState();
}

absl::Status Spool::Read(uint64_t after, size_t max_records, size_t max_bytes,
                         std::vector<SpoolRecord>* out) {
  Impl& m = *impl_;
  out->clear();
  if (max_records == 0 || after == std::numeric_limits<uint64_t>::max()) {
    return absl::OkStatus();
  }
  absl::MutexLock rl(&m.read_mu);
  uint64_t want = after + 1;
  size_t bytes = 0;
  for (;;) {
    ReadPlan plan;
    {
      absl::MutexLock l(&m.mu);
      // What went while we read unlocked was acknowledged, or dropped and
      // counted as lost: not returned.
      const uint64_t floor = m.ReadFloor();
      auto keep = std::find_if(out->begin(), out->end(),
                               [&](const SpoolRecord& r) { return r.seq > floor; });
      for (auto r = out->begin(); r != keep; ++r) bytes -= r->payload.size();
      out->erase(out->begin(), keep);
      if (Full(*out, bytes, max_records, max_bytes)) return absl::OkStatus();
      want = std::max(want, floor + 1);
      auto it = std::partition_point(m.segments.begin(), m.segments.end(),
                                     [&](const Segment& s) { return s.last_seq < want; });
      if (it == m.segments.end()) return absl::OkStatus();
      want = std::max(want, it->first_seq);
      const bool active = m.has_active() && std::next(it) == m.segments.end();
      if (active && want > m.flushed_last_seq) {
        m.ReadBuffer(want, max_records, max_bytes, out, &bytes);
        return absl::OkStatus();
      }
      plan = {it->path, it->first_seq, it->file_bytes, active ? m.flushed_last_seq : it->last_seq};
    }
    absl::Status s = m.ReadSegment(plan, want, max_records, max_bytes, out, &bytes);
    if (absl::IsNotFound(s)) {
      absl::MutexLock l(&m.mu);
      if (absl::Status f = m.ForgetVanished(plan); !f.ok()) return f;
      continue;
    }
    if (absl::IsDataLoss(s)) {
      absl::MutexLock l(&m.mu);
      m.HandleReadDamage(plan);
      want = std::max(want, m.cursor.next_seq);
      continue;
    }
    if (!s.ok()) return s;
    want = m.cursor.next_seq;
  }
}

bool Spool::WaitFor(uint64_t after, absl::Duration timeout) {
  Impl& m = *impl_;
  absl::MutexLock l(&m.mu);
  const auto ready = [&m, after] { return m.last_seq() > std::max(after, m.acked); };
  return m.mu.AwaitWithTimeout(absl::Condition(&ready), timeout);
}

absl::Status Spool::Ack(uint64_t seq) {
  Impl& m = *impl_;
  std::vector<std::string> unlink_paths;
  absl::Status status;
  {
    absl::MutexLock l(&m.mu);
    // Beyond the last record would hide records not yet appended.
    seq = std::min(seq, m.last_seq());
    if (seq <= m.acked) return absl::OkStatus();
    m.acked = seq;
    while (!m.segments.empty() && m.segments.front().last_seq <= m.acked &&
           !(m.has_active() && m.segments.size() == 1)) {
      m.total_bytes -= m.segments.front().file_bytes;
      unlink_paths.push_back(m.segments.front().path);
      m.segments.pop_front();
    }
    status = m.WriteState();
    if (status.ok() && m.opts.fsync == SpoolFsync::kAlways) m.state_dirty = false;
  }
  if (status.ok() && m.opts.fsync == SpoolFsync::kAlways && fdatasync(m.state_fd.get()) != 0) {
    status = IoError(errno, "fsync", kStateName);
  }
  for (const std::string& path : unlink_paths) {
    if (unlink(path.c_str()) != 0 && errno != ENOENT && status.ok()) {
      status = IoError(errno, "delete", path);
    }
  }
  return status;
}

std::optional<SpoolLoss> Spool::TakeLoss() {
  Impl& m = *impl_;
  absl::MutexLock l(&m.mu);
  if (m.pending.count == 0) return std::nullopt;
  SpoolLoss loss;
  loss.count = m.pending.count;
  if (m.pending.times.known()) {
    loss.first = absl::FromUnixNanos(m.pending.times.first);
    loss.last = absl::FromUnixNanos(m.pending.times.last);
  }
  m.pending = {};
  // If this write fails the loss is reported again after a restart: twice
  // rather than never.
  if (m.WriteState().ok() && m.opts.fsync == SpoolFsync::kAlways) {
    (void)fdatasync(m.state_fd.get());
    m.state_dirty = false;
  }
  return loss;
}

SpoolStats Spool::stats() const {
  const Impl& m = *impl_;
  absl::MutexLock l(&m.mu);
  SpoolStats st;
  st.appended = m.appended;
  st.bytes = m.total_bytes - m.buffer.size();
  st.segments = m.segments.size();
  for (const Segment& s : m.segments) {
    if (s.first_seq > m.acked) {
      st.unacked += s.records;
    } else if (s.last_seq > m.acked) {
      st.unacked += std::min(s.records, s.last_seq - m.acked);
    }
  }
  st.dropped = m.dropped;
  st.damaged = m.damaged;
  st.acked_seq = m.acked;
  st.last_seq = m.last_seq();
  return st;
}

}  // namespace sockwatch
