// The disk spool's on-disk format (see spool_format.h for the layout):
// CRC-32C, framing, the segment and buffer readers, the damage scan and the
// state slots -- apart from the Spool's policy in spool.cc so that each can
// be read (and changed) on its own.
#include "agent/spool_format.h"

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
#include <filesystem>
#include <memory>
#include <system_error>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace sockwatch::spool_internal {

namespace {

static_assert(std::endian::native == std::endian::little,
              "the spool format is little-endian; a big-endian port must swap in Put/Get");

constexpr char kSegMagic[8] = {'S', 'W', 'S', 'P', 'S', 'E', 'G', '1'};
constexpr size_t kReadChunk = 256 << 10;
constexpr uint32_t kStateMagic = 0x54535753;  // "SWST"
constexpr uint32_t kStateVersion = 1;
constexpr size_t kStateSlot = 64;
constexpr size_t kStateCrcAt = 52;

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

// `hdr` is a whole record header; its first 4 bytes are the CRC itself.
uint32_t RecordCrc(const char* hdr, absl::string_view payload) {
  return Crc32c(Crc32c(0, {hdr + 4, kRecHeaderSize - 4}), payload);
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

}  // namespace

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

RecordHeader DecodeHeader(const char* p) {
  return {Get32(p), Get32(p + 4), Get64(p + 8), static_cast<int64_t>(Get64(p + 16)), Get64(p + 24)};
}

void EncodeRecord(char* p, uint64_t seq, int64_t time_ns, uint64_t carried,
                  absl::string_view payload) {
  Put32(p + 4, static_cast<uint32_t>(payload.size()));
  Put64(p + 8, seq);
  Put64(p + 16, static_cast<uint64_t>(time_ns));
  Put64(p + 24, carried);
  memcpy(p + kRecHeaderSize, payload.data(), payload.size());
  Put32(p, RecordCrc(p, payload));
}

uint64_t CountRecords(absl::string_view records) {
  uint64_t n = 0;
  for (size_t off = 0; off < records.size(); ++n) {
    off += kRecHeaderSize + DecodeHeader(records.data() + off).len;
  }
  return n;
}

void UniqueFd::reset() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

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

std::string SegmentPath(absl::string_view dir, uint64_t first_seq) {
  return absl::StrCat(dir, "/seg-", absl::Dec(first_seq, absl::kZeroPad20), ".log");
}

absl::StatusOr<std::vector<std::pair<uint64_t, std::string>>> ListSegments(const std::string& dir) {
  std::vector<std::pair<uint64_t, std::string>> found;
  std::unique_ptr<DIR, int (*)(DIR*)> d(opendir(dir.c_str()), closedir);
  if (!d) return IoError(errno, "list", dir);
  while (struct dirent* e = readdir(d.get())) {
    uint64_t first = 0;
    if (ParseSegmentName(e->d_name, &first)) found.emplace_back(first, e->d_name);
  }
  std::sort(found.begin(), found.end());
  return found;
}

absl::StatusOr<UniqueFd> CreateSegment(const std::string& path, uint64_t first_seq) {
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd.valid()) return IoError(errno, "create", path);
  char hdr[kSegHeaderSize];
  memcpy(hdr, kSegMagic, 8);
  Put64(hdr + 8, first_seq);
  Put32(hdr + 16, 1);
  Put32(hdr + 20, Crc32c(0, {hdr, 20}));
  if (absl::Status s = PwriteAll(fd.get(), {hdr, kSegHeaderSize}, 0, path); !s.ok()) {
    unlink(path.c_str());
    return s;
  }
  return fd;
}

void ChunkReader::Reset(int fd, uint64_t offset, absl::string_view path) {
  fd_ = fd;
  base_ = offset;
  pos_ = len_ = 0;
  path_ = std::string(path);
}

absl::StatusOr<FrameKind> ChunkReader::Next(uint64_t limit, Frame* f) {
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

absl::Status ChunkReader::Fill(uint64_t limit, size_t need) {
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

absl::Status ReadSegment(const ReadPlan& p, uint64_t want, size_t max_records, size_t max_bytes,
                         Cursor* c, std::vector<SpoolRecord>* out, size_t* bytes) {
  bool reopened = false;
  if (c->fd_seg != p.first_seq || !c->fd.valid()) {
    c->fd.reset();
    c->fd = UniqueFd(open(p.path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!c->fd.valid()) {
      c->fd_seg = 0;
      if (errno == ENOENT) return absl::NotFoundError(p.path);
      return IoError(errno, "open", p.path);
    }
    c->fd_seg = p.first_seq;
    reopened = true;
    (void)posix_fadvise(c->fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  }
  if (c->seg_first != p.first_seq || c->next_seq > want) {
    c->seg_first = p.first_seq;
    c->next_seq = p.first_seq;
    c->offset = kSegHeaderSize;
  }
  if (reopened || c->reader.offset() != c->offset) {
    c->reader.Reset(c->fd.get(), c->offset, p.path);
  }
  while (!Full(*out, *bytes, max_records, max_bytes)) {
    Frame f;
    absl::StatusOr<FrameKind> kind = c->reader.Next(p.limit, &f);
    if (!kind.ok()) return kind.status();
    if (*kind == FrameKind::kEnd) {
      c->next_seq = std::max(c->next_seq, p.region_last + 1);
      break;
    }
    if (*kind == FrameKind::kDamaged || f.h.seq < c->next_seq) {
      return absl::DataLossError(absl::StrCat(p.path, " at ", c->reader.offset()));
    }
    c->next_seq = f.h.seq + 1;
    c->offset = c->reader.offset();
    if (f.h.seq < want) continue;
    out->push_back({f.h.seq, std::string(f.payload)});
    *bytes += f.payload.size();
  }
  c->offset = c->reader.offset();
  return absl::OkStatus();
}

uint64_t ReadBuffered(absl::string_view records, uint64_t want, size_t max_records,
                      size_t max_bytes, size_t* off, std::vector<SpoolRecord>* out, size_t* bytes) {
  uint64_t next = 0;
  while (*off < records.size() && !Full(*out, *bytes, max_records, max_bytes)) {
    const char* p = records.data() + *off;
    const RecordHeader h = DecodeHeader(p);
    if (h.seq >= want) {
      out->push_back({h.seq, std::string(p + kRecHeaderSize, h.len)});
      *bytes += h.len;
    }
    *off += kRecHeaderSize + h.len;
    next = h.seq + 1;
  }
  return next;
}

// How many records the cut loses is not known after a torn header, so this
// counts the damaged record plus each later one that can still be framed (a
// sane length leading to a record with a good CRC or the expected seq).
absl::StatusOr<SegmentScan> ScanSegment(const std::string& path, uint64_t first, uint64_t acked,
                                        bool sync) {
  SegmentScan out;
  Segment& seg = out.seg;
  UniqueFd fd(open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd.valid()) return IoError(errno, "open", path);
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return IoError(errno, "stat", path);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  seg.first_seq = first;
  seg.last_seq = first - 1;
  seg.path = path;
  seg.file_bytes = size;
  // The header is written before any record: a short one means no records.
  if (size < kSegHeaderSize) return out;
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
      seg.Add(f.h.seq, f.h.time_ns, f.h.carried);
      min_seq = f.h.seq + 1;
      continue;
    }
    const uint64_t cut = reader.offset();
    absl::StatusOr<Damage> d = FrameDamaged(fd.get(), path, cut, size, min_seq);
    if (!d.ok()) return d.status();
    out.highest_seq = std::max(out.highest_seq, d->highest_seq);
    // Damaged records the collector already acknowledged are not lost.
    const uint64_t acked_part =
        acked >= d->first_seq ? std::min(d->count, acked - d->first_seq + 1) : 0;
    // The damaged record's time is unknown: bound it by the good records
    // around it, or by the file's mtime where there are none.
    const int64_t mtime = int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
    TimeRange t;
    t.Add(seg.times.known() ? seg.times.last : d->times.known() ? d->times.first : mtime);
    t.Add(d->times.known() ? d->times.last : mtime);
    if (d->count > acked_part) {
      out.lost = d->count - acked_part;
      out.lost_times = t;
    }
    if (ftruncate(fd.get(), static_cast<off_t>(cut)) != 0) return IoError(errno, "truncate", path);
    if (sync && fdatasync(fd.get()) != 0) return IoError(errno, "fsync", path);
    seg.file_bytes = cut;
    break;
  }
  out.highest_seq = std::max(out.highest_seq, seg.last_seq);
  return out;
}

std::optional<SegLoss> CountAbove(const std::string& path, uint64_t limit, uint64_t acked) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return std::nullopt;
  SegLoss l;
  ChunkReader r;
  r.Reset(fd.get(), kSegHeaderSize, path);
  for (;;) {
    Frame f;
    absl::StatusOr<FrameKind> k = r.Next(limit, &f);
    if (!k.ok() || *k == FrameKind::kDamaged) return std::nullopt;
    if (*k == FrameKind::kEnd) return l;
    if (f.h.seq > acked) {
      ++l.records;
      l.carried += f.h.carried;
      l.times.Add(f.h.time_ns);
    }
  }
}

absl::StatusOr<UniqueFd> OpenStateFile(const std::string& dir) {
  const std::string path = absl::StrCat(dir, "/", kStateName);
  UniqueFd fd(open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd.valid()) return IoError(errno, "open", path);
  if (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          absl::StrCat("spool: ", dir, " is in use by another spool (", path, " is locked)"));
    }
    return IoError(errno, "lock", path);
  }
  return fd;
}

absl::StatusOr<StateSlot> ReadStateFile(int fd, const std::string& path) {
  char buf[2 * kStateSlot];
  const ssize_t n = pread(fd, buf, sizeof(buf), 0);
  if (n < 0) return IoError(errno, "read", path);
  std::optional<StateSlot> newest;
  for (size_t slot = 0; slot < 2; ++slot) {
    if (static_cast<size_t>(n) < (slot + 1) * kStateSlot) break;
    const char* p = buf + slot * kStateSlot;
    if (Get32(p) != kStateMagic || Get32(p + 4) != kStateVersion ||
        Get32(p + kStateCrcAt) != Crc32c(0, {p, kStateCrcAt})) {
      continue;  // torn or never written: the other slot holds the state
    }
    const uint64_t gen = Get64(p + 8);
    if (newest.has_value() && gen < newest->gen) continue;
    newest = StateSlot{gen, Get64(p + 16), Get64(p + 24), {}};
    newest->loss_times.first = static_cast<int64_t>(Get64(p + 32));
    newest->loss_times.last = static_cast<int64_t>(Get64(p + 40));
  }
  return newest.value_or(StateSlot{});
}

absl::Status WriteStateSlot(int fd, const StateSlot& s, const std::string& path) {
  char p[kStateSlot] = {};
  Put32(p, kStateMagic);
  Put32(p + 4, kStateVersion);
  Put64(p + 8, s.gen);
  Put64(p + 16, s.acked);
  Put64(p + 24, s.loss_count);
  Put64(p + 32, static_cast<uint64_t>(s.loss_times.first));
  Put64(p + 40, static_cast<uint64_t>(s.loss_times.last));
  Put32(p + kStateCrcAt, Crc32c(0, {p, kStateCrcAt}));
  return PwriteAll(fd, {p, kStateSlot}, (s.gen % 2) * kStateSlot, path);
}

}  // namespace sockwatch::spool_internal
