// Shared fixtures of the collector store tests (store_test.cc,
// store_query_test.cc): envelopes of every kind, a second raw connection to
// the file, and a fixture that opens a store in a fresh directory.
#ifndef SOCKWATCH_TESTS_UNIT_STORE_TEST_UTIL_H_
#define SOCKWATCH_TESTS_UNIT_STORE_TEST_UTIL_H_

#include <sqlite3.h>
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "collector/store.h"
#include "gtest/gtest.h"

namespace sockwatch::store_test {

namespace fs = std::filesystem;

inline const absl::Time kBase = absl::FromUnixSeconds(1'700'000'000);

inline void SetTime(v1::Envelope& e, int64_t sec) {
  e.mutable_time()->set_seconds(absl::ToUnixSeconds(kBase) + sec);
  e.mutable_time()->set_nanos(250'000'000);
}

inline v1::Envelope Network(const std::string& host, const std::string& instance, uint64_t seq,
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
inline v1::Envelope FullNetwork() {
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

inline v1::Envelope FullAlert() {
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

inline v1::Envelope Loss(const std::string& host, const std::string& instance, uint64_t seq,
                         int64_t sec, uint64_t count) {
  v1::Envelope e;
  e.set_host_id(host);
  e.set_agent_instance(instance);
  e.set_seq(seq);
  SetTime(e, sec);
  e.mutable_loss()->set_reason("ringbuf_full");
  e.mutable_loss()->set_count(count);
  return e;
}

inline v1::Envelope Exec(const std::string& host, const std::string& instance, uint64_t seq,
                         int64_t sec) {
  v1::Envelope e;
  e.set_host_id(host);
  e.set_agent_instance(instance);
  e.set_seq(seq);
  SetTime(e, sec);
  e.mutable_exec()->mutable_process()->set_pid(900 + static_cast<uint32_t>(seq));
  e.mutable_exec()->mutable_process()->set_exe("/bin/sh");
  return e;
}

inline std::vector<const v1::Envelope*> Ptrs(const std::vector<v1::Envelope>& v) {
  std::vector<const v1::Envelope*> out;
  for (const v1::Envelope& e : v) out.push_back(&e);
  return out;
}

// "host/instance/seq" of each envelope, in order: what a reader of the
// results would look at first.
inline std::vector<std::string> Keys(const std::vector<v1::Envelope>& v) {
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

}  // namespace sockwatch::store_test

#endif  // SOCKWATCH_TESTS_UNIT_STORE_TEST_UTIL_H_
