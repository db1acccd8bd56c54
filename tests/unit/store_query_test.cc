// The collector store's query filters (host, instance, kind, time range,
// limit) over a fixed set of events from two hosts, and how reads report
// bad input and damaged rows.
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "collector/store.h"
#include "gtest/gtest.h"
#include "tests/unit/store_test_util.h"

namespace sockwatch {
namespace {

using namespace store_test;  // NOLINT: shared test fixtures

class StoreQueryTest : public StoreTest {
 protected:
  void SetUp() override {
    StoreTest::SetUp();
    store_ = Open();
    ASSERT_NE(store_, nullptr);
    // Two hosts; host a restarted (two instances). Seconds 10..60.
    MustWrite(*store_, {
                           Network("a", "i1", 1, 10),
                           Loss("a", "i1", 2, 20, 5),
                           Exec("a", "i1", 3, 30),
                           Network("a", "i2", 1, 40),
                           Loss("a", "i2", 2, 50, 7),
                           Network("b", "i1", 1, 15),
                           FullAlert(),  // host-a/inst-1/8 at 31
                           Loss("b", "i1", 2, 60, 11),
                       });
  }
  std::vector<std::string> Find(const EventQuery& q) { return Keys(MustEvents(*store_, q)); }

  std::unique_ptr<Store> store_;
};

TEST_F(StoreQueryTest, FiltersByHostInstanceAndKind) {
  EXPECT_EQ(MustCount(*store_), 8u);
  EXPECT_EQ(Find(Q().Host("a")), (Strings{"a/i1/1", "a/i1/2", "a/i1/3", "a/i2/1", "a/i2/2"}));
  EXPECT_EQ(Find(Q().Host("a").Instance("i2")), (Strings{"a/i2/1", "a/i2/2"}));
  EXPECT_EQ(Find(Q().Instance("i1")), (Strings{"a/i1/1", "a/i1/2", "a/i1/3", "b/i1/1", "b/i1/2"}));
  EXPECT_EQ(Find(Q().Kind("network")), (Strings{"a/i1/1", "a/i2/1", "b/i1/1"}));
  EXPECT_EQ(Find(Q().Kind("alert")), (Strings{"host-a/inst-1/8"}));
  EXPECT_EQ(Find(Q().Kind("exec")), (Strings{"a/i1/3"}));
  EXPECT_EQ(MustCount(*store_, Q().Host("a").Kind("loss")), 2u);
  // Kinds combined with time, on both index paths (rare kind, other kind).
  EXPECT_EQ(
      Find(Q().Kind("loss").Since(kBase + absl::Seconds(20)).Until(kBase + absl::Seconds(55))),
      (Strings{"a/i1/2", "a/i2/2"}));
  EXPECT_EQ(MustCount(*store_, Q().Host("a").Kind("network").Until(kBase + absl::Seconds(41))), 2u);

  // Replayed alerts and losses are not listed twice.
  const WriteResult replay = MustWrite(*store_, {FullAlert(), Loss("a", "i1", 2, 20, 5)});
  EXPECT_EQ(replay.stored, 0u);
  EXPECT_EQ(replay.duplicates, 2u);
  EXPECT_EQ(MustCount(*store_, Q().Kind("alert")), 1u);

  // What the end-to-end suite does with losses: add them up.
  uint64_t lost = 0;
  for (const v1::Envelope& e : MustEvents(*store_, Q().Kind("loss"))) lost += e.loss().count();
  EXPECT_EQ(lost, 5u + 7u + 11u);
}

TEST_F(StoreQueryTest, FiltersByHalfOpenTimeRangeAndLimits) {
  const EventQuery q = Q().Since(kBase + absl::Seconds(15)).Until(kBase + absl::Seconds(40));
  // Times are second + 0.25: 15.25, 20.25, 30.25, 31.25 fall in [15, 40).
  EXPECT_EQ(Find(q), (Strings{"a/i1/2", "a/i1/3", "b/i1/1", "host-a/inst-1/8"}));
  EXPECT_EQ(MustCount(*store_, q), 4u);
  // The bound is exact to the nanosecond: until = 40.25 s excludes the event at 40.25 s.
  EXPECT_EQ(Find(Q().Host("a")
                     .Since(kBase + absl::Seconds(30))
                     .Until(kBase + absl::Seconds(40) + absl::Milliseconds(250))),
            (Strings{"a/i1/3"}));
  EXPECT_EQ(Find(Q().Host("a").Since(kBase + absl::Seconds(40) + absl::Milliseconds(250))),
            (Strings{"a/i2/1", "a/i2/2"}));

  EXPECT_EQ(Find(Q().Limit(3)), (Strings{"a/i1/1", "a/i1/2", "a/i1/3"}));
  // The count ignores the limit.
  EXPECT_EQ(MustCount(*store_, Q().Limit(3)), 8u);
}

TEST_F(StoreQueryTest, UnknownKindIsAnError) {
  absl::StatusOr<std::vector<v1::Envelope>> r = store_->Events(Q().Kind("netwrok"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "network")) << r.status();
  EXPECT_EQ(store_->CountEvents(Q().Kind("'; DROP TABLE events; --")).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(StoreQueryTest, CorruptBlobIsDataLossNamingTheRow) {
  Raw raw(path_);
  ASSERT_TRUE(raw.Exec("UPDATE events SET envelope = x'ffffffff' WHERE seq = 3"));
  absl::StatusOr<std::vector<v1::Envelope>> r = store_->Events(Q().Host("a"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "host_id=a agent_instance=i1 seq=3"))
      << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), path_)) << r.status();
  // Rows not touched still read.
  EXPECT_EQ(Find(Q().Host("b")), (Strings{"b/i1/1", "b/i1/2"}));
}

}  // namespace
}  // namespace sockwatch
