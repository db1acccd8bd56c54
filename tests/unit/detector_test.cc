#include "agent/detector.h"

#include "gtest/gtest.h"

namespace sockwatch {
namespace {

constexpr uint64_t kSec = 1'000'000'000;

class DetectorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    BaselineOptions o;
    o.learning_period = absl::ZeroDuration();
    baseline_ = *Baseline::Open(o);
    // init(1) <- bash(100) <- the actors
    table_.Upsert(Proc(1, 1, 0, "/sbin/init", {"/sbin/init"}));
    table_.Upsert(Proc(100, 50, 1, "/usr/bin/bash", {"bash", "-l"}));
    Make();
  }
  void Make(DetectorOptions opts = {}) {
    opts.id_prefix = "test";
    det_ = std::make_unique<Detector>(
        baseline_.get(), &table_, &clock_,
        [](const v1::Process& p) {
          v1::ImageIdentity id;
          id.set_exe(p.exe());
          id.set_key(p.exe());
          id.set_sha256("sha:" + p.exe());
          if (p.exe().find("/.") != std::string::npos) id.add_suspicious("hidden_dir");
          return id;
        },
        std::vector<Subnet>{{{10, 0, 0, 0}, 24}}, opts);
  }
  static ProcInfo Proc(uint32_t pid, uint64_t start_s, uint32_t ppid, std::string exe,
                       std::vector<std::string> argv) {
    ProcInfo p;
    p.pid = pid;
    p.start_ns = start_s * kSec;
    p.ppid = ppid;
    p.parent_start_ns = ppid == 1 ? kSec : 50 * kSec;
    p.exe = std::move(exe);
    p.argv = std::move(argv);
    return p;
  }
  v1::Envelope Net(const std::string& exe, v1::NetworkKind kind, uint32_t port, int64_t t,
                   const std::string& remote = "93.184.216.34") {
    v1::Envelope e;
    e.mutable_time()->set_seconds(t);
    v1::NetworkEvent* n = e.mutable_network();
    n->set_kind(kind);
    n->set_protocol(v1::PROTOCOL_TCP);
    n->set_direction(kind == v1::NETWORK_KIND_CONNECT ? v1::DIRECTION_OUTBOUND : v1::DIRECTION_INBOUND);
    n->set_local_ip("10.0.0.5");
    if (kind == v1::NETWORK_KIND_LISTEN) {
      n->set_local_port(port);
    } else {
      n->set_local_port(40000);
      n->set_remote_ip(remote);
      n->set_remote_port(port);
    }
    v1::Process* p = n->mutable_process();
    p->set_pid(200);
    p->set_ppid(100);
    p->set_parent_start_boottime_ns(50 * kSec);
    p->set_exe(exe);
    p->add_argv(exe);
    p->add_argv("--x");
    return e;
  }
  std::vector<v1::Alert> Feed(const v1::Envelope& e) {
    std::vector<v1::Alert> out;
    det_->Observe(e, &out);
    return out;
  }

  std::unique_ptr<Baseline> baseline_;
  ProcessTable table_;
  BootClock clock_{0};
  std::unique_ptr<Detector> det_;
};

TEST_F(DetectorTest, FirstNetworkUseWithProcessAncestryAndEvidence) {
  auto alerts = Feed(Net("/usr/bin/curl", v1::NETWORK_KIND_CONNECT, 443, 1000));
  ASSERT_EQ(alerts.size(), 1u);
  const v1::Alert& a = alerts[0];
  EXPECT_EQ(a.rule(), "first_network_use");
  EXPECT_EQ(a.severity(), v1::SEVERITY_MEDIUM);
  EXPECT_EQ(a.summary(),
            "/usr/bin/curl used the network for the first time: outbound tcp to port 443 (public address) "
            "93.184.216.34:443");
  EXPECT_EQ(a.process().exe(), "/usr/bin/curl");
  EXPECT_EQ(a.process().argv(1), "--x");
  EXPECT_EQ(a.image().sha256(), "sha:/usr/bin/curl");
  ASSERT_EQ(a.ancestors_size(), 2);
  EXPECT_EQ(a.ancestors(0).exe(), "/usr/bin/bash");
  EXPECT_EQ(a.ancestors(0).argv(1), "-l");
  EXPECT_EQ(a.ancestors(1).exe(), "/sbin/init");
  EXPECT_EQ(a.network().remote_port(), 443u);
  EXPECT_EQ(a.baseline().known_behaviors(), 0u);
  EXPECT_EQ(a.id(), "test-1");
  EXPECT_EQ(a.occurrences(), 1u);
  EXPECT_FALSE(a.maybe_incomplete());
  // Known behaviour again: nothing.
  EXPECT_TRUE(Feed(Net("/usr/bin/curl", v1::NETWORK_KIND_CONNECT, 443, 1001)).empty());
}

TEST_F(DetectorTest, NewBehaviorAndNewListener) {
  Feed(Net("/usr/bin/python3", v1::NETWORK_KIND_CONNECT, 443, 1000));
  auto nb = Feed(Net("/usr/bin/python3", v1::NETWORK_KIND_CONNECT, 4444, 1001));
  ASSERT_EQ(nb.size(), 1u);
  EXPECT_EQ(nb[0].rule(), "new_behavior");
  EXPECT_EQ(nb[0].baseline().known_behaviors(), 1u);
  EXPECT_EQ(nb[0].baseline().new_facts(0), "outbound tcp to port 4444 (public address)");
  // Same port, a host on our own subnet instead of the internet: new too.
  auto sub = Feed(Net("/usr/bin/python3", v1::NETWORK_KIND_CONNECT, 443, 1002, "10.0.0.9"));
  ASSERT_EQ(sub.size(), 1u);
  EXPECT_EQ(sub[0].rule(), "new_behavior");
  auto nl = Feed(Net("/usr/bin/python3", v1::NETWORK_KIND_LISTEN, 8080, 1003));
  ASSERT_EQ(nl.size(), 1u);
  EXPECT_EQ(nl[0].rule(), "new_listener");
  EXPECT_TRUE(Feed(Net("/usr/bin/python3", v1::NETWORK_KIND_LISTEN, 8080, 1004)).empty());
}

TEST_F(DetectorTest, LearningRaisesOnlySuspicious) {
  BaselineOptions o;
  o.learning_period = absl::Hours(24);
  baseline_ = *Baseline::Open(o);
  Make();
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  EXPECT_TRUE(Feed(Net("/usr/bin/curl", v1::NETWORK_KIND_CONNECT, 443, now)).empty());
  auto s = Feed(Net("/home/u/.cache/x", v1::NETWORK_KIND_CONNECT, 4444, now));
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].rule(), "suspicious_image_network");
  EXPECT_EQ(s[0].severity(), v1::SEVERITY_HIGH);
  EXPECT_TRUE(s[0].baseline().learning());
}

TEST_F(DetectorTest, RepeatsAreCountedAndSummarized) {
  DetectorOptions o;
  o.dedup_window = absl::Seconds(60);
  Make(o);
  ASSERT_EQ(Feed(Net("/tmp/.x/implant", v1::NETWORK_KIND_CONNECT, 4444, 1000)).size(), 1u);
  for (int i = 1; i <= 4; ++i)
    EXPECT_TRUE(Feed(Net("/tmp/.x/implant", v1::NETWORK_KIND_CONNECT, 4444, 1000 + i)).empty());
  EXPECT_EQ(det_->deduplicated(), 4u);
  std::vector<v1::Alert> out;
  det_->Tick(absl::FromUnixSeconds(1030), &out);
  EXPECT_TRUE(out.empty());  // window still open
  det_->Tick(absl::FromUnixSeconds(1061), &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].repeat_summary());
  EXPECT_EQ(out[0].occurrences(), 5u);
  EXPECT_EQ(out[0].id(), "test-1");
  // After the window, it is reported again.
  EXPECT_EQ(Feed(Net("/tmp/.x/implant", v1::NETWORK_KIND_CONNECT, 4444, 1100)).size(), 1u);
}

TEST_F(DetectorTest, LossNearbyMarksAlertsIncomplete) {
  det_->NoteLoss(absl::FromUnixSeconds(990), absl::FromUnixSeconds(998));
  auto a = Feed(Net("/usr/bin/wget", v1::NETWORK_KIND_CONNECT, 80, 1000));
  ASSERT_EQ(a.size(), 1u);
  EXPECT_TRUE(a[0].maybe_incomplete());
  auto b = Feed(Net("/usr/bin/nc", v1::NETWORK_KIND_CONNECT, 80, 2000));
  ASSERT_EQ(b.size(), 1u);
  EXPECT_FALSE(b[0].maybe_incomplete());
}

TEST_F(DetectorTest, ExceptionsSuppressButBaselineStillLearns) {
  det_->set_exception_hook([](const v1::Alert& a) { return a.process().exe() == "/usr/bin/backup"; });
  EXPECT_TRUE(Feed(Net("/usr/bin/backup", v1::NETWORK_KIND_CONNECT, 443, 1000)).empty());
  EXPECT_EQ(det_->excepted(), 1u);
  EXPECT_EQ(Feed(Net("/usr/bin/other", v1::NETWORK_KIND_CONNECT, 443, 1000)).size(), 1u);
}

TEST_F(DetectorTest, ExecRecordsImagesAndUnknownProcessesAreNotBlamed) {
  v1::Envelope exec;
  exec.mutable_time()->set_seconds(500);
  exec.mutable_exec()->mutable_process()->set_exe("/usr/bin/ssh");
  Feed(exec);
  auto a = Feed(Net("/usr/bin/ssh", v1::NETWORK_KIND_CONNECT, 22, 1000));
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].baseline().image_first_seen().seconds(), 500);  // seen at exec, before the network
  v1::Envelope unknown = Net("", v1::NETWORK_KIND_CONNECT, 22, 1000);
  unknown.mutable_network()->mutable_process()->set_unknown(true);
  EXPECT_TRUE(Feed(unknown).empty());
}

}  // namespace
}  // namespace sockwatch
