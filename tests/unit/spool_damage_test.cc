// The spool on damaged disks: torn and flipped records, write errors, and the
// on-disk format checked against an independent CRC.
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
#include "tests/unit/spool_test_util.h"

namespace sockwatch::spool_test {
namespace {

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

}  // namespace
}  // namespace sockwatch::spool_test
