// What only the ClickHouse store has: its URL, a real server's errors, the
// schema it creates, and what it does when ClickHouse holds a row twice.
// Runs on the server of SOCKWATCH_TEST_CLICKHOUSE (store_backends.h).
#include "collector/clickhouse_store.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "collector/clickhouse_client.h"
#include "collector/store.h"
#include "gtest/gtest.h"
#include "tests/unit/store_backends.h"
#include "tests/unit/store_test_util.h"

namespace sockwatch {
namespace {

using namespace store_test;  // NOLINT: shared test fixtures

TEST(ClickHouseUrlTest, BadUrlsAreRefusedWithTheExpectedForm) {
  for (const char* url :
       {"clickhouse://", "clickhouse://db:8123", "clickhouse://db:8123/", "clickhouse://:8123/x",
        "clickhouse://db:0/x", "clickhouse://db:8123a/x", "clickhouse://db:/x",
        "clickhouse://db:8123/my-db", "clickhouse://db:8123/1db", "clickhouse://db:8123/x?secure=1",
        "clickhouse://[::1/x", "clickhouse://@db/x"}) {
    absl::StatusOr<std::unique_ptr<Store>> s = OpenStore(url);
    ASSERT_FALSE(s.ok()) << url;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << url;
    EXPECT_TRUE(absl::StrContains(s.status().message(), "clickhouse://[USER[:PASSWORD]@]HOST"))
        << s.status();
    EXPECT_TRUE(absl::StrContains(s.status().message(), url)) << s.status();
  }
}

TEST(ClickHouseUrlTest, ParsesEveryPart) {
  absl::StatusOr<clickhouse::Endpoint> ep =
      clickhouse::ParseUrl("ClickHouse://soc:s3cr:et@[fd00::7]:9123/fleet_1");
  ASSERT_TRUE(ep.ok()) << ep.status();
  EXPECT_EQ(ep->host, "[fd00::7]");
  EXPECT_EQ(ep->port, 9123);
  EXPECT_EQ(ep->user, "soc");
  EXPECT_EQ(ep->password, "s3cr:et");
  EXPECT_EQ(ep->database, "fleet_1");
  ep = clickhouse::ParseUrl("clickhouse://ch.example/sockwatch");
  ASSERT_TRUE(ep.ok()) << ep.status();
  EXPECT_EQ(ep->Name(), "ch.example:8123");  // the HTTP port by default
  EXPECT_TRUE(ep->user.empty());
}

TEST(ClickHouseUrlTest, UnreachableServerNamesItAndCurlsReason) {
  // Port 1 on loopback: nothing listens, the connection is refused at once.
  absl::StatusOr<std::unique_ptr<Store>> s = OpenStore("clickhouse://127.0.0.1:1/sockwatch");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kUnavailable) << s.status();
  EXPECT_TRUE(absl::StrContains(s.status().message(), "127.0.0.1:1")) << s.status();
  EXPECT_TRUE(absl::StrContains(s.status().message(), "connect")) << s.status();
}

class ClickHouseStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (SkipClickHouse()) GTEST_SKIP() << "SOCKWATCH_SKIP_CLICKHOUSE=1";
    absl::StatusOr<std::unique_ptr<ClickHouseTestDatabase>> db = ClickHouseTestDatabase::Create();
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = std::move(*db);
  }
  std::unique_ptr<Store> Open() {
    absl::StatusOr<std::unique_ptr<Store>> s = OpenStore(db_->url());
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }
  // db.table
  std::string T(absl::string_view table) { return absl::StrCat(db_->name(), ".", table); }

  std::unique_ptr<ClickHouseTestDatabase> db_;
};

TEST_F(ClickHouseStoreTest, CreatesTheDatabaseAndItsTables) {
  EXPECT_EQ(
      db_->Text(absl::StrCat("SELECT name FROM system.databases WHERE name = '", db_->name(), "'")),
      "<none>");
  ASSERT_NE(Open(), nullptr);
  EXPECT_EQ(db_->Text(absl::StrCat("SELECT arrayStringConcat(arraySort(groupArray(concat(name, "
                                   "' ', engine, ' (', sorting_key, ')'))), '; ') FROM "
                                   "system.tables WHERE database = '",
                                   db_->name(), "'")),
            "event_keys ReplacingMergeTree (host_id, agent_instance, seq); "
            "events ReplacingMergeTree (host_id, time_ns, agent_instance, seq); "
            "facts MergeTree (exe, direction, protocol, port, host_id); "
            "hosts ReplacingMergeTree (host_id); "
            "schema_version MergeTree (version); "
            "triage MergeTree (alert_id, time_ns, stamp)");
  EXPECT_EQ(db_->Text(absl::StrCat("SELECT toString(max(version)) FROM ", T("schema_version"))),
            absl::StrCat(kClickHouseStoreSchemaVersion));
  // Opening again changes nothing.
  ASSERT_NE(Open(), nullptr);
  EXPECT_EQ(db_->Text(absl::StrCat("SELECT toString(count()) FROM ", T("schema_version"))), "1");
}

TEST_F(ClickHouseStoreTest, QueryColumnsHoldTheFacts) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  const std::vector<v1::Envelope> batch = {FullNetwork(), FullAlert()};
  ASSERT_TRUE(store->Write(Ptrs(batch)).ok());
  const std::string columns =
      "concat(kind, '|', toString(pid), '|', exe, '|', sha256, '|', remote_ip, '|', "
      "toString(remote_port), '|', toString(protocol), '|', toString(direction), '|', rule, '|', "
      "container_id, '|', alert_id, '|', toString(time_ns))";
  EXPECT_EQ(db_->Text(absl::StrCat("SELECT ", columns, " FROM ", T("events"), " WHERE seq = 7")),
            "network|4242|/usr/bin/curl||2001:db8::53|53|2|2||"
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef||"
            "1700000030250000000");
  EXPECT_EQ(db_->Text(absl::StrCat("SELECT ", columns, " FROM ", T("events"), " WHERE seq = 8")),
            "alert|4242|/tmp/.x/payload|"
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08|10.9.9.9|4444|1|1|"
            "suspicious_image_network|"
            "feedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedface|host-a/inst-1/8|"
            "1700000031250000000");
  EXPECT_EQ(db_->Text(absl::StrCat("SELECT concat(host_id, '/', agent_instance, '/', "
                                   "toString(seq)) FROM ",
                                   T("event_keys"), " ORDER BY seq")),
            "host-a/inst-1/7");
  // The flow end is no fact; the alert's evidence is, under its process.
  EXPECT_EQ(db_->Text(absl::StrCat("SELECT concat(host_id, ' ', exe, ' ', sha256, ' ', remote_ip, "
                                   "' ', toString(port)) FROM ",
                                   T("facts"))),
            "host-a /tmp/.x/payload "
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 10.9.9.9 4444");
}

TEST_F(ClickHouseStoreTest, RowsStoredTwiceAreReturnedOnce) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  std::vector<v1::Envelope> batch;
  for (uint64_t seq = 1; seq <= 3; ++seq) batch.push_back(Network("h", "i", seq, seq));
  ASSERT_TRUE(store->Write(Ptrs(batch)).ok());
  // Another collector raced us on the same replay: every row is there twice.
  ASSERT_TRUE(db_->Exec(absl::StrCat("INSERT INTO ", T("events"), " SELECT * FROM ", T("events"))));
  ASSERT_EQ(db_->Text(absl::StrCat("SELECT toString(count()) FROM ", T("events"))), "6");
  absl::StatusOr<std::vector<v1::Envelope>> got = store->Events({});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(Keys(*got), (Strings{"h/i/1", "h/i/2", "h/i/3"}));
  absl::StatusOr<uint64_t> n = store->CountEvents(Q().Kind("network"));
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 3u);
  // Pages count each row once, on both read paths (keys first; one scan).
  auto find = [&store](const EventQuery& q) {
    absl::StatusOr<std::vector<v1::Envelope>> r = store->Events(q);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? Keys(*r) : Strings{};
  };
  EventQuery page = Q().Limit(2);
  page.offset = 1;
  EXPECT_EQ(find(page), (Strings{"h/i/2", "h/i/3"}));
  page.newest_first = true;
  EXPECT_EQ(find(page), (Strings{"h/i/2", "h/i/1"}));
  page.limit = 0;  // everything after the offset: one scan
  EXPECT_EQ(find(page), (Strings{"h/i/2", "h/i/1"}));
  page.argv_contains = "curl";  // decoded: one scan
  page.limit = 1;
  EXPECT_EQ(find(page), (Strings{"h/i/2"}));
  page.offset = 0;
  page.limit = 0;
  n = store->CountEvents(page);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 3u);
}

TEST_F(ClickHouseStoreTest, AWriteCutBeforeItsKeysIsStoredOnceByTheRetry) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  std::vector<v1::Envelope> batch;
  for (uint64_t seq = 1; seq <= 3; ++seq) batch.push_back(Network("h", "i", seq, seq));
  // event_keys goes missing after the pre-check: the events are written,
  // their keys are not, and the call fails.
  ASSERT_TRUE(db_->Exec(absl::StrCat("RENAME TABLE ", T("event_keys"), " TO ", T("away"))));
  ASSERT_TRUE(
      db_->Exec(absl::StrCat("CREATE VIEW ", T("event_keys"), " AS SELECT * FROM ", T("away"))));
  absl::StatusOr<WriteResult> r = store->Write(Ptrs(batch));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(), "write event keys")) << r.status();
  ASSERT_TRUE(db_->Exec(absl::StrCat("DROP TABLE ", T("event_keys"))));
  ASSERT_TRUE(db_->Exec(absl::StrCat("RENAME TABLE ", T("away"), " TO ", T("event_keys"))));
  // The agent retries; the events go in again, and queries show each once.
  r = store->Write(Ptrs(batch));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stored, 3u);
  absl::StatusOr<uint64_t> n = store->CountEvents({});
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 3u);
  // And from now on they are known.
  r = store->Write(Ptrs(batch));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->duplicates, 3u);
}

// Write asks event_keys only when a batch could hold stored keys: the first
// batch of a stream, a replay below what it stored, and the first batch
// after the stream's Hello (the agent may have sent to another collector).
TEST_F(ClickHouseStoreTest, LooksUpStoredKeysOnlyForNewStreamsReplaysAndAfterAHello) {
  auto a_store = Open();
  auto b_store = Open();  // a second collector on the same database
  ASSERT_NE(a_store, nullptr);
  ASSERT_NE(b_store, nullptr);
  auto* a = dynamic_cast<ClickHouseStore*>(a_store.get());
  ASSERT_NE(a, nullptr);
  auto write = [](Store& store, const char* host, const char* instance, uint64_t from,
                  uint64_t to) {
    std::vector<v1::Envelope> batch;
    for (uint64_t seq = from; seq <= to; ++seq)
      batch.push_back(Network(host, instance, seq, static_cast<int64_t>(seq)));
    absl::StatusOr<WriteResult> r = store.Write(Ptrs(batch));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? std::make_pair(r->stored, r->duplicates) : std::make_pair(~0ul, ~0ul);
  };
  using Counts = std::pair<uint64_t, uint64_t>;  // stored, duplicates
  EXPECT_EQ(write(*a, "h", "i", 1, 3), Counts(3, 0));
  EXPECT_EQ(a->key_lookups(), 1u);  // a stream it never stored
  EXPECT_EQ(write(*a, "h", "i", 4, 6), Counts(3, 0));
  EXPECT_EQ(write(*a, "h", "i", 7, 7), Counts(1, 0));
  EXPECT_EQ(a->key_lookups(), 1u);  // in order, above the mark: no look-up
  EXPECT_EQ(write(*a, "h", "i", 6, 8), Counts(1, 2));  // a replay
  EXPECT_EQ(a->key_lookups(), 2u);
  EXPECT_EQ(write(*a, "h", "j", 1, 2), Counts(2, 0));  // the host's agent restarted
  EXPECT_EQ(a->key_lookups(), 3u);
  EXPECT_EQ(write(*a, "h", "i", 9, 9), Counts(1, 0));  // back to the old instance
  EXPECT_EQ(a->key_lookups(), 4u);

  // The agent moves to collector B, which stores 10..12 of the stream, and
  // then comes back to A with a Hello and replays what B did not ack.
  EXPECT_EQ(write(*b_store, "h", "i", 10, 12), Counts(3, 0));
  v1::Hello hello;
  hello.set_host_id("h");
  hello.set_agent_instance("i");
  ASSERT_TRUE(a->UpsertHost(hello, absl::Now()).ok());
  EXPECT_EQ(write(*a, "h", "i", 11, 14), Counts(2, 2));
  EXPECT_EQ(a->key_lookups(), 5u);
  // Every event is stored once: 14 of h/i and 2 of h/j.
  EXPECT_EQ(db_->Text(absl::StrCat("SELECT toString(count()) FROM ", T("events"))), "16");
  EXPECT_EQ(db_->Text(absl::StrCat("SELECT toString(count()) FROM ", T("event_keys"))), "16");
}

TEST_F(ClickHouseStoreTest, ServerErrorsCarryClickHousesMessage) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(db_->Exec(absl::StrCat("DROP TABLE ", T("events"))));
  const std::vector<v1::Envelope> batch = {Network("h", "i", 1)};
  absl::StatusOr<WriteResult> r = store->Write(Ptrs(batch));
  ASSERT_FALSE(r.ok());
  const std::string message(r.status().message());
  EXPECT_TRUE(absl::StartsWith(message, "store: clickhouse 127.0.0.1:")) << message;
  EXPECT_TRUE(absl::StrContains(message, "write 1 events")) << message;
  EXPECT_TRUE(absl::StrContains(message, db_->name() + ".events")) << message;  // ClickHouse's
  EXPECT_TRUE(absl::StrContains(message, "HTTP 4") || absl::StrContains(message, "HTTP 5"))
      << message;
  // Bytes a terminal would choke on come back escaped, on one line.
  absl::Status s = db_->client().Execute("SELEC 'a\x01\n\xff'", "bad query");
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "\\x01")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "\\xff")) << s;
  EXPECT_FALSE(absl::StrContains(s.message(), "\n")) << s;
  EXPECT_FALSE(absl::StrContains(s.message(), "\x01")) << s;
}

TEST_F(ClickHouseStoreTest, RefusesANewerSchema) {
  { ASSERT_NE(Open(), nullptr); }
  ASSERT_TRUE(db_->Exec(absl::StrCat("INSERT INTO ", T("schema_version"), " VALUES (",
                                     kClickHouseStoreSchemaVersion + 1, ", 0)")));
  absl::StatusOr<std::unique_ptr<Store>> s = OpenStore(db_->url());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition) << s.status();
  EXPECT_TRUE(absl::StrContains(s.status().message(),
                                absl::StrCat("schema version ", kClickHouseStoreSchemaVersion + 1)))
      << s.status();
  EXPECT_TRUE(absl::StrContains(s.status().message(), db_->name())) << s.status();
}

TEST_F(ClickHouseStoreTest, RefusesSomebodyElsesDatabase) {
  ASSERT_TRUE(db_->Exec(absl::StrCat("CREATE DATABASE ", db_->name())));
  ASSERT_TRUE(db_->Exec(
      absl::StrCat("CREATE TABLE ", T("invoices"), " (id UInt64) ENGINE = MergeTree ORDER BY id")));
  absl::StatusOr<std::unique_ptr<Store>> s = OpenStore(db_->url());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition) << s.status();
  EXPECT_TRUE(absl::StrContains(s.status().message(), "not a sockwatch collector store"))
      << s.status();
  EXPECT_EQ(db_->Text(absl::StrCat("SELECT toString(count()) FROM system.tables WHERE database = '",
                                   db_->name(), "'")),
            "1");
}

TEST_F(ClickHouseStoreTest, DamagedEnvelopeIsDataLossNamingTheRow) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  const std::vector<v1::Envelope> batch = {Network("h", "i", 1), Network("h", "i", 2)};
  ASSERT_TRUE(store->Write(Ptrs(batch)).ok());
  // No ALTER ... UPDATE on 18.16: a damaged copy of row 2 under a new seq.
  ASSERT_TRUE(db_->Exec(absl::StrCat(
      "INSERT INTO ", T("events"),
      " SELECT host_id, agent_instance, 3, time_ns, kind, pid, exe, sha256, remote_ip, "
      "remote_port, protocol, direction, rule, container_id, alert_id, unhex('ffffffff') FROM ",
      T("events"), " WHERE seq = 2")));
  absl::StatusOr<std::vector<v1::Envelope>> r = store->Events({});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "host_id=h agent_instance=i seq=3"))
      << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), db_->name())) << r.status();
  // Rows before it still read, when asked for.
  absl::StatusOr<std::vector<v1::Envelope>> first = store->Events(Q().Limit(2));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(Keys(*first), (Strings{"h/i/1", "h/i/2"}));
}

}  // namespace
}  // namespace sockwatch
