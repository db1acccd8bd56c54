// The store contract, part 1: writes, exactly once, hosts -- the same tests
// against every backend (store_backends.h). Queries are in
// store_contract_query_test.cc, triage and prevalence in
// store_contract_fleet_test.cc; what only one backend has lives in
// store_test.cc (SQLite files) and clickhouse_store_test.cc.
#include <google/protobuf/util/message_differencer.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "collector/store.h"
#include "gtest/gtest.h"
#include "tests/unit/store_backends.h"
#include "tests/unit/store_test_util.h"

namespace sockwatch {
namespace {

using namespace store_test;  // NOLINT: shared test fixtures
using google::protobuf::util::MessageDifferencer;

class StoreContractTest : public StoreBackendTest {};

TEST_P(StoreContractTest, NetworkAndAlertRoundTripEveryField) {
  const std::vector<v1::Envelope> batch = {FullNetwork(), FullAlert()};
  const WriteResult r = Write(batch);
  EXPECT_EQ(r.stored, 2u);
  EXPECT_EQ(r.duplicates, 0u);

  const std::vector<v1::Envelope> got = Events();
  ASSERT_EQ(got.size(), 2u);
  std::string diff;
  MessageDifferencer d;
  d.ReportDifferencesToString(&diff);
  EXPECT_TRUE(d.Compare(batch[0], got[0])) << diff;
  EXPECT_TRUE(d.Compare(batch[1], got[1])) << diff;
  // Bytes that are not UTF-8 survive.
  EXPECT_EQ(got[0].network().process().exe_raw(), std::string("/usr/bin/cu\xffrl", 12));
}

TEST_P(StoreContractTest, SameBatchTwiceIsAllDuplicates) {
  std::vector<v1::Envelope> batch;
  for (uint64_t seq = 1; seq <= 5; ++seq) batch.push_back(Network("h", "i", seq, seq));
  WriteResult r = Write(batch);
  EXPECT_EQ(r.stored, 5u);
  EXPECT_EQ(r.duplicates, 0u);
  r = Write(batch);
  EXPECT_EQ(r.stored, 0u);
  EXPECT_EQ(r.duplicates, 5u);
  EXPECT_EQ(Count(), 5u);

  // Overlap: 4 and 5 are replays, 6..8 are new.
  std::vector<v1::Envelope> overlap;
  for (uint64_t seq = 4; seq <= 8; ++seq) overlap.push_back(Network("h", "i", seq, seq));
  r = Write(overlap);
  EXPECT_EQ(r.stored, 3u);
  EXPECT_EQ(r.duplicates, 2u);
  EXPECT_EQ(Find(),
            (Strings{"h/i/1", "h/i/2", "h/i/3", "h/i/4", "h/i/5", "h/i/6", "h/i/7", "h/i/8"}));
}

TEST_P(StoreContractTest, ReplayKeepsTheFirstCopy) {
  v1::Envelope first = Network("h", "i", 1);
  v1::Envelope replay = first;
  replay.mutable_network()->set_remote_port(8080);  // must not overwrite
  // Within one call too: the second copy of a key is a duplicate.
  const WriteResult r = Write({first, replay});
  EXPECT_EQ(r.stored, 1u);
  EXPECT_EQ(r.duplicates, 1u);
  const std::vector<v1::Envelope> got = Events();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].network().remote_port(), 443u);
  // A later call does not overwrite either.
  EXPECT_EQ(Write({replay}).duplicates, 1u);
  EventQuery port_8080;
  port_8080.remote_port = 8080;
  EXPECT_EQ(Count(port_8080), 0u);

  // The same in a call long enough for multi-row inserts: 2..41 twice over.
  std::vector<v1::Envelope> doubled;
  for (int round = 0; round < 2; ++round)
    for (uint64_t seq = 2; seq <= 41; ++seq) doubled.push_back(Network("h", "i", seq, round));
  const WriteResult d = Write(doubled);
  EXPECT_EQ(d.stored, 40u);
  EXPECT_EQ(d.duplicates, 40u);
  const std::vector<v1::Envelope> all = Events();
  ASSERT_EQ(all.size(), 41u);
  EXPECT_EQ(all[40].seq(), 41u);
  EXPECT_EQ(all[40].time().seconds(), absl::ToUnixSeconds(kBase));  // the first copy
}

TEST_P(StoreContractTest, SameSeqOnOtherHostsAndInstancesIsDistinct) {
  // Deliberately out of order: results come back by host, instance, seq.
  const WriteResult r = Write({Network("h2", "i1", 1), Network("h1", "i2", 1),
                               Network("h1", "i1", 2), Network("h1", "i1", 1)});
  EXPECT_EQ(r.stored, 4u);
  EXPECT_EQ(r.duplicates, 0u);
  EXPECT_EQ(Find(), (Strings{"h1/i1/1", "h1/i1/2", "h1/i2/1", "h2/i1/1"}));
  // A replay of one of them is one duplicate, whatever its neighbours.
  const WriteResult again = Write({Network("h1", "i2", 1), Network("h1", "i2", 2)});
  EXPECT_EQ(again.stored, 1u);
  EXPECT_EQ(again.duplicates, 1u);
}

TEST_P(StoreContractTest, ReopenedStoreHasTheDataAndStillDeduplicates) {
  std::vector<v1::Envelope> batch = {Network("h", "i", 1, 1), Network("h", "i", 2, 2)};
  EXPECT_EQ(Write(batch).stored, 2u);
  std::unique_ptr<Store> again = OpenAnother();
  ASSERT_NE(again, nullptr);
  absl::StatusOr<std::vector<v1::Envelope>> got = again->Events({});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(Keys(*got), (Strings{"h/i/1", "h/i/2"}));
  batch.push_back(Network("h", "i", 3, 3));
  absl::StatusOr<WriteResult> r = again->Write(Ptrs(batch));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stored, 1u);
  EXPECT_EQ(r->duplicates, 2u);
  EXPECT_EQ(Count(), 3u);  // the first store sees it too
}

TEST_P(StoreContractTest, LargeMixedReplaySplitsExactly) {
  // Rare kinds (losses) mixed into common ones, in one call.
  std::vector<v1::Envelope> batch;
  for (uint64_t seq = 1; seq <= 200; ++seq)
    batch.push_back(seq % 50 == 0 ? Loss("h", "i", seq, seq, 1) : Network("h", "i", seq, seq));
  const WriteResult first = Write(batch);
  EXPECT_EQ(first.stored, 200u);
  EXPECT_EQ(first.duplicates, 0u);
  const std::vector<v1::Envelope> got = Events();
  ASSERT_EQ(got.size(), 200u);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].seq(), i + 1);
    EXPECT_TRUE(MessageDifferencer::Equals(got[i], batch[i])) << i;
  }
  EXPECT_EQ(Count(Q().Kind("loss")), 4u);
  // A replay with fresh ones mixed in.
  for (uint64_t seq = 201; seq <= 240; ++seq) batch.push_back(Network("h", "i", seq, seq));
  const WriteResult again = Write(batch);
  EXPECT_EQ(again.stored, 40u);
  EXPECT_EQ(again.duplicates, 200u);
  EXPECT_EQ(Count(), 240u);
}

TEST_P(StoreContractTest, ScatteredSeqsAndManyStreamsInOneCall) {
  // Every other seq of one stream, then all of them: the stored ones are
  // found however scattered they are.
  std::vector<v1::Envelope> odd, all;
  for (uint64_t seq = 1; seq <= 200; ++seq) {
    if (seq % 2 == 1) odd.push_back(Network("h", "i", seq, seq));
    all.push_back(Network("h", "i", seq, seq));
  }
  EXPECT_EQ(Write(odd).stored, 100u);
  const WriteResult r = Write(all);
  EXPECT_EQ(r.stored, 100u);
  EXPECT_EQ(r.duplicates, 100u);

  // Thousands of streams with long names in one call (a collector grouping
  // many agents' batches), written once and then replayed.
  std::vector<v1::Envelope> fleet;
  const std::string pad(200, 'x');
  for (int host = 0; host < 2000; ++host)
    for (uint64_t seq = 1; seq <= 2; ++seq)
      fleet.push_back(Network(absl::StrCat("host-", host, "-", pad), "inst", seq, seq));
  EXPECT_EQ(Write(fleet).stored, 4000u);
  const WriteResult replay = Write(fleet);
  EXPECT_EQ(replay.stored, 0u);
  EXPECT_EQ(replay.duplicates, 4000u);
  EXPECT_EQ(Count(), 4200u);
}

TEST_P(StoreContractTest, UpsertHostKeepsFirstSeenAndRefreshesTheRest) {
  absl::StatusOr<uint64_t> none = store().CountHosts();
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(*none, 0u);
  v1::Hello hello;
  hello.set_host_id("host-a");
  hello.set_agent_instance("inst-1");
  hello.set_hostname("web-1");
  hello.set_kernel_release("6.1.0-13-amd64");
  hello.set_agent_version("0.1.0");
  hello.mutable_coverage()->set_btf(true);
  ASSERT_TRUE(store().UpsertHost(hello, kBase).ok());
  v1::Hello other;
  other.set_host_id("host-b");
  other.set_hostname("db-1");
  ASSERT_TRUE(store().UpsertHost(other, kBase + absl::Seconds(1)).ok());

  hello.set_agent_instance("inst-2");
  hello.set_kernel_release("6.1.0-18-amd64");
  hello.set_agent_version("0.2.0");
  ASSERT_TRUE(store().UpsertHost(hello, kBase + absl::Hours(2)).ok());
  // Refreshed again: still one record per host.
  ASSERT_TRUE(store().UpsertHost(hello, kBase + absl::Hours(3)).ok());

  absl::StatusOr<std::vector<HostRecord>> hosts = store().Hosts();
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  ASSERT_EQ(hosts->size(), 2u);
  // The fleet size, counted without reading the records.
  absl::StatusOr<uint64_t> count = store().CountHosts();
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_EQ(*count, 2u);
  const HostRecord& a = (*hosts)[0];
  EXPECT_TRUE(MessageDifferencer::Equals(a.hello, hello)) << a.hello.DebugString();
  EXPECT_EQ(a.first_seen, kBase);
  EXPECT_EQ(a.last_seen, kBase + absl::Hours(3));
  const HostRecord& b = (*hosts)[1];
  EXPECT_EQ(b.hello.hostname(), "db-1");
  EXPECT_EQ(b.first_seen, kBase + absl::Seconds(1));
  EXPECT_EQ(b.last_seen, kBase + absl::Seconds(1));

  v1::Hello nameless;
  EXPECT_EQ(store().UpsertHost(nameless, kBase).code(), absl::StatusCode::kInvalidArgument);
}

// The writer stores the Hellos of a group at once: a fleet that reconnects
// costs one transaction, not one per agent.
TEST_P(StoreContractTest, UpsertHostsStoresAGroupAllOrNothing) {
  v1::Hello a1, b, a2, c, nameless;
  a1.set_host_id("host-a");
  a1.set_agent_instance("inst-1");
  b.set_host_id("host-b");
  b.set_hostname("db-1");
  a2 = a1;
  a2.set_agent_instance("inst-2");  // the same host again, later in the group
  c.set_host_id("host-c");
  const v1::Hello* group[] = {&a1, &b, &a2};
  ASSERT_TRUE(store().UpsertHosts(group, kBase).ok());
  absl::StatusOr<std::vector<HostRecord>> hosts = store().Hosts();
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  ASSERT_EQ(hosts->size(), 2u);
  EXPECT_EQ((*hosts)[0].hello.agent_instance(), "inst-2");
  EXPECT_EQ((*hosts)[0].first_seen, kBase);
  EXPECT_EQ((*hosts)[1].hello.hostname(), "db-1");
  EXPECT_EQ((*hosts)[1].last_seen, kBase);
  // One Hello without a host: none of the group is stored.
  const v1::Hello* bad[] = {&c, &nameless};
  EXPECT_EQ(store().UpsertHosts(bad, kBase).code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<uint64_t> n = store().CountHosts();
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 2u);
  EXPECT_TRUE(store().UpsertHosts({}, kBase).ok());
}

TEST_P(StoreContractTest, ReadersSeeWholeWritesWhileTheWriterRuns) {
  constexpr int kBatches = 30;
  constexpr int kBatch = 50;
  std::atomic<bool> done{false};
  std::atomic<int> torn{0};
  std::atomic<int> reads{0};
  std::thread reader([&] {
    uint64_t last = 0;
    while (!done.load()) {
      absl::StatusOr<uint64_t> n = store().CountEvents(Q().Host("h"));
      if (!n.ok() || *n % kBatch != 0 || *n < last) ++torn;
      if (n.ok()) last = *n;
      ++reads;
    }
  });
  uint64_t stored = 0;
  for (int b = 0; b < kBatches; ++b) {
    std::vector<v1::Envelope> batch;
    for (int i = 1; i <= kBatch; ++i) batch.push_back(Network("h", "i", b * kBatch + i));
    stored += Write(batch).stored;
  }
  done = true;
  reader.join();
  EXPECT_EQ(stored, uint64_t{kBatches * kBatch});
  EXPECT_EQ(Count(), uint64_t{kBatches * kBatch});
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(torn.load(), 0);
}

TEST_P(StoreContractTest, NullEnvelopeIsRefused) {
  const v1::Envelope e = Network("h", "i", 1);
  const std::vector<const v1::Envelope*> batch = {&e, nullptr};
  absl::StatusOr<WriteResult> r = store().Write(batch);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Count(), 0u);
  // Nothing to write is nothing done.
  absl::StatusOr<WriteResult> none = store().Write({});
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->stored + none->duplicates, 0u);
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreContractTest, ::testing::ValuesIn(StoreBackends()),
                         BackendName);

}  // namespace
}  // namespace sockwatch
