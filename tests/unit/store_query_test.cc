// How SQLite reads report damaged rows. The query filters are tested on every backend in
// store_contract_query_test.cc.
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
    MustWrite(*store_,
              {Network("a", "i1", 1, 10), Loss("a", "i1", 2, 20, 5), Exec("a", "i1", 3, 30),
               Network("b", "i1", 1, 15), Loss("b", "i1", 2, 60, 11)});
  }
  std::vector<std::string> Find(const EventQuery& q) { return Keys(MustEvents(*store_, q)); }

  std::unique_ptr<Store> store_;
};

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
