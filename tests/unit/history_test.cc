#include "agent/history.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>
#include <sqlite3.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace sockwatch {
namespace {

namespace fs = std::filesystem;
using google::protobuf::util::MessageDifferencer;

const absl::Time kBase = absl::FromUnixSeconds(1'700'000'000);

v1::Envelope Net(int64_t sec, uint32_t pid, const std::string& exe, uint32_t local_port,
                 const std::string& remote_ip, uint32_t remote_port) {
  v1::Envelope e;
  e.set_host_id("host");
  e.mutable_time()->set_seconds(absl::ToUnixSeconds(kBase) + sec);
  e.mutable_time()->set_nanos(123);
  v1::NetworkEvent* n = e.mutable_network();
  n->set_kind(v1::NETWORK_KIND_CONNECT);
  n->set_protocol(v1::PROTOCOL_TCP);
  n->set_ip_version(remote_ip.find(':') == std::string::npos ? 4 : 6);
  n->set_local_ip(n->ip_version() == 4 ? "10.0.0.1" : "fd00::1");
  n->set_local_port(local_port);
  n->set_remote_ip(remote_ip);
  n->set_remote_port(remote_port);
  n->set_direction(v1::DIRECTION_OUTBOUND);
  n->set_outcome(v1::OUTCOME_ESTABLISHED);
  n->mutable_process()->set_pid(pid);
  n->mutable_process()->set_exe(exe);
  n->mutable_process()->add_argv(exe);
  return e;
}

v1::Envelope Alert(int64_t sec, uint32_t pid, const std::string& exe, const std::string& ip,
                   uint32_t port) {
  v1::Envelope e;
  e.mutable_time()->set_seconds(absl::ToUnixSeconds(kBase) + sec);
  v1::Alert* a = e.mutable_alert();
  a->set_rule("new_behavior");
  a->set_severity(v1::SEVERITY_HIGH);
  a->set_summary("curl talked to a new port");
  a->mutable_process()->set_pid(pid);
  a->mutable_process()->set_exe(exe);
  a->mutable_process()->add_argv("curl");
  *a->mutable_network() = Net(sec, 0, "", 50000, ip, port).network();
  a->mutable_network()->clear_process();  // pid/exe must come from alert.process
  return e;
}

// Runs `sql` on `path` behind the store's back; the first column of the
// first row, 0 for no row, -1 on error.
int64_t Raw(const std::string& path, const char* sql) {
  sqlite3* db = nullptr;
  sqlite3_stmt* st = nullptr;
  int64_t v = -1;
  if (sqlite3_open(path.c_str(), &db) == SQLITE_OK &&
      sqlite3_prepare_v2(db, sql, -1, &st, nullptr) == SQLITE_OK) {
    const int rc = sqlite3_step(st);
    v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : rc == SQLITE_DONE ? 0 : -1;
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

class HistoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/historyXXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/history.db";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::unique_ptr<HistoryStore> OpenStore(HistoryOptions o = {}) {
    o.path = path_;
    absl::StatusOr<std::unique_ptr<HistoryStore>> s = HistoryStore::Open(o);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }
  // A mix: three exes, IPv4 and IPv6 remotes, one alert, one ignored exec.
  void Fill(HistoryStore& store) {
    std::vector<v1::Envelope> b;
    b.push_back(Net(10, 100, "/usr/bin/curl", 40000, "93.184.216.34", 443));
    b.push_back(Net(20, 200, "/usr/bin/python3", 40001, "10.1.2.3", 8080));
    b.push_back(Net(30, 201, "/usr/bin/python3.11", 53, "2001:db8::5", 5353));
    b.push_back(Net(40, 300, "/opt/a?b", 40003, "10.200.0.1", 22));
    b.push_back(Net(50, 100, "/usr/bin/curl", 443, "192.168.1.9", 60000));
    v1::Envelope exec;
    exec.mutable_exec()->mutable_process()->set_pid(7);
    b.push_back(exec);
    b.push_back(Alert(60, 100, "/usr/bin/curl", "10.9.9.9", 4444));
    ASSERT_TRUE(store.Append(b).ok());
  }
  // Seconds after kBase of each result, in result order; {-1} on error.
  static std::vector<int64_t> Find(HistoryStore& s, const HistoryQuery& q) {
    absl::StatusOr<std::vector<v1::Envelope>> r = s.Search(q);
    if (!r.ok()) return {-1};
    std::vector<int64_t> t;
    for (const auto& e : *r) t.push_back(e.time().seconds() - absl::ToUnixSeconds(kBase));
    return t;
  }

  std::string dir_;
  std::string path_;
};

using V = std::vector<int64_t>;

TEST_F(HistoryTest, StoresNetworkAndAlertsNewestFirstAndIgnoresOthers) {
  auto store = OpenStore();
  Fill(*store);
  EXPECT_EQ(*store->Count(), 6u);
  EXPECT_EQ(Find(*store, {}), (V{60, 50, 40, 30, 20, 10}));
}

TEST_F(HistoryTest, FiltersByExeExactAndGlob) {
  auto store = OpenStore();
  Fill(*store);
  HistoryQuery q;
  q.exe = "/usr/bin/python3";
  EXPECT_EQ(Find(*store, q), (V{20}));
  q.exe = "/usr/bin/python*";
  EXPECT_EQ(Find(*store, q), (V{30, 20}));
  q.exe = "*curl";
  EXPECT_EQ(Find(*store, q), (V{60, 50, 10}));  // the alert's exe is alert.process.exe
  q.exe = "/opt/a?b";                           // '?' is literal, exact and in a glob
  EXPECT_EQ(Find(*store, q), (V{40}));
  q.exe = "/opt/a?*";
  EXPECT_EQ(Find(*store, q), (V{40}));
  q.exe = "/usr/bin/pytho?3";
  EXPECT_EQ(Find(*store, q), V{});
  q.exe = "/usr/bin/pytho[n]*";
  EXPECT_EQ(Find(*store, q), V{});
}

TEST_F(HistoryTest, FiltersByPid) {
  auto store = OpenStore();
  Fill(*store);
  HistoryQuery q;
  q.pid = 100;
  EXPECT_EQ(Find(*store, q), (V{60, 50, 10}));
  q.pid = 999;
  EXPECT_EQ(Find(*store, q), V{});
}

TEST_F(HistoryTest, FiltersByIpv4AndIpv6Cidr) {
  auto store = OpenStore();
  Fill(*store);
  HistoryQuery q;
  q.remote_cidr = "10.0.0.0/8";
  EXPECT_EQ(Find(*store, q), (V{60, 40, 20}));
  q.remote_cidr = "10.1.2.3";
  EXPECT_EQ(Find(*store, q), (V{20}));
  q.remote_cidr = "10.1.2.3/32";
  EXPECT_EQ(Find(*store, q), (V{20}));
  q.remote_cidr = "10.128.0.0/9";
  EXPECT_EQ(Find(*store, q), (V{40}));
  q.remote_cidr = "::ffff:10.0.0.0/104";  // the same range, v4-mapped
  EXPECT_EQ(Find(*store, q), (V{60, 40, 20}));
  q.remote_cidr = "0.0.0.0/0";  // every IPv4 remote, no IPv6
  EXPECT_EQ(Find(*store, q), (V{60, 50, 40, 20, 10}));
  q.remote_cidr = "2001:db8::/32";
  EXPECT_EQ(Find(*store, q), (V{30}));
  q.remote_cidr = "::/0";
  EXPECT_EQ(Find(*store, q), (V{60, 50, 40, 30, 20, 10}));
  for (const char* bad : {"10.0.0.0/33", "fd00::/129", "10.0.0.0/", "nonsense", "10.0.0/8",
                          "10.0.0.0/-1", "10.0.0.0/+8", "", "fe80::1%eth0/64"}) {
    q.remote_cidr = bad;
    EXPECT_EQ(store->Search(q).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST_F(HistoryTest, FiltersByLocalOrRemotePort) {
  auto store = OpenStore();
  Fill(*store);
  HistoryQuery q;
  q.port = 443;  // remote 443 at 10, local 443 at 50
  EXPECT_EQ(Find(*store, q), (V{50, 10}));
  q.port = 53;
  EXPECT_EQ(Find(*store, q), (V{30}));
  q.port = 4444;
  EXPECT_EQ(Find(*store, q), (V{60}));
}

TEST_F(HistoryTest, FiltersByTimeAlertsAndLimit) {
  auto store = OpenStore();
  Fill(*store);
  HistoryQuery q;
  q.since = kBase + absl::Seconds(20);  // inclusive
  q.until = kBase + absl::Seconds(50);  // exclusive
  EXPECT_EQ(Find(*store, q), (V{40, 30, 20}));
  q = {};
  q.alerts_only = true;
  absl::StatusOr<std::vector<v1::Envelope>> alerts = store->Search(q);
  ASSERT_TRUE(alerts.ok());
  ASSERT_EQ(alerts->size(), 1u);
  EXPECT_EQ(alerts->front().alert().rule(), "new_behavior");
  q = {};
  q.limit = 2;
  EXPECT_EQ(Find(*store, q), (V{60, 50}));
  q.limit = 0;  // no limit
  EXPECT_EQ(Find(*store, q).size(), 6u);
  q = {};  // all together
  q.exe = "/usr/bin/curl";
  q.pid = 100;
  q.port = 443;
  q.remote_cidr = "192.168.0.0/16";
  q.since = kBase;
  EXPECT_EQ(Find(*store, q), (V{50}));
}

TEST_F(HistoryTest, EnvelopeRoundTripsByteForByte) {
  auto store = OpenStore();
  v1::Envelope e = Net(1, 42, "/tmp/\xEF\xBF\xBD", 1, "fd00::2", 2);
  v1::Process* p = e.mutable_network()->mutable_process();
  p->add_argv("echo \x1b[2J\x7f\r\n");
  p->add_argv("\xEF\xBF\xBD");
  p->set_exe_raw(std::string("/tmp/\xff", 6));
  p->add_argv_raw("/tmp/x");
  p->add_argv_raw("echo \x1b[2J\x7f\r\n");
  p->add_argv_raw(std::string("\xff\xfe\x00\xc0", 4));
  e.set_seq(99);
  e.set_boottime_ns(123456789);
  ASSERT_TRUE(store->Append({e}).ok());
  absl::StatusOr<std::vector<v1::Envelope>> got = store->Search({});
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), 1u);
  EXPECT_TRUE(MessageDifferencer::Equals(got->front(), e));
  EXPECT_EQ(got->front().network().process().argv_raw(2), std::string("\xff\xfe\x00\xc0", 4));
}

TEST_F(HistoryTest, RetentionByAgeRemovesOldRowsAndCounts) {
  HistoryOptions o;
  o.max_age = absl::Hours(24 * 7);
  auto store = OpenStore(o);
  const int64_t day = 86400;
  ASSERT_TRUE(store
                  ->Append({Net(-10 * day, 1, "/a", 1, "1.1.1.1", 1),
                            Net(-8 * day, 2, "/a", 1, "1.1.1.1", 1),
                            Net(-1 * day, 3, "/a", 1, "1.1.1.1", 1)})
                  .ok());
  absl::StatusOr<RetentionResult> r = store->Enforce(kBase);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->removed_by_age, 2u);
  EXPECT_EQ(r->removed_by_size, 0u);
  EXPECT_EQ(store->evicted_total(), 2u);
  EXPECT_EQ(Find(*store, {}), (V{-day}));
  r = store->Enforce(kBase);  // nothing more
  EXPECT_EQ(r->removed_by_age + r->removed_by_size, 0u);
}

TEST_F(HistoryTest, RetentionBySizeDropsOldestAndShrinksTheFile) {
  HistoryOptions o;
  o.max_age = absl::InfiniteDuration();
  o.max_bytes = 1 << 20;
  auto store = OpenStore(o);
  constexpr int kRows = 20000;
  std::vector<v1::Envelope> batch;
  for (int i = 0; i < kRows; ++i) {
    batch.push_back(Net(i, 1000 + i % 5000, absl::StrCat("/usr/bin/tool", i % 50),
                        30000 + i % 20000, absl::StrCat("10.0.", i % 256, ".", i % 200), 443));
    batch.back().mutable_network()->mutable_process()->add_argv(std::string(150, 'x'));
    if (batch.size() == 1000) {
      ASSERT_TRUE(store->Append(batch).ok());
      batch.clear();
    }
  }
  // Pages still in the WAL are not in the file yet: fold them in first.
  ASSERT_EQ(Raw(path_, "PRAGMA wal_checkpoint(TRUNCATE)"), 0);  // 0: not busy
  const uintmax_t size_before = fs::file_size(path_);
  EXPECT_GT(size_before, 4 * o.max_bytes);
  absl::StatusOr<RetentionResult> r = store->Enforce(kBase + absl::Hours(1));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->removed_by_age, 0u);
  EXPECT_GT(r->removed_by_size, 0u);
  EXPECT_GT(r->bytes_before, o.max_bytes);
  EXPECT_LE(r->bytes_after, o.max_bytes);
  EXPECT_EQ(store->evicted_total(), r->removed_by_size);
  const uint64_t left = *store->Count();
  EXPECT_EQ(left + r->removed_by_size, static_cast<uint64_t>(kRows));
  // The oldest went: what is left is exactly the newest `left` rows.
  HistoryQuery q;
  q.limit = 0;
  std::vector<int64_t> times = Find(*store, q);
  ASSERT_EQ(times.size(), left);
  EXPECT_EQ(times.front(), kRows - 1);
  EXPECT_EQ(times.back(), static_cast<int64_t>(kRows - left));
  const uintmax_t size_after = fs::file_size(path_);
  EXPECT_LT(size_after, size_before);
  EXPECT_LE(size_after, o.max_bytes + (64u << 10));  // freed pages went back to the disk
  printf("[ size ] %d rows, %ju -> %ju bytes, %ju rows removed, %ju left\n", kRows, size_before,
         size_after, static_cast<uintmax_t>(r->removed_by_size), static_cast<uintmax_t>(left));
}

TEST_F(HistoryTest, ReopenKeepsDataAndAutoVacuum) {
  {
    auto store = OpenStore();
    Fill(*store);
  }
  auto store = OpenStore();
  EXPECT_EQ(*store->Count(), 6u);
  HistoryOptions ro;
  ro.read_only = true;
  auto reader = OpenStore(ro);
  EXPECT_EQ(Find(*reader, {}), (V{60, 50, 40, 30, 20, 10}));
  EXPECT_EQ(reader->Append({Net(1, 1, "/a", 1, "1.1.1.1", 1)}).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Raw(path_, "PRAGMA auto_vacuum"), 2);  // INCREMENTAL
}

TEST_F(HistoryTest, RefusesNewerSchemaAndForeignFiles) {
  OpenStore().reset();
  ASSERT_EQ(Raw(path_, "UPDATE schema_version SET version = 99"), 0);
  for (bool ro : {false, true}) {
    HistoryOptions o;
    o.path = path_;
    o.read_only = ro;
    absl::StatusOr<std::unique_ptr<HistoryStore>> s = HistoryStore::Open(o);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_TRUE(absl::StrContains(s.status().message(), "schema version 99, newer")) << s.status();
  }
  const std::string other = dir_ + "/other.db";
  ASSERT_EQ(Raw(other, "CREATE TABLE t(x)"), 0);
  HistoryOptions o;
  o.path = other;
  EXPECT_EQ(HistoryStore::Open(o).status().code(), absl::StatusCode::kFailedPrecondition);
  // An empty file is version 0: the reader waits for the agent to create it.
  o.path = dir_ + "/empty.db";
  fclose(fopen(o.path.c_str(), "w"));
  o.read_only = true;
  EXPECT_EQ(HistoryStore::Open(o).status().code(), absl::StatusCode::kFailedPrecondition);
  o.read_only = false;
  EXPECT_TRUE(HistoryStore::Open(o).ok());
  o.read_only = true;
  EXPECT_TRUE(HistoryStore::Open(o).ok());
  o.path = dir_ + "/missing.db";
  EXPECT_EQ(HistoryStore::Open(o).status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(fs::exists(o.path));  // read-only never creates
}

TEST_F(HistoryTest, ReaderSeesCommittedBatchesWhileWriterWrites) {
  auto writer = OpenStore();
  Fill(*writer);  // the file exists and has the schema before the reader opens
  HistoryOptions ro;
  ro.read_only = true;
  auto reader = OpenStore(ro);
  std::atomic<bool> done{false};
  std::thread t([&] {
    for (int b = 0; b < 50; ++b) {
      std::vector<v1::Envelope> batch;
      for (int i = 0; i < 200; ++i)
        batch.push_back(Net(100 + b * 200 + i, 1, "/w", 1, "1.1.1.1", 1));
      ASSERT_TRUE(writer->Append(batch).ok());
      if (b % 10 == 0) {
        ASSERT_TRUE(writer->Enforce(kBase).ok());
      }
    }
    done = true;
  });
  size_t last = 0;
  int reads = 0;
  HistoryQuery q;
  q.limit = 0;
  while (!done || reads == 0) {
    absl::StatusOr<std::vector<v1::Envelope>> got = reader->Search(q);
    ASSERT_TRUE(got.ok()) << got.status();
    // Whole batches only (one transaction each), never going backwards.
    EXPECT_EQ((got->size() - 6) % 200, 0u);
    EXPECT_GE(got->size(), last);
    last = got->size();
    ++reads;
  }
  t.join();
  EXPECT_EQ(reader->Search(q)->size(), 6u + 50 * 200);
  printf("[ wal  ] %d consistent reads during 50 writes\n", reads);
}

TEST_F(HistoryTest, AppendThroughput) {
  auto store = OpenStore();
  constexpr int kBatches = 100;
  std::vector<v1::Envelope> batch;
  for (int i = 0; i < 1000; ++i) {
    batch.push_back(Net(i, 1000 + i, absl::StrCat("/usr/bin/tool", i % 50), 30000 + i,
                        absl::StrCat("10.0.", i % 256, ".", i % 200), 443));
    batch.back().mutable_network()->mutable_process()->add_argv("--some-flag=value");
  }
  double secs = 0;
  for (int b = 0; b < kBatches; ++b) {
    // Time moves on between batches, as it does on a host.
    for (int i = 0; i < 1000; ++i) batch[i].mutable_time()->set_seconds(b * 1000 + i);
    const auto start = std::chrono::steady_clock::now();
    ASSERT_TRUE(store->Append(batch).ok());
    secs += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  printf("[ perf ] Append: %.0f rows/s (%d batches of 1000)\n", kBatches * 1000 / secs, kBatches);
}

class HistoryCliTest : public HistoryTest {
 protected:
  int Run(std::vector<std::string> args) {
    out_.str("");
    err_.str("");
    return HistoryMain(args, out_, err_);
  }
  std::vector<std::string> OutLines() const {
    return absl::StrSplit(out_.str(), '\n', absl::SkipEmpty());
  }
  std::ostringstream out_;
  std::ostringstream err_;
};

TEST_F(HistoryCliTest, TableEscapesControlCharacters) {
  {
    auto store = OpenStore();
    Fill(*store);
    v1::Envelope e = Net(70, 666, "/tmp/\x1b]0;evil\x07", 1234, "fd00::9", 443);
    e.mutable_network()->mutable_process()->add_argv(
        "echo \x1b[2J\xC2\x9B"
        "31m\r\n");
    ASSERT_TRUE(store->Append({e}).ok());
  }
  ASSERT_EQ(Run({"--state-dir", dir_}), 0) << err_.str();
  const std::string out = out_.str();
  for (char c : out) EXPECT_TRUE(c == '\n' || static_cast<unsigned char>(c) >= 0x20) << out;
  EXPECT_FALSE(absl::StrContains(out, "\xC2\x9B"));
  EXPECT_TRUE(absl::StrContains(out, "\\x1b[2J")) << out;
  std::vector<std::string> lines = absl::StrSplit(out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 8u);  // header + 7 rows
  EXPECT_TRUE(absl::StartsWith(lines[0], "TIME")) << out;
  EXPECT_TRUE(absl::StrContains(lines[1], "[fd00::9]:443")) << lines[1];
  EXPECT_TRUE(absl::StrContains(lines[2], "new_behavior [high]: curl talked")) << lines[2];
  EXPECT_TRUE(absl::StrContains(lines[3], "outbound established")) << lines[3];
  // Aligned: every row's PID starts under the header's.
  const size_t pid_col = lines[0].find("PID");
  EXPECT_EQ(lines[1].substr(pid_col, 4), "666 ");
  EXPECT_EQ(lines[3].substr(pid_col, 4), "100 ");
}

TEST_F(HistoryCliTest, JsonOneEnvelopePerLineAndFilters) {
  {
    auto store = OpenStore();
    Fill(*store);
  }
  ASSERT_EQ(Run({"--state-dir=" + dir_, "--json", "--exe", "/usr/bin/curl", "--port=443"}), 0);
  std::vector<std::string> lines = absl::StrSplit(out_.str(), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << out_.str();
  v1::Envelope e;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(lines[0], &e).ok()) << lines[0];
  EXPECT_EQ(e.network().local_port(), 443u);
  ASSERT_EQ(Run({"--state-dir=" + dir_, "--json", "--alerts", "--remote", "10.0.0.0/8"}), 0);
  EXPECT_TRUE(absl::StrContains(out_.str(), "\"rule\":\"new_behavior\"")) << out_.str();
  ASSERT_EQ(Run({"--state-dir=" + dir_, "--pid=100", "--limit=1", "--json"}), 0);
  EXPECT_EQ(OutLines().size(), 1u);
  // The fixture's events are from 2023: an RFC 3339 bound and durations ago.
  ASSERT_EQ(Run({"--state-dir=" + dir_, "--since", "2023-11-14T22:13:40Z",
                 "--until=2023-11-14T23:14:00+01:00"}),
            0);
  EXPECT_EQ(OutLines().size(), 3u) << out_.str();  // header + 2
  ASSERT_EQ(Run({"--state-dir=" + dir_, "--since", "7d"}), 0);
  EXPECT_EQ(out_.str(), "");
  EXPECT_EQ(err_.str(), "(no matching events)\n");
  ASSERT_EQ(Run({"--state-dir=" + dir_, "--until=1d12h", "--since=36500d"}), 0);
  EXPECT_FALSE(out_.str().empty());
}

TEST_F(HistoryCliTest, BadUsageExits2AndMissingStoreExits1) {
  { OpenStore(); }
  for (std::vector<std::string> bad :
       std::vector<std::vector<std::string>>{{"--bogus"},
                                             {"extra"},
                                             {"--pid=abc"},
                                             {"--pid=-1"},
                                             {"--port=70000"},
                                             {"--remote=10.0.0.0/33"},
                                             {"--since"},
                                             {"--since=yesterday"},
                                             {"--since=-2h"},
                                             {"--json=maybe"},
                                             {"--since=1h", "--until=2h"},
                                             {"--limit", "x"}}) {
    bad.push_back("--state-dir=" + dir_);
    EXPECT_EQ(Run(bad), 2) << bad[0];
    EXPECT_TRUE(absl::StrContains(err_.str(), "--help")) << err_.str();
  }
  EXPECT_EQ(Run({"--help"}), 0);
  EXPECT_TRUE(absl::StrContains(out_.str(), "Usage: sockwatch-agent history")) << out_.str();
  EXPECT_EQ(Run({"--state-dir", dir_ + "/nope"}), 1);
  EXPECT_TRUE(absl::StrContains(err_.str(), dir_ + "/nope/history.db")) << err_.str();
  EXPECT_TRUE(absl::StrContains(err_.str(), "agent writes")) << err_.str();
  EXPECT_EQ(Run({"--state-dir", dir_}), 0);  // exists but empty
  EXPECT_EQ(err_.str(), "(no matching events)\n");
}

}  // namespace
}  // namespace sockwatch
