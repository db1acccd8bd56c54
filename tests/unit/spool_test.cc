// The spool: order, persistence, acknowledgement, overflow loss, threads, options.
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
}  // namespace sockwatch::spool_test
