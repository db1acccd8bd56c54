// The store contract, part 2: Events and CountEvents -- every filter,
// paging, newest first, triage status -- against every backend.
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "collector/store.h"
#include "gtest/gtest.h"
#include "tests/unit/store_backends.h"
#include "tests/unit/store_test_util.h"

namespace sockwatch {
namespace {

using namespace store_test;  // NOLINT: shared test fixtures

// An EventQuery with one field set: Where(&EventQuery::exe, "/bin/sh").
template <typename T, typename V>
EventQuery Where(T EventQuery::*field, V value) {
  EventQuery q;
  q.*field = value;
  return q;
}

// Two hosts; host a restarted (two instances). Seconds 10..60.
class StoreContractQueryTest : public StoreBackendTest {
 protected:
  void SetUp() override {
    StoreBackendTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    Write({
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
};

TEST_P(StoreContractQueryTest, FiltersByHostInstanceAndKind) {
  EXPECT_EQ(Count(), 8u);
  EXPECT_EQ(Find(Q().Host("a")), (Strings{"a/i1/1", "a/i1/2", "a/i1/3", "a/i2/1", "a/i2/2"}));
  EXPECT_EQ(Find(Q().Host("a").Instance("i2")), (Strings{"a/i2/1", "a/i2/2"}));
  EXPECT_EQ(Find(Q().Instance("i1")), (Strings{"a/i1/1", "a/i1/2", "a/i1/3", "b/i1/1", "b/i1/2"}));
  EXPECT_EQ(Find(Q().Kind("network")), (Strings{"a/i1/1", "a/i2/1", "b/i1/1"}));
  EXPECT_EQ(Find(Q().Kind("alert")), (Strings{"host-a/inst-1/8"}));
  EXPECT_EQ(Find(Q().Kind("exec")), (Strings{"a/i1/3"}));
  EXPECT_EQ(Count(Q().Host("a").Kind("loss")), 2u);
  EXPECT_EQ(
      Find(Q().Kind("loss").Since(kBase + absl::Seconds(20)).Until(kBase + absl::Seconds(55))),
      (Strings{"a/i1/2", "a/i2/2"}));
  EXPECT_EQ(Count(Q().Host("a").Kind("network").Until(kBase + absl::Seconds(41))), 2u);

  // Replayed alerts and losses are not listed twice.
  const WriteResult replay = Write({FullAlert(), Loss("a", "i1", 2, 20, 5)});
  EXPECT_EQ(replay.stored, 0u);
  EXPECT_EQ(replay.duplicates, 2u);
  EXPECT_EQ(Count(Q().Kind("alert")), 1u);

  // What the end-to-end suite does with losses: add them up.
  uint64_t lost = 0;
  for (const v1::Envelope& e : Events(Q().Kind("loss"))) lost += e.loss().count();
  EXPECT_EQ(lost, 5u + 7u + 11u);
}

TEST_P(StoreContractQueryTest, FiltersByHalfOpenTimeRangeAndLimits) {
  const EventQuery q = Q().Since(kBase + absl::Seconds(15)).Until(kBase + absl::Seconds(40));
  // Times are second + 0.25: 15.25, 20.25, 30.25, 31.25 fall in [15, 40).
  EXPECT_EQ(Find(q), (Strings{"a/i1/2", "a/i1/3", "b/i1/1", "host-a/inst-1/8"}));
  EXPECT_EQ(Count(q), 4u);
  // The bound is exact to the nanosecond: until = 40.25 s excludes the event at 40.25 s.
  EXPECT_EQ(Find(Q().Host("a")
                     .Since(kBase + absl::Seconds(30))
                     .Until(kBase + absl::Seconds(40) + absl::Milliseconds(250))),
            (Strings{"a/i1/3"}));
  EXPECT_EQ(Find(Q().Host("a").Since(kBase + absl::Seconds(40) + absl::Milliseconds(250))),
            (Strings{"a/i2/1", "a/i2/2"}));

  EXPECT_EQ(Find(Q().Limit(3)), (Strings{"a/i1/1", "a/i1/2", "a/i1/3"}));
  EXPECT_EQ(Count(Q().Limit(3)), 8u);        // the count ignores the limit
  EXPECT_EQ(Find(Q().Limit(0)).size(), 8u);  // 0: no limit
}

TEST_P(StoreContractQueryTest, PagesWithOffsetInEitherOrder) {
  EventQuery page = Q().Limit(3);
  page.offset = 2;
  EXPECT_EQ(Find(page), (Strings{"a/i1/3", "a/i2/1", "a/i2/2"}));
  EXPECT_EQ(Count(page), 8u);
  page.offset = 7;
  EXPECT_EQ(Find(page), (Strings{"host-a/inst-1/8"}));
  page.offset = 8;
  EXPECT_TRUE(Find(page).empty());
  page.limit = 0;  // all after the offset
  page.offset = 6;
  EXPECT_EQ(Find(page), (Strings{"b/i1/2", "host-a/inst-1/8"}));

  // Newest first, by event time: 60, 50, 40, 31, 30, 20, 15, 10.
  EventQuery newest;
  newest.newest_first = true;
  EXPECT_EQ(Find(newest), (Strings{"b/i1/2", "a/i2/2", "a/i2/1", "host-a/inst-1/8", "a/i1/3",
                                   "a/i1/2", "b/i1/1", "a/i1/1"}));
  newest.limit = 2;
  newest.offset = 3;
  EXPECT_EQ(Find(newest), (Strings{"host-a/inst-1/8", "a/i1/3"}));
  newest.host_id = "a";
  newest.offset = 0;
  EXPECT_EQ(Find(newest), (Strings{"a/i2/2", "a/i2/1"}));
}

TEST_P(StoreContractQueryTest, BadFiltersAreInvalidArguments) {
  absl::StatusOr<std::vector<v1::Envelope>> r = store().Events(Q().Kind("netwrok"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "network")) << r.status();
  EXPECT_EQ(store().CountEvents(Q().Kind("'; DROP TABLE events; --")).status().code(),
            absl::StatusCode::kInvalidArgument);
  for (const char* remote : {"10.0.0.0/33", "nope", "10.0.0.1/"}) {
    EXPECT_EQ(store().Events(Where(&EventQuery::remote, remote)).status().code(),
              absl::StatusCode::kInvalidArgument)
        << remote;
    EXPECT_EQ(store().CountEvents(Where(&EventQuery::remote, remote)).status().code(),
              absl::StatusCode::kInvalidArgument)
        << remote;
  }
  EXPECT_EQ(store().Events(Where(&EventQuery::alert_status, "done")).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Quotes and backslashes in values are data, not SQL.
  EXPECT_EQ(Count(Where(&EventQuery::exe, "/x' OR '1'='1")), 0u);
  EXPECT_EQ(Count(Where(&EventQuery::host_id, "a\\")), 0u);
  EXPECT_EQ(Count(Where(&EventQuery::host_id, "a")), 5u);
}

// Events that differ in every column a filter looks at.
class StoreContractFilterTest : public StoreBackendTest {
 protected:
  void SetUp() override {
    StoreBackendTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    v1::Envelope sshd = Network("h", "i", 2, 2);
    v1::NetworkEvent* n = sshd.mutable_network();
    n->set_kind(v1::NETWORK_KIND_ACCEPT);
    n->set_direction(v1::DIRECTION_INBOUND);
    n->set_local_port(22);
    n->set_remote_ip("10.1.2.3");
    n->set_remote_port(51000);
    n->mutable_process()->set_exe("/usr/sbin/sshd");
    n->mutable_process()->clear_argv();
    n->mutable_process()->add_argv("sshd");
    n->mutable_process()->add_argv("-D");
    n->mutable_process()->set_container_id("abc123def");
    v1::Envelope dig = Network("h", "i", 3, 3);
    n = dig.mutable_network();
    n->set_protocol(v1::PROTOCOL_UDP);
    n->set_kind(v1::NETWORK_KIND_UDP_SEND);
    n->set_remote_ip("2001:db8::53");
    n->set_remote_port(53);
    n->mutable_process()->set_exe("/usr/bin/dig");
    n->mutable_process()->clear_argv();
    n->mutable_process()->add_argv("dig");
    n->mutable_process()->add_argv("example.com");
    // A second alert: another rule and digest, no network evidence.
    v1::Envelope listener = FullAlert();
    listener.set_seq(9);
    SetTime(listener, 32);
    listener.mutable_alert()->set_id("host-a/inst-1/9");
    listener.mutable_alert()->set_rule("new_listener");
    listener.mutable_alert()->mutable_image()->set_sha256(std::string(64, 'a'));
    listener.mutable_alert()->clear_network();
    Write({Network("h", "i", 1, 1), sshd, dig, Exec("h", "i", 4, 4), FullAlert(), listener});
  }
};

TEST_P(StoreContractFilterTest, FiltersByColumns) {
  EXPECT_EQ(Count(), 6u);
  EXPECT_EQ(Find(Where(&EventQuery::exe, "/usr/bin/curl")), (Strings{"h/i/1"}));
  EXPECT_EQ(Find(Where(&EventQuery::exe, "/tmp/.x/payload")),
            (Strings{"host-a/inst-1/8", "host-a/inst-1/9"}));
  EXPECT_EQ(Find(Where(&EventQuery::exe, "/bin/sh")), (Strings{"h/i/4"}));
  EXPECT_EQ(Find(Where(&EventQuery::sha256, FullAlert().alert().image().sha256())),
            (Strings{"host-a/inst-1/8"}));
  EXPECT_EQ(Find(Where(&EventQuery::rule, "new_listener")), (Strings{"host-a/inst-1/9"}));
  EXPECT_EQ(Find(Where(&EventQuery::container_prefix, "abc")), (Strings{"h/i/2"}));
  // An alert's image names its container (over its process's).
  EXPECT_EQ(Find(Where(&EventQuery::container_prefix, "feedface")),
            (Strings{"host-a/inst-1/8", "host-a/inst-1/9"}));
  EXPECT_EQ(Find(Where(&EventQuery::remote_port, 443u)), (Strings{"h/i/1"}));
  EXPECT_EQ(Find(Where(&EventQuery::remote_port, 4444u)), (Strings{"host-a/inst-1/8"}));
  EXPECT_EQ(Find(Where(&EventQuery::protocol, int{v1::PROTOCOL_UDP})), (Strings{"h/i/3"}));
  EXPECT_EQ(Find(Where(&EventQuery::direction, int{v1::DIRECTION_INBOUND})), (Strings{"h/i/2"}));
  EXPECT_EQ(Count(Where(&EventQuery::direction, int{v1::DIRECTION_OUTBOUND})), 3u);
  // Combined with the key columns.
  EventQuery both = Where(&EventQuery::protocol, int{v1::PROTOCOL_TCP});
  both.kind = "network";
  EXPECT_EQ(Find(both), (Strings{"h/i/1", "h/i/2"}));
}

TEST_P(StoreContractFilterTest, FiltersByDecodedFields) {
  EXPECT_EQ(Find(Where(&EventQuery::remote, "10.0.0.0/8")),
            (Strings{"h/i/2", "host-a/inst-1/8"}));  // 10.1.2.3 and the alert's 10.9.9.9
  EXPECT_EQ(Find(Where(&EventQuery::remote, "93.184.216.34")), (Strings{"h/i/1"}));
  EXPECT_EQ(Find(Where(&EventQuery::remote, "2001:db8::/32")), (Strings{"h/i/3"}));
  EXPECT_EQ(Count(Where(&EventQuery::remote, "10.0.0.0/8")), 2u);
  EXPECT_EQ(Find(Where(&EventQuery::argv_contains, "sshd -D")), (Strings{"h/i/2"}));
  const Strings example = {"h/i/1", "h/i/3", "host-a/inst-1/8", "host-a/inst-1/9"};
  EXPECT_EQ(Find(Where(&EventQuery::argv_contains, "example.com")), example);
  EXPECT_EQ(Find(Where(&EventQuery::alert_id, "host-a/inst-1/9")), (Strings{"host-a/inst-1/9"}));
  EXPECT_EQ(Count(Where(&EventQuery::alert_id, "host-a/inst-1/9")), 1u);

  // Paging and counting apply after the decoded filters.
  EventQuery page = Where(&EventQuery::argv_contains, "example.com");
  page.offset = 1;
  page.limit = 2;
  EXPECT_EQ(Find(page), (Strings{"h/i/3", "host-a/inst-1/8"}));
  EXPECT_EQ(Count(page), 4u);
  page.newest_first = true;
  EXPECT_EQ(Find(page), (Strings{"host-a/inst-1/8", "h/i/3"}));
  // Decoded and column filters together.
  EventQuery mixed = Where(&EventQuery::remote, "10.0.0.0/8");
  mixed.kind = "network";
  EXPECT_EQ(Find(mixed), (Strings{"h/i/2"}));
}

TEST_P(StoreContractFilterTest, FiltersByLatestTriageStatus) {
  auto with_status = [this](const char* status) {
    return Find(Where(&EventQuery::alert_status, status));
  };
  // Never triaged: open.
  EXPECT_EQ(with_status("open"), (Strings{"host-a/inst-1/8", "host-a/inst-1/9"}));
  EXPECT_EQ(Count(Where(&EventQuery::alert_status, "acked")), 0u);
  auto triage = [this](const char* id, const char* status, int64_t sec) {
    TriageRecord r;
    r.alert_id = id;
    r.status = status;
    r.by = "alice";
    r.time = kBase + absl::Seconds(sec);
    ASSERT_TRUE(store().AddTriage(r).ok());
  };
  triage("host-a/inst-1/8", "acked", 100);
  triage("host-a/inst-1/9", "closed", 100);
  EXPECT_EQ(with_status("acked"), (Strings{"host-a/inst-1/8"}));
  EXPECT_EQ(with_status("closed"), (Strings{"host-a/inst-1/9"}));
  EXPECT_TRUE(with_status("open").empty());
  // Reopened: the latest step counts, even when added at the same time.
  triage("host-a/inst-1/9", "open", 100);
  EXPECT_EQ(with_status("open"), (Strings{"host-a/inst-1/9"}));
  EXPECT_EQ(Count(Where(&EventQuery::alert_status, "open")), 1u);
  // A step dated earlier than the last does not win.
  triage("host-a/inst-1/8", "closed", 50);
  EXPECT_EQ(with_status("acked"), (Strings{"host-a/inst-1/8"}));
}

TEST_P(StoreContractFilterTest, TriageStepsComeBackInOrder) {
  auto add = [this](const char* id, const char* status, const char* by, const char* note,
                    absl::Time time) {
    TriageRecord r{id, status, by, note, time};
    const absl::Status s = store().AddTriage(r);
    EXPECT_TRUE(s.ok()) << s;
  };
  const absl::Time t = kBase + absl::Nanoseconds(123);
  add("host-a/inst-1/8", "acked", "alice", "looking", t + absl::Seconds(10));
  add("host-a/inst-1/9", "closed", "bob", "false positive: backup job", t + absl::Seconds(5));
  add("host-a/inst-1/8", "closed", "alice", "done", t + absl::Seconds(20));
  add("host-a/inst-1/8", "open", "carol", "reopened 'again'", t + absl::Seconds(20));
  add("host-a/inst-1/8", "acked", "dave", "late entry", t + absl::Seconds(15));
  auto line = [](const TriageRecord& r) {
    return absl::StrCat(r.alert_id, " ", r.status, " ", r.by, " ", r.note, " ",
                        absl::ToInt64Nanoseconds(r.time - kBase));
  };
  const Strings all = {
      "host-a/inst-1/8 acked alice looking 10000000123",
      "host-a/inst-1/8 acked dave late entry 15000000123",
      "host-a/inst-1/8 closed alice done 20000000123",
      "host-a/inst-1/8 open carol reopened 'again' 20000000123",
      "host-a/inst-1/9 closed bob false positive: backup job 5000000123",
  };
  absl::StatusOr<std::vector<TriageRecord>> got = store().Triage({});
  ASSERT_TRUE(got.ok()) << got.status();
  Strings lines;
  for (const TriageRecord& r : *got) lines.push_back(line(r));
  EXPECT_EQ(lines, all);
  // Asked by id: in id order whatever the order asked, each once.
  const std::vector<std::string> ids = {"host-a/inst-1/9", "nope", "host-a/inst-1/8",
                                        "host-a/inst-1/9"};
  got = store().Triage(ids);
  ASSERT_TRUE(got.ok()) << got.status();
  lines.clear();
  for (const TriageRecord& r : *got) lines.push_back(line(r));
  EXPECT_EQ(lines, all);
  const std::vector<std::string> one = {"host-a/inst-1/9"};
  got = store().Triage(one);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 1u);
  EXPECT_EQ((*got)[0].note, "false positive: backup job");

  // A step needs an alert and a known status.
  for (const auto& [id, status] : std::vector<std::pair<std::string, std::string>>{
           {"", "acked"}, {"host-a/inst-1/8", ""}, {"host-a/inst-1/8", "done"}}) {
    TriageRecord bad;
    bad.alert_id = id;
    bad.status = status;
    EXPECT_EQ(store().AddTriage(bad).code(), absl::StatusCode::kInvalidArgument)
        << id << " " << status;
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreContractQueryTest, ::testing::ValuesIn(StoreBackends()),
                         BackendName);
INSTANTIATE_TEST_SUITE_P(Backends, StoreContractFilterTest, ::testing::ValuesIn(StoreBackends()),
                         BackendName);

}  // namespace
}  // namespace sockwatch
