// The collector store against real SQLite files (one fresh directory per
// test). Raw SQL through a second connection checks what lands in the file
// and plays the other process (a lock holder, a corrupter, a newer sockwatch).
// What every backend must do is tested in store_contract*_test.cc.
#include "collector/store.h"

#include <google/protobuf/util/message_differencer.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "collector/sqlite_store.h"
#include "gtest/gtest.h"
#include "tests/unit/store_test_util.h"

namespace sockwatch {
namespace {

using namespace store_test;  // NOLINT: shared test fixtures
using google::protobuf::util::MessageDifferencer;

// The round trip itself is in store_contract_test.cc (every backend).
TEST_F(StoreTest, QueryColumnsHoldTheFacts) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  const WriteResult r = MustWrite(*store, {FullNetwork(), FullAlert()});
  EXPECT_EQ(r.stored, 2u);
  Raw raw(path_);
  EXPECT_EQ(raw.Text("SELECT kind || '|' || pid || '|' || exe || '|' || remote_ip || '|' || "
                     "remote_port || '|' || protocol || '|' || direction || '|' || container_id "
                     "|| '|' || time_ns FROM events WHERE seq = 7"),
            "network|4242|/usr/bin/curl|2001:db8::53|53|2|2|"
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef|"
            "1700000030250000000");
  EXPECT_EQ(raw.Text("SELECT kind || '|' || pid || '|' || exe || '|' || sha256 || '|' || "
                     "remote_ip || '|' || remote_port || '|' || rule || '|' || container_id "
                     "FROM events WHERE seq = 8"),
            "alert|4242|/tmp/.x/payload|"
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08|10.9.9.9|4444|"
            "suspicious_image_network|"
            "feedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedface");
  EXPECT_EQ(raw.Text("SELECT host_id || '/' || agent_instance FROM streams"), "host-a/inst-1");
  // The blob leaves the key to the key columns; reads put it back (above).
  EXPECT_EQ(raw.Text("SELECT instr(envelope, CAST('host-a' AS BLOB)) + "
                     "instr(envelope, CAST('inst-1' AS BLOB)) FROM events WHERE seq = 7"),
            "0");
  EXPECT_EQ(raw.Text("SELECT sha256 IS NULL AND rule IS NULL FROM events WHERE seq = 7"), "1");
}

TEST_F(StoreTest, RelativePathNamesTheSameFile) {
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(MustWrite(*store, {Network("h", "i", 1, 1), Network("h", "i", 2, 2)}).stored, 2u);
  }
  const std::string relative = fs::relative(path_).string();
  ASSERT_FALSE(fs::path(relative).is_absolute());
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore("sqlite:" + relative);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(Keys(MustEvents(**store)), (Strings{"h/i/1", "h/i/2"}));
}

TEST_F(StoreTest, FailureHalfwayThroughAWriteStoresNothing) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(MustWrite(*store, {Network("old", "i", 1)}).stored, 1u);
  // The third row of the next call fails inside SQLite, after two inserts and
  // a new stream row were already made in the transaction.
  Raw raw(path_);
  ASSERT_TRUE(
      raw.Exec("CREATE TRIGGER fail BEFORE INSERT ON events WHEN NEW.seq = 3 "
               "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"));
  std::vector<v1::Envelope> batch;
  for (uint64_t seq = 1; seq <= 4; ++seq) batch.push_back(Network("new", "j", seq, seq));
  absl::StatusOr<WriteResult> r = store->Write(Ptrs(batch));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(), "disk on fire")) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "seq=3")) << r.status();
  EXPECT_EQ(MustCount(*store), 1u);
  EXPECT_EQ(raw.Text("SELECT count(*) FROM streams WHERE host_id = 'new'"), "0");

  // Once the cause is gone the same call stores everything under the right
  // host: no stream id from the rolled-back transaction was remembered.
  ASSERT_TRUE(raw.Exec("DROP TRIGGER fail"));
  const WriteResult ok = MustWrite(*store, batch);
  EXPECT_EQ(ok.stored, 4u);
  EXPECT_EQ(Keys(MustEvents(*store)),
            (Strings{"new/j/1", "new/j/2", "new/j/3", "new/j/4", "old/i/1"}));
}

TEST_F(StoreTest, FailureInsideALargeBatchStoresNothing) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  // Large enough for the multi-row path, with alerts (their own path) mixed in.
  std::vector<v1::Envelope> batch;
  for (uint64_t seq = 1; seq <= 200; ++seq) {
    batch.push_back(seq % 50 == 0 ? Loss("h", "i", seq, seq, 1) : Network("h", "i", seq, seq));
  }
  Raw raw(path_);
  ASSERT_TRUE(
      raw.Exec("CREATE TRIGGER fail BEFORE INSERT ON events WHEN NEW.seq = 170 "
               "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"));
  absl::StatusOr<WriteResult> r = store->Write(Ptrs(batch));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(), "disk on fire")) << r.status();
  EXPECT_EQ(MustCount(*store), 0u);
  EXPECT_EQ(raw.Text("SELECT count(*) FROM rare_events"), "0");

  ASSERT_TRUE(raw.Exec("DROP TRIGGER fail"));
  const WriteResult ok = MustWrite(*store, batch);
  EXPECT_EQ(ok.stored, 200u);
  EXPECT_EQ(ok.duplicates, 0u);
  // Every seq once, in order, each with its own content.
  const std::vector<v1::Envelope> got = MustEvents(*store);
  ASSERT_EQ(got.size(), 200u);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].seq(), i + 1);
    EXPECT_TRUE(MessageDifferencer::Equals(got[i], batch[i])) << i;
  }
  EXPECT_EQ(MustCount(*store, Q().Kind("loss")), 4u);
  // A replay with fresh ones mixed in: split exactly.
  for (uint64_t seq = 201; seq <= 240; ++seq) batch.push_back(Network("h", "i", seq, seq));
  const WriteResult again = MustWrite(*store, batch);
  EXPECT_EQ(again.stored, 40u);
  EXPECT_EQ(again.duplicates, 200u);
}

TEST_F(StoreTest, WriteFailsCleanlyWhileAnotherProcessHoldsTheWriteLock) {
  absl::StatusOr<std::unique_ptr<SqliteStore>> store =
      SqliteStore::Open(SqliteStoreOptions{path_, absl::Milliseconds(50)});
  ASSERT_TRUE(store.ok()) << store.status();
  Raw raw(path_);
  ASSERT_TRUE(raw.Exec("BEGIN IMMEDIATE"));
  const std::vector<v1::Envelope> batch = {Network("h", "i", 1), Network("h", "i", 2)};
  absl::StatusOr<WriteResult> r = (*store)->Write(Ptrs(batch));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), path_)) << r.status();
  ASSERT_TRUE(raw.Exec("ROLLBACK"));
  EXPECT_EQ(MustCount(**store), 0u);
  const WriteResult ok = MustWrite(**store, batch);
  EXPECT_EQ(ok.stored, 2u);
  EXPECT_EQ(ok.duplicates, 0u);
}

// What Hosts returns is in store_contract_test.cc (every backend).
TEST_F(StoreTest, UpsertHostFillsTheHostColumns) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  v1::Hello hello;
  hello.set_host_id("host-a");
  hello.set_hostname("web-1");
  hello.set_kernel_release("6.1.0-13-amd64");
  hello.set_agent_version("0.1.0");
  ASSERT_TRUE(store->UpsertHost(hello, kBase).ok());
  hello.set_kernel_release("6.1.0-18-amd64");
  hello.set_agent_version("0.2.0");
  ASSERT_TRUE(store->UpsertHost(hello, kBase + absl::Hours(2)).ok());
  Raw raw(path_);
  EXPECT_EQ(raw.Text("SELECT hostname || '|' || kernel_release || '|' || agent_version "
                     "FROM hosts WHERE host_id = 'host-a'"),
            "web-1|6.1.0-18-amd64|0.2.0");
}

TEST_F(StoreTest, OpenStoreRejectsUnknownSchemes) {
  for (const char* url : {"mysql://db/sockwatch", "/var/lib/sockwatch.db", "sqlite:"}) {
    absl::StatusOr<std::unique_ptr<Store>> s = OpenStore(url);
    ASSERT_FALSE(s.ok()) << url;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << url;
    EXPECT_TRUE(absl::StrContains(s.status().message(), "sqlite:PATH")) << s.status();
  }
}

TEST_F(StoreTest, OpenStoreNamesAMissingDirectory) {
  const std::string missing = dir_ + "/nope/collector.db";
  absl::StatusOr<std::unique_ptr<Store>> s = OpenStore("sqlite:" + missing);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound) << s.status();
  EXPECT_TRUE(absl::StrContains(s.status().message(), dir_ + "/nope")) << s.status();
  EXPECT_FALSE(fs::exists(dir_ + "/nope"));
}

TEST_F(StoreTest, OpenStoreRefusesAFileThatIsNotADatabase) {
  {
    std::ofstream f(path_);
    f << "this is a config file, not a database, and it is long enough to have a header\n";
  }
  absl::StatusOr<std::unique_ptr<Store>> s = OpenStore("sqlite:" + path_);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.status().message(), path_)) << s.status();
  EXPECT_TRUE(absl::StrContains(s.status().message(), "not a database")) << s.status();
  // Left as it was.
  std::ifstream f(path_);
  std::string line;
  std::getline(f, line);
  EXPECT_TRUE(absl::StartsWith(line, "this is a config file")) << line;
}

TEST_F(StoreTest, OpenStoreRefusesSomebodyElsesDatabase) {
  { Raw(path_).Exec("CREATE TABLE invoices(id INTEGER PRIMARY KEY)"); }
  absl::StatusOr<std::unique_ptr<Store>> s = OpenStore("sqlite:" + path_);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition) << s.status();
  EXPECT_TRUE(absl::StrContains(s.status().message(), "not a sockwatch collector store"))
      << s.status();
  // Untouched: no tables added, still in its own journal mode.
  Raw raw(path_);
  EXPECT_EQ(raw.Text("SELECT count(*) FROM sqlite_schema"), "1");
  EXPECT_EQ(raw.Text("PRAGMA journal_mode"), "delete");
}

TEST_F(StoreTest, OpenStoreRefusesANewerSchema) {
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(MustWrite(*store, {Network("h", "i", 1)}).stored, 1u);
  }
  const std::string newer = absl::StrCat(kSqliteStoreSchemaVersion + 1);
  ASSERT_TRUE(Raw(path_).Exec(("UPDATE schema_version SET version = " + newer).c_str()));
  absl::StatusOr<std::unique_ptr<Store>> s = OpenStore("sqlite:" + path_);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition) << s.status();
  EXPECT_TRUE(absl::StrContains(s.status().message(), path_)) << s.status();
  EXPECT_TRUE(absl::StrContains(s.status().message(), "schema version " + newer)) << s.status();
  // Nothing was touched: the row is still there for the newer sockwatch.
  EXPECT_EQ(Raw(path_).Text("SELECT count(*) FROM events"), "1");
}

TEST(StoreEnvelopeKindTest, NamesEveryEventKind) {
  v1::Envelope e;
  EXPECT_EQ(EnvelopeKind(e), "");
  e.mutable_exec();
  EXPECT_EQ(EnvelopeKind(e), "exec");
  e.mutable_fork();
  EXPECT_EQ(EnvelopeKind(e), "fork");
  e.mutable_exit();
  EXPECT_EQ(EnvelopeKind(e), "exit");
  e.mutable_network();
  EXPECT_EQ(EnvelopeKind(e), "network");
  e.mutable_loss();
  EXPECT_EQ(EnvelopeKind(e), "loss");
  e.mutable_coverage();
  EXPECT_EQ(EnvelopeKind(e), "coverage");
  e.mutable_alert();
  EXPECT_EQ(EnvelopeKind(e), "alert");
  e.mutable_learning();
  EXPECT_EQ(EnvelopeKind(e), "learning");
}

}  // namespace
}  // namespace sockwatch
