// The disk spool (see spool.h): the Spool class, that is the policy over the
// on-disk format in spool_format.h -- sequencing, buffering, overflow, the
// acknowledged position, loss accounting, fsync and reading.
//
// Each Open starts a new segment, so a file is only ever appended to by the
// process that created it. The state file also holds the flock that keeps a
// second agent out of the directory.
//
// Locks: mu guards everything shared; flush_mu serializes Flush so that fsync
// runs outside mu; read_mu serializes Read and owns its cursor, so segment
// reads (pread) run outside mu too. Order: flush_mu or read_mu, then mu.
#include "agent/spool.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <deque>
#include <limits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "agent/spool_format.h"

namespace sockwatch {

namespace {

using spool_internal::Cursor;
using spool_internal::Full;
using spool_internal::IoError;
using spool_internal::kMaxPayload;
using spool_internal::kRecHeaderSize;
using spool_internal::kSegHeaderSize;
using spool_internal::kStateName;
using spool_internal::PwriteAll;
using spool_internal::ReadPlan;
using spool_internal::SegLoss;
using spool_internal::Segment;
using spool_internal::TimeRange;
using spool_internal::UniqueFd;

constexpr size_t kWriteBytes = 64 << 10;  // buffered records are written past this
constexpr size_t kMaxUnsynced = 16;       // closed segments awaiting fsync at most

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

  uint64_t last_seq() const { return next_seq - 1; }
  bool has_active() const { return active_fd.valid(); }
  absl::Status WriteBuffer();
  absl::Status Roll();
  SegLoss LostIn(const Segment& s);
  // loss_changed: the write must reach the disk at the next sync. A new
  // acked position alone need not: losing it to a crash only means resending.
  absl::Status WriteState(bool loss_changed = true);
  uint64_t ReadFloor() const {
    return std::max(acked, segments.empty() ? last_seq() : segments.front().first_seq - 1);
  }
  void ReadBuffer(uint64_t want, size_t max_records, size_t max_bytes,
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
  bool state_dirty ABSL_GUARDED_BY(mu) = false;   // a loss change not yet fsynced
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
  if (absl::Status s = spool_internal::MakeDir(opts.dir); !s.ok()) return s;
  dir_fd = UniqueFd(open(opts.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd.valid()) return IoError(errno, "open directory", opts.dir);
  absl::StatusOr<UniqueFd> fd = spool_internal::OpenStateFile(opts.dir);
  if (!fd.ok()) return fd.status();
  state_fd = *std::move(fd);
  return absl::OkStatus();
}

absl::Status Spool::Impl::LoadState() {
  absl::StatusOr<spool_internal::StateSlot> slot =
      spool_internal::ReadStateFile(state_fd.get(), absl::StrCat(opts.dir, "/", kStateName));
  if (!slot.ok()) return slot.status();
  state_gen = slot->gen;
  acked = slot->acked;
  pending = {slot->loss_count, slot->loss_times};
  return absl::OkStatus();
}

absl::Status Spool::Impl::WriteState(bool loss_changed) {
  ++state_gen;
  state_dirty |= loss_changed;
  absl::Status s = spool_internal::WriteStateSlot(state_fd.get(),
                                                  {state_gen, acked, pending.count, pending.times},
                                                  absl::StrCat(opts.dir, "/", kStateName));
  state_failed = !s.ok();
  return s;
}

absl::Status Spool::Impl::ScanSegments() {
  absl::StatusOr<std::vector<std::pair<uint64_t, std::string>>> found =
      spool_internal::ListSegments(opts.dir);
  if (!found.ok()) return found.status();
  uint64_t highest = acked;
  PendingLoss damage;
  bool removed = false;
  for (const auto& [first, name] : *found) {
    const std::string path = absl::StrCat(opts.dir, "/", name);
    absl::StatusOr<spool_internal::SegmentScan> scan =
        spool_internal::ScanSegment(path, first, acked, opts.fsync != SpoolFsync::kNever);
    if (!scan.ok()) return scan.status();
    highest = std::max(highest, scan->highest_seq);
    if (scan->lost > 0) damage.Add(scan->lost, scan->lost_times);
    Segment& seg = scan->seg;
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
  const std::string path = spool_internal::SegmentPath(opts.dir, next_seq);
  absl::StatusOr<UniqueFd> fd = spool_internal::CreateSegment(path, next_seq);
  if (!fd.ok()) return fd.status();
  Segment seg;
  seg.first_seq = next_seq;
  seg.last_seq = next_seq - 1;
  seg.file_bytes = kSegHeaderSize;
  seg.path = path;
  segments.push_back(std::move(seg));
  active_fd = *std::move(fd);
  flushed_last_seq = next_seq - 1;
  total_bytes += kSegHeaderSize;
  dir_dirty = true;
  return absl::OkStatus();
}

SegLoss Spool::Impl::LostIn(const Segment& s) {
  if (s.records == 0 || s.last_seq <= acked) return {};
  if (s.first_seq > acked) return {s.records, s.carried, s.times};
  // Partly acknowledged: read it to count exactly what lies above the position.
  if (std::optional<SegLoss> l = spool_internal::CountAbove(s.path, s.file_bytes, acked)) {
    return *l;
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
    m.AddLoss(spool_internal::CountRecords(m.buffer), m.segments.back().times);
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
    const int64_t ns = absl::ToUnixNanos(event_time);
    spool_internal::EncodeRecord(m.buffer.data() + off, seq, ns, carried_loss, payload);
    m.segments.back().Add(seq, ns, carried_loss);
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
  const uint64_t next =
      spool_internal::ReadBuffered(buffer, want, max_records, max_bytes, &off, out, bytes);
  if (next == 0) return;
  buf_hint_seq = next;
  buf_hint_off = off;
  // The buffer goes to the file at file_bytes, so the cursor can point there.
  cursor.seg_first = segments.back().first_seq;
  cursor.next_seq = next;
  cursor.offset = segments.back().file_bytes + off;
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
    absl::Status s =
        spool_internal::ReadSegment(plan, want, max_records, max_bytes, &m.cursor, out, &bytes);
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
    // Not fsynced: losing the new position to a crash only means resending
    // (and a segment already unlinked held nothing to resend).
    status = m.WriteState(/*loss_changed=*/false);
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
  // Synced on the next Flush; if this is lost to a crash the loss is
  // reported again after the restart: twice rather than never.
  (void)m.WriteState();
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
