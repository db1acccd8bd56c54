#include "agent/process_table.h"

#include "gtest/gtest.h"

namespace sockwatch {
namespace {

constexpr uint64_t kSec = 1'000'000'000;

ProcInfo Proc(uint32_t pid, uint64_t start, const char* exe) {
  ProcInfo p;
  p.pid = pid;
  p.start_ns = start;
  p.exe = exe;
  p.argv = {exe, "--flag"};
  return p;
}

TEST(ProcessTableTest, PidReuseIsToldApartByStartTime) {
  ProcessTable t;
  t.Upsert(Proc(100, 5 * kSec, "/usr/bin/old"));
  t.Exit(100, 5 * kSec, 6 * kSec);
  t.Upsert(Proc(100, 7 * kSec, "/usr/bin/new"));
  EXPECT_EQ(t.Find(100, 5 * kSec)->exe, "/usr/bin/old");
  EXPECT_EQ(t.Find(100, 7 * kSec)->exe, "/usr/bin/new");
  EXPECT_EQ(t.Find(100, 0)->exe, "/usr/bin/new");  // newest
  EXPECT_EQ(t.Find(101, 0), nullptr);
}

TEST(ProcessTableTest, SnapshotTicksMatchLiveNanoseconds) {
  ProcessTable t;
  t.Upsert(Proc(42, 123 * ProcessTable::kTickNs, "/bin/snap"));  // from /proc: tick grain
  ASSERT_NE(t.Find(42, 123 * ProcessTable::kTickNs + 4'567'891), nullptr);
  EXPECT_EQ(t.Find(42, 123 * ProcessTable::kTickNs + 4'567'891)->exe, "/bin/snap");
}

TEST(ProcessTableTest, ForkInheritsImageAndExitLingersForGrace) {
  ProcessTable t(100, 10 * kSec);
  t.Upsert(Proc(1, kSec, "/sbin/init"));
  ProcInfo child;
  child.pid = 2;
  child.ppid = 1;
  child.start_ns = 2 * kSec;
  child.parent_start_ns = kSec;
  t.Fork(child);
  ASSERT_NE(t.Find(2, 2 * kSec), nullptr);
  EXPECT_EQ(t.Find(2, 2 * kSec)->exe, "/sbin/init");
  EXPECT_EQ(t.Find(2, 2 * kSec)->ppid, 1u);
  t.Exit(2, 2 * kSec, 3 * kSec);
  t.Expire(12 * kSec);
  EXPECT_NE(t.Find(2, 2 * kSec), nullptr);  // still within grace
  t.Expire(13 * kSec);
  EXPECT_EQ(t.Find(2, 2 * kSec), nullptr);
  EXPECT_EQ(t.size(), 1u);
}

TEST(ProcessTableTest, BoundedExitedFirstThenCountedEviction) {
  ProcessTable t(3, 100 * kSec);
  t.Upsert(Proc(1, kSec, "/a"));
  t.Upsert(Proc(2, kSec, "/b"));
  t.Upsert(Proc(3, kSec, "/c"));
  t.Exit(2, kSec, 2 * kSec);
  t.Upsert(Proc(4, kSec, "/d"));  // evicts the exited one
  EXPECT_EQ(t.size(), 3u);
  EXPECT_EQ(t.Find(2, kSec), nullptr);
  EXPECT_EQ(t.evicted(), 0u);
  t.Upsert(Proc(5, kSec, "/e"));  // must drop a live one, and say so
  EXPECT_EQ(t.size(), 3u);
  EXPECT_EQ(t.evicted(), 1u);
}

}  // namespace
}  // namespace sockwatch
