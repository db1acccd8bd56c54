// The collector store against real SQLite files (one fresh directory per
// test). Raw SQL through a second connection checks what lands in the file
// and plays the other process (a lock holder, a corrupter, a newer sockwatch).
#include "collector/store.h"

#include <google/protobuf/util/message_differencer.h>
#include <sqlite3.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "collector/sqlite_store.h"
#include "gtest/gtest.h"

namespace sockwatch {
namespace {

namespace fs = std::filesystem;
using google::protobuf::util::MessageDifferencer;

const absl::Time kBase = absl::FromUnixSeconds(1'700'000'000);

void SetTime(v1::Envelope& e, int64_t sec) {
  e.mutable_time()->set_seconds(absl::ToUnixSeconds(kBase) + sec);
  e.mutable_time()->set_nanos(250'000'000);
}

v1::Envelope Network(const std::string& host, const std::string& instance, uint64_t seq,
                     int64_t sec = 0) {
  v1::Envelope e;
  e.set_host_id(host);
  e.set_agent_instance(instance);
  e.set_seq(seq);
  SetTime(e, sec);
  e.set_hostname("web-1");
  v1::NetworkEvent* n = e.mutable_network();
  n->set_kind(v1::NETWORK_KIND_CONNECT);
  n->set_protocol(v1::PROTOCOL_TCP);
  n->set_ip_version(4);
  n->set_local_ip("10.0.0.5");
  n->set_local_port(40000);
  n->set_remote_ip("93.184.216.34");
  n->set_remote_port(443);
  n->set_direction(v1::DIRECTION_OUTBOUND);
  n->set_outcome(v1::OUTCOME_ESTABLISHED);
  v1::Process* p = n->mutable_process();
  p->set_pid(4242);
  p->set_exe("/usr/bin/curl");
  p->add_argv("curl");
  p->add_argv("https://example.com/");
  return e;
}

// Every field of a network event, so the round trip leaves nothing behind.
v1::Envelope FullNetwork() {
  v1::Envelope e = Network("host-a", "inst-1", 7, 30);
  e.set_boottime_ns(123'456'789'000);
  v1::NetworkEvent* n = e.mutable_network();
  n->set_kind(v1::NETWORK_KIND_FLOW_END);
  n->set_protocol(v1::PROTOCOL_UDP);
  n->set_ip_version(6);
  n->set_local_ip("fd00::5");
  n->set_local_port(53000);
  n->set_remote_ip("2001:db8::53");
  n->set_remote_port(53);
  n->set_direction(v1::DIRECTION_INBOUND);
  n->set_outcome(v1::OUTCOME_REFUSED);
  n->set_error_code(111);
  n->set_community_id("1:LQU9qZlK+B5F3KDmev6m5PMibrg=");
  n->set_socket_cookie(0xdeadbeef01);
  n->set_duration_ns(1'500'000);
  n->set_bytes_sent(1024);
  n->set_bytes_received(65536);
  n->set_snapshot(true);
  n->set_socket_state("ESTABLISHED");
  n->set_netns(4026531840u);
  v1::Process* p = n->mutable_process();
  p->set_tid(4243);
  p->set_ppid(1);
  p->set_uid(1000);
  p->set_gid(1000);
  p->mutable_start_time()->set_seconds(1'699'999'000);
  p->mutable_start_time()->set_nanos(5);
  p->set_start_boottime_ns(99'000'000);
  p->set_cgroup_id(777);
  p->set_comm("curl");
  p->set_parent_start_boottime_ns(1'000);
  p->set_argv_truncated(true);
  p->set_argv_full_len(9000);
  p->set_exe_deleted(true);
  p->set_exe_truncated(true);
  p->set_from_snapshot(true);
  p->set_unknown(true);
  p->set_exe_raw(std::string("/usr/bin/cu\xffrl", 12));
  p->add_argv_raw(std::string("c\xfe", 2));
  p->set_container_id("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
  return e;
}

v1::Envelope FullAlert() {
  v1::Envelope e;
  e.set_host_id("host-a");
  e.set_agent_instance("inst-1");
  e.set_seq(8);
  SetTime(e, 31);
  e.set_boottime_ns(5);
  e.set_hostname("web-1");
  v1::Alert* a = e.mutable_alert();
  a->set_id("host-a/inst-1/8");
  a->set_rule("suspicious_image_network");
  a->set_severity(v1::SEVERITY_HIGH);
  a->set_summary("a deleted binary connected to 10.9.9.9:4444");
  *a->mutable_process() = FullNetwork().network().process();
  a->mutable_process()->set_exe("/tmp/.x/payload");
  v1::ImageIdentity* img = a->mutable_image();
  img->set_exe("/tmp/.x/payload");
  img->set_sha256("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
  img->set_interpreter("python3");
  img->set_script("/tmp/.x/run.py");
  img->set_inline_code("-");
  img->set_key("sha256:9f86d0");
  img->set_container_id("feedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedface");
  img->set_cgroup_path("/system.slice/docker-feedface.scope");
  img->add_suspicious("deleted");
  img->add_suspicious("hidden_dir");
  v1::Process* parent = a->add_ancestors();
  parent->set_pid(1);
  parent->set_exe("/sbin/init");
  parent->add_argv("/sbin/init");
  *a->mutable_network() = Network("host-a", "inst-1", 1).network();
  a->mutable_network()->set_remote_ip("10.9.9.9");
  a->mutable_network()->set_remote_port(4444);
  v1::BaselineFacts* b = a->mutable_baseline();
  b->mutable_image_first_seen()->set_seconds(1'690'000'000);
  b->set_known_behaviors(3);
  b->add_new_facts("remote port 4444");
  b->set_same_sha256_other_path("/usr/bin/payload");
  b->set_path_known_other_sha256("aa");
  b->set_learning(true);
  a->set_occurrences(2);
  a->set_maybe_incomplete(true);
  a->set_repeat_summary(true);
  return e;
}

v1::Envelope Loss(const std::string& host, const std::string& instance, uint64_t seq, int64_t sec,
                  uint64_t count) {
  v1::Envelope e;
  e.set_host_id(host);
  e.set_agent_instance(instance);
  e.set_seq(seq);
  SetTime(e, sec);
  e.mutable_loss()->set_reason("ringbuf_full");
  e.mutable_loss()->set_count(count);
  return e;
}

v1::Envelope Exec(const std::string& host, const std::string& instance, uint64_t seq, int64_t sec) {
  v1::Envelope e;
  e.set_host_id(host);
  e.set_agent_instance(instance);
  e.set_seq(seq);
  SetTime(e, sec);
  e.mutable_exec()->mutable_process()->set_pid(900 + static_cast<uint32_t>(seq));
  e.mutable_exec()->mutable_process()->set_exe("/bin/sh");
  return e;
}

std::vector<const v1::Envelope*> Ptrs(const std::vector<v1::Envelope>& v) {
  std::vector<const v1::Envelope*> out;
  for (const v1::Envelope& e : v) out.push_back(&e);
  return out;
}

// "host/instance/seq" of each envelope, in order: what a reader of the
// results would look at first.
std::vector<std::string> Keys(const std::vector<v1::Envelope>& v) {
  std::vector<std::string> out;
  for (const v1::Envelope& e : v)
    out.push_back(absl::StrCat(e.host_id(), "/", e.agent_instance(), "/", e.seq()));
  return out;
}

using Strings = std::vector<std::string>;

// An EventQuery with only the named filters set. (Designated initializers
// would trip -Wmissing-field-initializers.)
struct Q {
  Q& Host(std::string v) {
    q.host_id = std::move(v);
    return *this;
  }
  Q& Instance(std::string v) {
    q.agent_instance = std::move(v);
    return *this;
  }
  Q& Kind(std::string v) {
    q.kind = std::move(v);
    return *this;
  }
  Q& Since(absl::Time v) {
    q.since = v;
    return *this;
  }
  Q& Until(absl::Time v) {
    q.until = v;
    return *this;
  }
  Q& Limit(size_t v) {
    q.limit = v;
    return *this;
  }
  operator const EventQuery&() const { return q; }  // NOLINT: reads like the struct

  EventQuery q;
};

// A second connection to the file, as another process would have.
class Raw {
 public:
  explicit Raw(const std::string& path) { sqlite3_open(path.c_str(), &db_); }
  ~Raw() { sqlite3_close(db_); }
  bool Exec(const char* sql) {
    const bool ok = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) == SQLITE_OK;
    if (!ok) ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db_);
    return ok;
  }
  // The first column of the first row as text; "<null>", "<none>" or "<error>".
  std::string Text(const std::string& sql) {
    sqlite3_stmt* st = nullptr;
    std::string out = "<error>";
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) == SQLITE_OK) {
      const int rc = sqlite3_step(st);
      if (rc == SQLITE_ROW) {
        const auto* t = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
        out = t ? t : "<null>";
      } else if (rc == SQLITE_DONE) {
        out = "<none>";
      }
    }
    sqlite3_finalize(st);
    return out;
  }

 private:
  sqlite3* db_ = nullptr;
};

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/storeXXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/collector.db";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::unique_ptr<Store> Open() {
    absl::StatusOr<std::unique_ptr<Store>> s = OpenStore("sqlite:" + path_);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }
  static WriteResult MustWrite(Store& store, const std::vector<v1::Envelope>& batch) {
    absl::StatusOr<WriteResult> r = store.Write(Ptrs(batch));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : WriteResult{999, 999};
  }
  static std::vector<v1::Envelope> MustEvents(Store& store, const EventQuery& q = {}) {
    absl::StatusOr<std::vector<v1::Envelope>> r = store.Events(q);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::vector<v1::Envelope>{};
  }
  static uint64_t MustCount(Store& store, const EventQuery& q = {}) {
    absl::StatusOr<uint64_t> r = store.CountEvents(q);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : 999999;
  }

  std::string dir_;
  std::string path_;
};

TEST_F(StoreTest, NetworkAndAlertRoundTripEveryField) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  const std::vector<v1::Envelope> batch = {FullNetwork(), FullAlert()};
  const WriteResult r = MustWrite(*store, batch);
  EXPECT_EQ(r.stored, 2u);
  EXPECT_EQ(r.duplicates, 0u);

  const std::vector<v1::Envelope> got = MustEvents(*store);
  ASSERT_EQ(got.size(), 2u);
  std::string diff;
  MessageDifferencer d;
  d.ReportDifferencesToString(&diff);
  EXPECT_TRUE(d.Compare(batch[0], got[0])) << diff;
  EXPECT_TRUE(d.Compare(batch[1], got[1])) << diff;
  EXPECT_EQ(got[0].network().process().exe_raw(), std::string("/usr/bin/cu\xffrl", 12));

  // The query columns hold the facts, not just the blob.
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

TEST_F(StoreTest, SameBatchTwiceIsAllDuplicates) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  std::vector<v1::Envelope> batch;
  for (uint64_t seq = 1; seq <= 5; ++seq) batch.push_back(Network("h", "i", seq, seq));
  WriteResult r = MustWrite(*store, batch);
  EXPECT_EQ(r.stored, 5u);
  EXPECT_EQ(r.duplicates, 0u);
  r = MustWrite(*store, batch);
  EXPECT_EQ(r.stored, 0u);
  EXPECT_EQ(r.duplicates, 5u);
  EXPECT_EQ(MustCount(*store), 5u);

  // Overlap: 4 and 5 are replays, 6..8 are new.
  std::vector<v1::Envelope> overlap;
  for (uint64_t seq = 4; seq <= 8; ++seq) overlap.push_back(Network("h", "i", seq, seq));
  r = MustWrite(*store, overlap);
  EXPECT_EQ(r.stored, 3u);
  EXPECT_EQ(r.duplicates, 2u);
  EXPECT_EQ(Keys(MustEvents(*store)),
            (Strings{"h/i/1", "h/i/2", "h/i/3", "h/i/4", "h/i/5", "h/i/6", "h/i/7", "h/i/8"}));
}

TEST_F(StoreTest, ReplayKeepsTheFirstCopy) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  v1::Envelope first = Network("h", "i", 1);
  v1::Envelope replay = first;
  replay.mutable_network()->set_remote_port(8080);  // must not overwrite
  // Within one call too: the second copy of a key is a duplicate.
  const WriteResult r = MustWrite(*store, {first, replay});
  EXPECT_EQ(r.stored, 1u);
  EXPECT_EQ(r.duplicates, 1u);
  const std::vector<v1::Envelope> got = MustEvents(*store);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].network().remote_port(), 443u);

  // The same in a call long enough for multi-row inserts: 2..41 twice over.
  std::vector<v1::Envelope> doubled;
  for (int round = 0; round < 2; ++round)
    for (uint64_t seq = 2; seq <= 41; ++seq) doubled.push_back(Network("h", "i", seq, round));
  const WriteResult d = MustWrite(*store, doubled);
  EXPECT_EQ(d.stored, 40u);
  EXPECT_EQ(d.duplicates, 40u);
  const std::vector<v1::Envelope> all = MustEvents(*store);
  ASSERT_EQ(all.size(), 41u);
  EXPECT_EQ(all[40].seq(), 41u);
  EXPECT_EQ(all[40].time().seconds(), absl::ToUnixSeconds(kBase));  // the first copy
}

TEST_F(StoreTest, SameSeqOnOtherHostsAndInstancesIsDistinct) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  // Deliberately out of order: results come back by host, instance, seq.
  const WriteResult r = MustWrite(*store, {Network("h2", "i1", 1), Network("h1", "i2", 1),
                                           Network("h1", "i1", 2), Network("h1", "i1", 1)});
  EXPECT_EQ(r.stored, 4u);
  EXPECT_EQ(r.duplicates, 0u);
  EXPECT_EQ(Keys(MustEvents(*store)), (Strings{"h1/i1/1", "h1/i1/2", "h1/i2/1", "h2/i1/1"}));
}

TEST_F(StoreTest, ReopenedFileHasTheDataAndStillDeduplicates) {
  std::vector<v1::Envelope> batch = {Network("h", "i", 1, 1), Network("h", "i", 2, 2)};
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(MustWrite(*store, batch).stored, 2u);
  }
  // A relative path names the same file.
  const std::string relative = fs::relative(path_).string();
  ASSERT_FALSE(fs::path(relative).is_absolute());
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore("sqlite:" + relative);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(Keys(MustEvents(**store)), (Strings{"h/i/1", "h/i/2"}));
  batch.push_back(Network("h", "i", 3, 3));
  const WriteResult r = MustWrite(**store, batch);
  EXPECT_EQ(r.stored, 1u);
  EXPECT_EQ(r.duplicates, 2u);
  EXPECT_EQ(MustCount(**store), 3u);
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

TEST_F(StoreTest, UpsertHostKeepsFirstSeenAndRefreshesTheRest) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  v1::Hello hello;
  hello.set_host_id("host-a");
  hello.set_agent_instance("inst-1");
  hello.set_hostname("web-1");
  hello.set_kernel_release("6.1.0-13-amd64");
  hello.set_agent_version("0.1.0");
  hello.mutable_coverage()->set_btf(true);
  ASSERT_TRUE(store->UpsertHost(hello, kBase).ok());
  v1::Hello other;
  other.set_host_id("host-b");
  other.set_hostname("db-1");
  ASSERT_TRUE(store->UpsertHost(other, kBase + absl::Seconds(1)).ok());

  hello.set_agent_instance("inst-2");
  hello.set_kernel_release("6.1.0-18-amd64");
  hello.set_agent_version("0.2.0");
  ASSERT_TRUE(store->UpsertHost(hello, kBase + absl::Hours(2)).ok());

  absl::StatusOr<std::vector<HostRecord>> hosts = store->Hosts();
  ASSERT_TRUE(hosts.ok()) << hosts.status();
  ASSERT_EQ(hosts->size(), 2u);
  const HostRecord& a = (*hosts)[0];
  EXPECT_TRUE(MessageDifferencer::Equals(a.hello, hello)) << a.hello.DebugString();
  EXPECT_EQ(a.first_seen, kBase);
  EXPECT_EQ(a.last_seen, kBase + absl::Hours(2));
  const HostRecord& b = (*hosts)[1];
  EXPECT_EQ(b.hello.hostname(), "db-1");
  EXPECT_EQ(b.first_seen, kBase + absl::Seconds(1));
  EXPECT_EQ(b.last_seen, kBase + absl::Seconds(1));

  Raw raw(path_);
  EXPECT_EQ(raw.Text("SELECT hostname || '|' || kernel_release || '|' || agent_version "
                     "FROM hosts WHERE host_id = 'host-a'"),
            "web-1|6.1.0-18-amd64|0.2.0");

  v1::Hello nameless;
  EXPECT_EQ(store->UpsertHost(nameless, kBase).code(), absl::StatusCode::kInvalidArgument);
}

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

TEST_F(StoreTest, ReadersSeeWholeWritesWhileTheWriterRuns) {
  auto store = Open();
  ASSERT_NE(store, nullptr);
  constexpr int kBatches = 40;
  constexpr int kBatch = 50;
  std::atomic<bool> done{false};
  std::atomic<int> torn{0};
  std::atomic<int> reads{0};
  std::thread reader([&] {
    uint64_t last = 0;
    while (!done.load()) {
      absl::StatusOr<uint64_t> n = store->CountEvents(Q().Host("h"));
      if (!n.ok() || *n % kBatch != 0 || *n < last) ++torn;
      if (n.ok()) last = *n;
      ++reads;
    }
  });
  uint64_t stored = 0;
  for (int b = 0; b < kBatches; ++b) {
    std::vector<v1::Envelope> batch;
    for (int i = 1; i <= kBatch; ++i) batch.push_back(Network("h", "i", b * kBatch + i));
    stored += MustWrite(*store, batch).stored;
  }
  done = true;
  reader.join();
  EXPECT_EQ(stored, uint64_t{kBatches * kBatch});
  EXPECT_EQ(MustCount(*store), uint64_t{kBatches * kBatch});
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(torn.load(), 0);
}

TEST_F(StoreTest, OpenStoreRejectsUnknownSchemes) {
  for (const char* url : {"clickhouse://db:9000/sockwatch", "/var/lib/sockwatch.db", "sqlite:"}) {
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
