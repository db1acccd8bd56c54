#include "agent/spool.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace sockwatch {
namespace {

namespace fs = std::filesystem;

constexpr size_t kSegHeader = 24;  // file header, as documented in spool_format.h
constexpr size_t kRecHeader = 32;  // record header
constexpr size_t kPayload = 300;
constexpr size_t kRecord = kRecHeader + kPayload;
// A 4 KiB segment holds 12 records of 300 bytes: 24 + 12 * 332 = 4008.
constexpr uint64_t kPerSegment = 12;

// Distinct, checkable payload for each record number.
std::string Payload(uint64_t n, size_t size = kPayload) {
  std::string p = absl::StrCat("rec-", n, "-");
  while (p.size() < size) p.push_back(static_cast<char>('a' + (n + p.size()) % 26));
  p.resize(size);
  return p;
}

// Event times near now, one second apart, so they are ordered like real ones.
const absl::Time kBase = absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now()) - 3600);
absl::Time T(uint64_t n) { return kBase + absl::Seconds(static_cast<int64_t>(n)); }

// Bitwise CRC-32C, independent of the spool's table/SSE4.2 code.
uint32_t Crc32c(absl::string_view data, uint32_t crc = 0) {
  crc = ~crc;
  for (char ch : data) {
    crc ^= static_cast<uint8_t>(ch);
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

template <typename T>
T Get(const std::string& s, size_t off) {
  T v;
  memcpy(&v, s.data() + off, sizeof(v));
  return v;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void OverwriteByte(const std::string& path, uint64_t off) {
  int fd = open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << path;
  char c;
  ASSERT_EQ(pread(fd, &c, 1, static_cast<off_t>(off)), 1);
  c ^= 0x5a;
  ASSERT_EQ(pwrite(fd, &c, 1, static_cast<off_t>(off)), 1);
  close(fd);
}

std::vector<uint64_t> Seqs(const std::vector<SpoolRecord>& recs) {
  std::vector<uint64_t> seqs;
  for (const SpoolRecord& r : recs) seqs.push_back(r.seq);
  return seqs;
}

std::vector<uint64_t> Range(uint64_t from, uint64_t to) {
  std::vector<uint64_t> v;
  for (uint64_t i = from; i <= to; ++i) v.push_back(i);
  return v;
}

class SpoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/spool_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    dir_ = root_ + "/spool";
  }
  void TearDown() override { fs::remove_all(root_); }

  SpoolOptions Options(uint64_t segment_bytes = 4096, uint64_t max_bytes = 1 << 20) const {
    SpoolOptions o;
    o.dir = dir_;
    o.segment_bytes = segment_bytes;
    o.max_bytes = max_bytes;
    o.fsync = SpoolFsync::kNever;
    return o;
  }

  std::unique_ptr<Spool> MustOpen(const SpoolOptions& o) {
    absl::StatusOr<std::unique_ptr<Spool>> s = Spool::Open(o);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }

  // Appends records from..to (payload and time by number), checking each seq.
  void AppendRange(Spool& s, uint64_t from, uint64_t to, uint64_t first_seq = 0) {
    for (uint64_t n = from; n <= to; ++n) {
      absl::StatusOr<uint64_t> seq = s.Append(Payload(n), T(n));
      ASSERT_TRUE(seq.ok()) << seq.status();
      if (first_seq != 0) {
        ASSERT_EQ(*seq, first_seq + (n - from));
      }
    }
  }

  // Everything after `after`, in batches, as the exporter reads it.
  std::vector<SpoolRecord> ReadAll(Spool& s, uint64_t after = 0, size_t batch = 7) {
    std::vector<SpoolRecord> all, part;
    for (;;) {
      absl::Status st = s.Read(after, batch, 1 << 20, &part);
      EXPECT_TRUE(st.ok()) << st;
      if (!st.ok() || part.empty()) return all;
      after = part.back().seq;
      std::move(part.begin(), part.end(), std::back_inserter(all));
    }
  }

  // Checks that each record holds the payload it was appended with, where
  // record n was appended as seq n.
  void ExpectPayloads(const std::vector<SpoolRecord>& recs) {
    for (const SpoolRecord& r : recs) ASSERT_EQ(r.payload, Payload(r.seq)) << r.seq;
  }

  std::vector<std::string> SegmentFiles() const {
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(dir_)) {
      if (e.path().filename().string().rfind("seg-", 0) == 0) files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    return files;
  }

  std::string root_;
  std::string dir_;
};

TEST_F(SpoolTest, AppendThenReadInOrderFlushedOrNot) {
  auto spool = MustOpen(Options(1 << 20, 4 << 20));
  ASSERT_NE(spool, nullptr);
  std::vector<std::string> payloads;
  for (uint64_t n = 1; n <= 100; ++n) {
    payloads.push_back(Payload(n, 1 + (n * 37) % 600));
    absl::StatusOr<uint64_t> seq = spool->Append(payloads.back(), T(n));
    ASSERT_TRUE(seq.ok()) << seq.status();
    EXPECT_EQ(*seq, n);
    if (n == 60) {
      ASSERT_TRUE(spool->Flush().ok());  // 61..100 stay in memory
    }
  }
  std::vector<SpoolRecord> got;
  ASSERT_TRUE(spool->Read(0, 1000, 1 << 30, &got).ok());
  ASSERT_EQ(got.size(), 100u);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].seq, i + 1);
    EXPECT_EQ(got[i].payload, payloads[i]);
  }
  const SpoolStats st = spool->stats();
  EXPECT_EQ(st.appended, 100u);
  EXPECT_EQ(st.last_seq, 100u);
  EXPECT_EQ(st.unacked, 100u);
  EXPECT_EQ(st.segments, 1u);
}

TEST_F(SpoolTest, ReadHonoursLimitsAndResumesWhereItStopped) {
  auto spool = MustOpen(Options());
  ASSERT_NE(spool, nullptr);
  AppendRange(*spool, 1, 50, 1);
  ASSERT_TRUE(spool->Flush().ok());
  AppendRange(*spool, 51, 100, 51);

  std::vector<SpoolRecord> got;
  ASSERT_TRUE(spool->Read(0, 7, 1 << 20, &got).ok());
  EXPECT_EQ(Seqs(got), Range(1, 7));
  // max_bytes below one payload still returns one record.
  ASSERT_TRUE(spool->Read(7, 100, 1, &got).ok());
  EXPECT_EQ(Seqs(got), Range(8, 8));
  // About max_bytes: stops once the payloads reach it.
  ASSERT_TRUE(spool->Read(8, 100, 3 * kPayload, &got).ok());
  EXPECT_EQ(Seqs(got), Range(9, 11));
  std::vector<SpoolRecord> rest = ReadAll(*spool, 11, 13);
  EXPECT_EQ(Seqs(rest), Range(12, 100));
  ExpectPayloads(rest);
  // Rereading from an earlier point (a reconnect) gives the same records.
  std::vector<SpoolRecord> again = ReadAll(*spool, 40, 1000);
  EXPECT_EQ(Seqs(again), Range(41, 100));
  ExpectPayloads(again);
}

TEST_F(SpoolTest, ReopenKeepsRecordsAckedPositionAndSequence) {
  {
    auto spool = MustOpen(Options());
    ASSERT_NE(spool, nullptr);
    AppendRange(*spool, 1, 1000, 1);
    ASSERT_TRUE(spool->Ack(400).ok());
    // No Flush: closing writes what is buffered.
  }
  auto spool = MustOpen(Options());
  ASSERT_NE(spool, nullptr);
  SpoolStats st = spool->stats();
  EXPECT_EQ(st.acked_seq, 400u);
  EXPECT_EQ(st.last_seq, 1000u);
  EXPECT_EQ(st.unacked, 600u);
  EXPECT_EQ(st.damaged, 0u);
  EXPECT_FALSE(spool->TakeLoss().has_value());
  // The exporter replays from the acked position (or from 0: same result).
  std::vector<SpoolRecord> replay = ReadAll(*spool, 0, 64);
  EXPECT_EQ(Seqs(replay), Range(401, 1000));
  ExpectPayloads(replay);
  absl::StatusOr<uint64_t> seq = spool->Append(Payload(1001), T(1001));
  ASSERT_TRUE(seq.ok()) << seq.status();
  EXPECT_EQ(*seq, 1001u);
  std::vector<SpoolRecord> tail = ReadAll(*spool, 1000);
  EXPECT_EQ(Seqs(tail), Range(1001, 1001));
}

TEST_F(SpoolTest, AckDeletesSegmentsAndAckedRecordsAreNeverRead) {
  auto spool = MustOpen(Options());
  ASSERT_NE(spool, nullptr);
  AppendRange(*spool, 1, 10 * kPerSegment, 1);
  ASSERT_TRUE(spool->Flush().ok());
  ASSERT_EQ(SegmentFiles().size(), 10u);
  EXPECT_EQ(spool->stats().segments, 10u);
  const uint64_t before = spool->stats().bytes;

  ASSERT_TRUE(spool->Ack(5 * kPerSegment).ok());
  EXPECT_EQ(SegmentFiles().size(), 5u);
  SpoolStats st = spool->stats();
  EXPECT_EQ(st.segments, 5u);
  EXPECT_EQ(st.acked_seq, 60u);
  EXPECT_EQ(st.unacked, 60u);
  EXPECT_EQ(st.bytes, before - 5 * (kSegHeader + kPerSegment * kRecord));
  EXPECT_EQ(Seqs(ReadAll(*spool, 0)), Range(61, 120));
  EXPECT_EQ(Seqs(ReadAll(*spool, 30)), Range(61, 120));

  // Inside a segment: nothing deleted, but acked records are not read.
  ASSERT_TRUE(spool->Ack(65).ok());
  EXPECT_EQ(SegmentFiles().size(), 5u);
  EXPECT_EQ(Seqs(ReadAll(*spool, 0)), Range(66, 120));

  // Lower than the position: ignored.
  ASSERT_TRUE(spool->Ack(10).ok());
  EXPECT_EQ(spool->stats().acked_seq, 65u);

  // Beyond the last record: held at the last, so later records are read.
  ASSERT_TRUE(spool->Ack(1000000).ok());
  EXPECT_EQ(spool->stats().acked_seq, 120u);
  EXPECT_EQ(SegmentFiles().size(), 1u);  // the one being written stays
  AppendRange(*spool, 121, 121, 121);
  EXPECT_EQ(Seqs(ReadAll(*spool, 0)), Range(121, 121));
}

TEST_F(SpoolTest, OverflowDropsOldestSegmentsAndReportsTheExactLoss) {
  const SpoolOptions opts = Options(4096, 3 * 4096);
  auto spool = MustOpen(opts);
  ASSERT_NE(spool, nullptr);
  // Record 1 reports an earlier loss of 5; it must not be forgotten.
  ASSERT_EQ(*spool->Append(Payload(1), T(1), /*carried_loss=*/5), 1u);
  for (uint64_t n = 2; n <= 100; ++n) {
    ASSERT_EQ(*spool->Append(Payload(n), T(n)), n);
    ASSERT_LE(spool->stats().bytes, opts.max_bytes) << n;
  }
  ASSERT_TRUE(spool->Flush().ok());
  EXPECT_LE(spool->stats().bytes, opts.max_bytes);
  EXPECT_LE(SegmentFiles().size(), 3u);

  std::vector<SpoolRecord> kept = ReadAll(*spool);
  ASSERT_FALSE(kept.empty());
  const uint64_t first_kept = kept.front().seq;
  EXPECT_EQ(Seqs(kept), Range(first_kept, 100));
  ExpectPayloads(kept);
  const uint64_t dropped = first_kept - 1;
  ASSERT_GT(dropped, 0u);
  EXPECT_EQ(dropped % kPerSegment, 0u);  // whole segments go
  EXPECT_EQ(spool->stats().dropped, dropped);

  std::optional<SpoolLoss> loss = spool->TakeLoss();
  ASSERT_TRUE(loss.has_value());
  EXPECT_EQ(loss->count, dropped + 5);
  EXPECT_EQ(loss->first, T(1));
  EXPECT_EQ(loss->last, T(dropped));
  EXPECT_FALSE(spool->TakeLoss().has_value());
}

TEST_F(SpoolTest, OverflowCountsOnlyRecordsAboveTheAckedPosition) {
  auto spool = MustOpen(Options(4096, 3 * 4096));
  ASSERT_NE(spool, nullptr);
  AppendRange(*spool, 1, kPerSegment, 1);
  ASSERT_TRUE(spool->Ack(5).ok());
  uint64_t n = kPerSegment;
  while (spool->stats().dropped == 0) {
    ++n;
    ASSERT_LT(n, 1000u) << "never overflowed";
    ASSERT_EQ(*spool->Append(Payload(n), T(n)), n);
  }
  EXPECT_EQ(spool->stats().dropped, kPerSegment - 5);
  std::optional<SpoolLoss> loss = spool->TakeLoss();
  ASSERT_TRUE(loss.has_value());
  EXPECT_EQ(loss->count, kPerSegment - 5);
  EXPECT_EQ(loss->first, T(6));
  EXPECT_EQ(loss->last, T(kPerSegment));
}

TEST_F(SpoolTest, PendingLossSurvivesReopenUntilTaken) {
  const SpoolOptions opts = Options(4096, 3 * 4096);
  uint64_t count = 0;
  {
    auto spool = MustOpen(opts);
    ASSERT_NE(spool, nullptr);
    AppendRange(*spool, 1, 100, 1);
    count = spool->stats().dropped;
    ASSERT_GT(count, 0u);
  }
  {
    auto spool = MustOpen(opts);
    ASSERT_NE(spool, nullptr);
    std::optional<SpoolLoss> loss = spool->TakeLoss();
    ASSERT_TRUE(loss.has_value());
    EXPECT_EQ(loss->count, count);
    EXPECT_EQ(loss->first, T(1));
    EXPECT_EQ(loss->last, T(count));
  }
  auto spool = MustOpen(opts);
  ASSERT_NE(spool, nullptr);
  EXPECT_FALSE(spool->TakeLoss().has_value());
  EXPECT_EQ(Seqs(ReadAll(*spool)).front(), count + 1);  // and the records are still there
}

TEST_F(SpoolTest, TornTailIsCutCountedAndItsSeqNotReused) {
  const SpoolOptions opts = Options(1 << 20, 4 << 20);
  {
    auto spool = MustOpen(opts);
    ASSERT_NE(spool, nullptr);
    AppendRange(*spool, 1, 20, 1);
  }
  ASSERT_EQ(SegmentFiles().size(), 1u);
  const std::string seg = SegmentFiles()[0];
  ASSERT_EQ(fs::file_size(seg), kSegHeader + 20 * kRecord);
  fs::resize_file(seg, kSegHeader + 20 * kRecord - 10);  // crash mid-record

  {
    auto spool = MustOpen(opts);
    ASSERT_NE(spool, nullptr);
    EXPECT_EQ(spool->stats().damaged, 1u);
    EXPECT_EQ(fs::file_size(seg), kSegHeader + 19 * kRecord);
    std::vector<SpoolRecord> got = ReadAll(*spool);
    EXPECT_EQ(Seqs(got), Range(1, 19));
    ExpectPayloads(got);
    std::optional<SpoolLoss> loss = spool->TakeLoss();
    ASSERT_TRUE(loss.has_value());
    EXPECT_EQ(loss->count, 1u);
    // The torn record came after record 19 and before the file's last write.
    EXPECT_EQ(loss->first, T(19));
    EXPECT_GE(loss->last, T(19));
    EXPECT_LE(loss->last, absl::Now());
    // 20 may have reached the collector before the crash: never reused.
    EXPECT_EQ(*spool->Append(Payload(21), T(21)), 21u);
  }
  auto spool = MustOpen(opts);
  ASSERT_NE(spool, nullptr);
  EXPECT_EQ(spool->stats().damaged, 0u);  // the cut was made once
  EXPECT_FALSE(spool->TakeLoss().has_value());
  std::vector<uint64_t> want = Range(1, 19);
  want.push_back(21);
  EXPECT_EQ(Seqs(ReadAll(*spool)), want);
}

TEST_F(SpoolTest, FlippedPayloadByteCutsTheSegmentAndCountsTheRecordsAfter) {
  const SpoolOptions opts = Options(1 << 20, 4 << 20);
  {
    auto spool = MustOpen(opts);
    ASSERT_NE(spool, nullptr);
    AppendRange(*spool, 1, 20, 1);
  }
  const std::string seg = SegmentFiles()[0];
  OverwriteByte(seg, kSegHeader + 9 * kRecord + kRecHeader + 100);  // in record 10

  auto spool = MustOpen(opts);
  ASSERT_NE(spool, nullptr);
  // Record 10 and the 10 records framed after it.
  EXPECT_EQ(spool->stats().damaged, 11u);
  EXPECT_EQ(fs::file_size(seg), kSegHeader + 9 * kRecord);
  std::vector<SpoolRecord> got = ReadAll(*spool);
  EXPECT_EQ(Seqs(got), Range(1, 9));
  ExpectPayloads(got);
  std::optional<SpoolLoss> loss = spool->TakeLoss();
  ASSERT_TRUE(loss.has_value());
  EXPECT_EQ(loss->count, 11u);
  EXPECT_EQ(loss->first, T(9));
  EXPECT_EQ(loss->last, T(20));
  EXPECT_EQ(*spool->Append(Payload(21), T(21)), 21u);
  EXPECT_EQ(Seqs(ReadAll(*spool, 9)), Range(21, 21));
}

TEST_F(SpoolTest, DamageInAnOlderSegmentKeepsTheLaterOnes) {
  {
    auto spool = MustOpen(Options());
    ASSERT_NE(spool, nullptr);
    AppendRange(*spool, 1, 3 * kPerSegment, 1);
  }
  ASSERT_EQ(SegmentFiles().size(), 3u);
  OverwriteByte(SegmentFiles()[0], kSegHeader + 4 * kRecord + kRecHeader + 7);  // record 5

  auto spool = MustOpen(Options());
  ASSERT_NE(spool, nullptr);
  EXPECT_EQ(spool->stats().damaged, kPerSegment - 4);
  std::vector<SpoolRecord> got = ReadAll(*spool);
  std::vector<uint64_t> want = Range(1, 4);
  for (uint64_t s : Range(kPerSegment + 1, 3 * kPerSegment)) want.push_back(s);
  EXPECT_EQ(Seqs(got), want);
  ExpectPayloads(got);
  std::optional<SpoolLoss> loss = spool->TakeLoss();
  ASSERT_TRUE(loss.has_value());
  EXPECT_EQ(loss->count, kPerSegment - 4);
  EXPECT_EQ(loss->first, T(4));
  EXPECT_EQ(loss->last, T(kPerSegment));
}

TEST_F(SpoolTest, DamageFoundWhileReadingIsSkippedCountedAndCut) {
  {
    auto spool = MustOpen(Options());
    ASSERT_NE(spool, nullptr);
    AppendRange(*spool, 1, 3 * kPerSegment, 1);
    ASSERT_TRUE(spool->Flush().ok());
    // The disk goes bad under a running spool: record 5 no longer checks out.
    OverwriteByte(SegmentFiles()[0], kSegHeader + 4 * kRecord + kRecHeader + 7);
    std::vector<SpoolRecord> got = ReadAll(*spool);
    std::vector<uint64_t> want = Range(1, 4);
    for (uint64_t s : Range(kPerSegment + 1, 3 * kPerSegment)) want.push_back(s);
    EXPECT_EQ(Seqs(got), want);
    ExpectPayloads(got);
    EXPECT_EQ(spool->stats().damaged, kPerSegment - 4);
    std::optional<SpoolLoss> loss = spool->TakeLoss();
    ASSERT_TRUE(loss.has_value());
    EXPECT_EQ(loss->count, kPerSegment - 4);
    // Rereading does not count it again.
    EXPECT_EQ(Seqs(ReadAll(*spool)), want);
    EXPECT_FALSE(spool->TakeLoss().has_value());
  }
  auto spool = MustOpen(Options());
  ASSERT_NE(spool, nullptr);
  EXPECT_EQ(spool->stats().damaged, 0u);  // cut while running, not found again
  EXPECT_EQ(Seqs(ReadAll(*spool)).size(), 4 + 2 * kPerSegment);
}

TEST_F(SpoolTest, ReadAfterDroppedRecordsContinuesFromTheOldestKept) {
  auto spool = MustOpen(Options(4096, 3 * 4096));
  ASSERT_NE(spool, nullptr);
  AppendRange(*spool, 1, 100, 1);
  const uint64_t first_kept = spool->stats().dropped + 1;
  ASSERT_GT(first_kept, 2u);
  std::vector<SpoolRecord> got;
  ASSERT_TRUE(spool->Read(0, 5, 1 << 20, &got).ok());
  EXPECT_EQ(Seqs(got), Range(first_kept, first_kept + 4));
  ASSERT_TRUE(spool->Read(first_kept - 2, 5, 1 << 20, &got).ok());
  EXPECT_EQ(Seqs(got), Range(first_kept, first_kept + 4));
  ASSERT_TRUE(spool->Read(first_kept, 5, 1 << 20, &got).ok());
  EXPECT_EQ(Seqs(got), Range(first_kept + 1, first_kept + 5));
  ExpectPayloads(got);
}

TEST_F(SpoolTest, ConcurrentAppenderAndReaderDeliverEveryRecordOnceInOrder) {
  constexpr uint64_t kCount = 200000;
  SpoolOptions opts = Options(256 << 10, 1ull << 30);
  auto spool = MustOpen(opts);
  ASSERT_NE(spool, nullptr);
  std::thread appender([&] {
    for (uint64_t n = 1; n <= kCount; ++n) {
      absl::StatusOr<uint64_t> seq = spool->Append(Payload(n, 40 + n % 100), T(0));
      if (!seq.ok() || *seq != n) {
        ADD_FAILURE() << "append " << n << ": " << seq.status();
        return;
      }
      if (n % 1000 == 0 && !spool->Flush().ok()) ADD_FAILURE() << "flush";
    }
    if (!spool->Flush().ok()) ADD_FAILURE() << "flush";
  });
  uint64_t last = 0, received = 0;
  std::vector<SpoolRecord> batch;
  const absl::Time deadline = absl::Now() + absl::Seconds(120);
  while (last < kCount && absl::Now() < deadline) {
    if (!spool->WaitFor(last, absl::Milliseconds(100))) continue;
    ASSERT_TRUE(spool->Read(last, 512, 64 << 10, &batch).ok());
    for (const SpoolRecord& r : batch) {
      ASSERT_EQ(r.seq, last + 1);
      ASSERT_EQ(r.payload, Payload(r.seq, 40 + r.seq % 100));
      last = r.seq;
      ++received;
    }
    if (!batch.empty() && received % 4096 < batch.size()) {
      ASSERT_TRUE(spool->Ack(last).ok());
    }
  }
  appender.join();
  EXPECT_EQ(received, kCount);
  ASSERT_TRUE(spool->Ack(last).ok());
  const SpoolStats st = spool->stats();
  EXPECT_EQ(st.unacked, 0u);
  EXPECT_EQ(st.dropped, 0u);
  EXPECT_EQ(st.segments, 1u);  // acked segments were deleted along the way
}

TEST_F(SpoolTest, WaitForWakesWhenARecordIsAppended) {
  auto spool = MustOpen(Options());
  ASSERT_NE(spool, nullptr);
  EXPECT_FALSE(spool->WaitFor(0, absl::Milliseconds(20)));
  std::thread t([&] {
    absl::SleepFor(absl::Milliseconds(50));
    ASSERT_TRUE(spool->Append(Payload(1), T(1)).ok());
  });
  const absl::Time start = absl::Now();
  EXPECT_TRUE(spool->WaitFor(0, absl::Seconds(30)));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  t.join();
  EXPECT_FALSE(spool->WaitFor(1, absl::Milliseconds(10)));
  std::vector<SpoolRecord> got;
  ASSERT_TRUE(spool->Read(0, 10, 1 << 20, &got).ok());
  EXPECT_EQ(Seqs(got), Range(1, 1));
}

TEST_F(SpoolTest, EveryFsyncPolicyKeepsRecordsAcrossReopen) {
  for (SpoolFsync policy : {SpoolFsync::kNever, SpoolFsync::kInterval, SpoolFsync::kAlways}) {
    SCOPED_TRACE(static_cast<int>(policy));
    fs::remove_all(dir_);
    SpoolOptions opts = Options();
    opts.fsync = policy;
    opts.fsync_interval = absl::Milliseconds(1);
    {
      auto spool = MustOpen(opts);
      ASSERT_NE(spool, nullptr);
      for (uint64_t n = 1; n <= 50; ++n) {
        ASSERT_EQ(*spool->Append(Payload(n), T(n)), n);
        if (n % 10 == 0) {
          ASSERT_TRUE(spool->Flush().ok());
        }
      }
      ASSERT_TRUE(spool->Ack(20).ok());
    }
    auto spool = MustOpen(opts);
    ASSERT_NE(spool, nullptr);
    std::vector<SpoolRecord> got = ReadAll(*spool);
    EXPECT_EQ(Seqs(got), Range(21, 50));
    ExpectPayloads(got);
  }
}

TEST_F(SpoolTest, SegmentFilesHoldTheDocumentedFormat) {
  ASSERT_EQ(Crc32c("123456789"), 0xE3069283u);  // the test's own CRC is right
  {
    auto spool = MustOpen(Options());
    ASSERT_NE(spool, nullptr);
    ASSERT_EQ(*spool->Append("hello", absl::FromUnixNanos(1234567890123), 7), 1u);
    ASSERT_EQ(*spool->Append("", absl::FromUnixNanos(42)), 2u);
  }
  ASSERT_EQ(SegmentFiles().size(), 1u);
  EXPECT_EQ(fs::path(SegmentFiles()[0]).filename(), "seg-00000000000000000001.log");
  const std::string f = ReadFile(SegmentFiles()[0]);
  ASSERT_EQ(f.size(), kSegHeader + kRecHeader + 5 + kRecHeader);
  EXPECT_EQ(f.substr(0, 8), "SWSPSEG1");
  EXPECT_EQ(Get<uint64_t>(f, 8), 1u);
  EXPECT_EQ(Get<uint32_t>(f, 16), 1u);
  EXPECT_EQ(Get<uint32_t>(f, 20), Crc32c(f.substr(0, 20)));
  const size_t r1 = kSegHeader;
  EXPECT_EQ(Get<uint32_t>(f, r1 + 4), 5u);
  EXPECT_EQ(Get<uint64_t>(f, r1 + 8), 1u);
  EXPECT_EQ(Get<int64_t>(f, r1 + 16), 1234567890123);
  EXPECT_EQ(Get<uint64_t>(f, r1 + 24), 7u);
  EXPECT_EQ(f.substr(r1 + kRecHeader, 5), "hello");
  EXPECT_EQ(Get<uint32_t>(f, r1), Crc32c(f.substr(r1 + 4, kRecHeader - 4 + 5)));
  const size_t r2 = r1 + kRecHeader + 5;
  EXPECT_EQ(Get<uint32_t>(f, r2 + 4), 0u);
  EXPECT_EQ(Get<uint64_t>(f, r2 + 8), 2u);
  EXPECT_EQ(Get<uint32_t>(f, r2), Crc32c(f.substr(r2 + 4, kRecHeader - 4)));
}

TEST_F(SpoolTest, AStateFileWithATornSlotFallsBackToTheOtherSlot) {
  {
    auto spool = MustOpen(Options());
    ASSERT_NE(spool, nullptr);
    AppendRange(*spool, 1, 30, 1);
    ASSERT_TRUE(spool->Ack(10).ok());
    ASSERT_TRUE(spool->Ack(11).ok());  // the newer slot; deletes no segment
  }
  const std::string state = dir_ + "/state";
  ASSERT_EQ(fs::file_size(state), 128u);
  // Find the slot holding 11 and tear it: 10 must come back.
  const std::string s = ReadFile(state);
  const size_t newer = Get<uint64_t>(s, 16) == 11 ? 0 : 64;
  ASSERT_EQ(Get<uint64_t>(s, newer + 16), 11u);
  OverwriteByte(state, newer + 20);
  auto spool = MustOpen(Options());
  ASSERT_NE(spool, nullptr);
  EXPECT_EQ(spool->stats().acked_seq, 10u);
  EXPECT_EQ(Seqs(ReadAll(*spool)), Range(11, 30));  // replayed, not lost
}

TEST_F(SpoolTest, AWriteErrorIsReportedWithThePathAndNothingIsLost) {
  auto spool = MustOpen(Options(1 << 20, 4 << 20));
  ASSERT_NE(spool, nullptr);
  AppendRange(*spool, 1, 10, 1);
  ASSERT_TRUE(spool->Flush().ok());
  AppendRange(*spool, 11, 40, 11);
  // Files may not grow past 8 KiB: the next write stops part way (EFBIG).
  struct rlimit old;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  struct rlimit low = old;
  low.rlim_cur = 8192;
  sighandler_t old_handler = signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &low), 0);
  absl::Status failed = spool->Flush();
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &old), 0);
  signal(SIGXFSZ, old_handler);

  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.message().find("File too large"), absl::string_view::npos) << failed;
  EXPECT_NE(failed.message().find(SegmentFiles()[0]), absl::string_view::npos) << failed;
  // The partial write was undone: the file ends on a whole record.
  EXPECT_EQ(fs::file_size(SegmentFiles()[0]), kSegHeader + 10 * kRecord);
  // The records are still there and are written once the disk allows.
  EXPECT_EQ(Seqs(ReadAll(*spool)), Range(1, 40));
  ASSERT_TRUE(spool->Flush().ok());
  EXPECT_EQ(fs::file_size(SegmentFiles()[0]), kSegHeader + 40 * kRecord);
  spool.reset();
  spool = MustOpen(Options(1 << 20, 4 << 20));
  ASSERT_NE(spool, nullptr);
  std::vector<SpoolRecord> got = ReadAll(*spool);
  EXPECT_EQ(Seqs(got), Range(1, 40));
  ExpectPayloads(got);
  EXPECT_EQ(spool->stats().damaged, 0u);
}

TEST_F(SpoolTest, RejectsARecordLargerThanASegment) {
  auto spool = MustOpen(Options());
  ASSERT_NE(spool, nullptr);
  absl::StatusOr<uint64_t> seq = spool->Append(std::string(5000, 'x'), T(1));
  EXPECT_EQ(seq.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(spool->stats().last_seq, 0u);
  EXPECT_EQ(*spool->Append(Payload(1), T(1)), 1u);
}

TEST_F(SpoolTest, ASecondSpoolOnTheSameDirectoryIsRefused) {
  auto spool = MustOpen(Options());
  ASSERT_NE(spool, nullptr);
  absl::StatusOr<std::unique_ptr<Spool>> second = Spool::Open(Options());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("in use"), absl::string_view::npos) << second.status();
}

TEST_F(SpoolTest, RejectsBadOptionsWithClearMessages) {
  struct Case {
    SpoolOptions opts;
    absl::StatusCode code;
    std::string words;
  };
  SpoolOptions no_dir = Options();
  no_dir.dir.clear();
  SpoolOptions tiny_segment = Options(1000, 1 << 20);
  SpoolOptions small_max = Options(8192, 8192 * 2 - 1);
  SpoolOptions not_a_dir = Options();
  not_a_dir.dir = root_ + "/file";
  std::ofstream(not_a_dir.dir) << "x";
  const Case cases[] = {
      {no_dir, absl::StatusCode::kInvalidArgument, "dir is empty"},
      {tiny_segment, absl::StatusCode::kInvalidArgument, "segment_bytes"},
      {small_max, absl::StatusCode::kInvalidArgument, "at least 2 * segment_bytes"},
      {not_a_dir, absl::StatusCode::kFailedPrecondition, "not a directory"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<std::unique_ptr<Spool>> s = Spool::Open(c.opts);
    ASSERT_FALSE(s.ok()) << c.words;
    EXPECT_EQ(s.status().code(), c.code) << s.status();
    EXPECT_NE(s.status().message().find(c.words), absl::string_view::npos) << s.status();
  }
  // The smallest valid options work, and the directory is private.
  auto spool = MustOpen(Options(4096, 8192));
  ASSERT_NE(spool, nullptr);
  EXPECT_EQ(fs::status(dir_).permissions() & fs::perms::all, fs::perms::owner_all);
}

TEST(SpoolFsyncTest, ParsesTheThreePoliciesAndRejectsOthers) {
  EXPECT_EQ(*ParseSpoolFsync("never"), SpoolFsync::kNever);
  EXPECT_EQ(*ParseSpoolFsync("interval"), SpoolFsync::kInterval);
  EXPECT_EQ(*ParseSpoolFsync("always"), SpoolFsync::kAlways);
  for (absl::string_view bad : {"", "sometimes", "alway"}) {
    absl::StatusOr<SpoolFsync> p = ParseSpoolFsync(bad);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(p.status().message().find("never, interval or always"), absl::string_view::npos)
        << p.status();
  }
}

}  // namespace
}  // namespace sockwatch
