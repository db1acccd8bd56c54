// The baseline and the local detectors end to end: a baseline learned from
// one client, then an agent restarted on the same state raising the right
// alert, with the right process and ancestry, for each kind of novelty —
// and none for what it already knows.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/integration/harness.h"

namespace sockwatch::testing {
namespace {

using v1::Envelope;

std::string SelfExe() {
  char buf[PATH_MAX] = {};
  return readlink("/proc/self/exe", buf, sizeof(buf) - 1) > 0 ? buf : "";
}

AgentProcess::Pred AlertFor(pid_t pid) {
  return [=](const Envelope& e) {
    return e.has_alert() && e.alert().process().pid() == static_cast<uint32_t>(pid);
  };
}

class DetectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(net_.ok());
    char tmpl[] = "/tmp/sw_detect_XXXXXX";
    state_ = mkdtemp(tmpl);
    char t2[] = "/root/sw_unseen_XXXXXX";  // neither hidden nor world-writable
    plain_dir_ = mkdtemp(t2);
    // The known client runs from here too: the build tree itself may sit under
    // /tmp (world-writable), which would make every peer a suspicious image.
    peer_ = Copy(plain_dir_, "sw_client");
  }
  void TearDown() override {
    std::filesystem::remove_all(state_);
    std::filesystem::remove_all(plain_dir_);
    if (!hidden_dir_.empty()) std::filesystem::remove_all(hidden_dir_);
  }

  // A refused connect is a network act too: no server needed.
  std::unique_ptr<Child> Connect(const std::string& exe, int port) {
    auto c = Child::Spawn(net_.client_ns, {exe, "tcp-client", net_.server_v4, std::to_string(port)});
    c->Wait();
    return c;
  }

  std::unique_ptr<AgentProcess> Agent(const std::string& learning, std::vector<std::string> more = {}) {
    // The snapshot puts the test itself (the peers' parent) in the process table.
    std::vector<std::string> flags = {"--state_dir=" + state_,
                                      "--learning_period=" + learning};
    flags.insert(flags.end(), more.begin(), more.end());
    return AgentProcess::Start(flags);
  }

  // Learns the test peer connecting to port 8080, then stops (writing the baseline).
  void LearnBaseline() {
    auto agent = Agent("1h");
    ASSERT_NE(agent, nullptr);
    auto learning = agent->WaitFor([](const Envelope& e) { return e.has_learning(); });
    ASSERT_TRUE(learning.has_value());
    EXPECT_TRUE(learning->learning().learning());
    auto c = Connect(peer_, 8080);
    ASSERT_TRUE(agent->WaitFor(NetEvent(v1::NETWORK_KIND_CONNECT, c->pid)).has_value());
    EXPECT_EQ(agent->Stop(), 0);
    EXPECT_TRUE(agent->All([](const Envelope& e) {
                       return e.has_alert() && e.alert().rule() != "suspicious_image_network";
                     }).empty())
        << "learning raised alerts";
  }

  std::string Copy(const std::string& dir, const std::string& name) {
    const std::string to = dir + "/" + name;
    std::filesystem::copy_file(TestPeerPath(), to);
    chmod(to.c_str(), 0755);
    return to;
  }

  // The alert's process is this child, and its ancestry reaches us and init.
  static void ExpectProcessAndAncestry(const v1::Alert& a, const Child& c, const std::string& exe) {
    EXPECT_EQ(a.process().pid(), static_cast<uint32_t>(c.pid));
    EXPECT_EQ(a.process().exe(), exe);
    ASSERT_EQ(a.process().argv_size(), static_cast<int>(c.argv.size()));
    EXPECT_EQ(a.process().argv(1), c.argv[1]);
    ASSERT_GE(a.ancestors_size(), 2);
    EXPECT_EQ(a.ancestors(0).pid(), static_cast<uint32_t>(getpid()));
    EXPECT_EQ(a.ancestors(0).exe(), SelfExe());
    EXPECT_GT(a.ancestors(0).argv_size(), 0);
    EXPECT_EQ(a.ancestors(a.ancestors_size() - 1).pid(), 1u);
    EXPECT_FALSE(a.summary().empty());
    EXPECT_FALSE(a.id().empty());
    EXPECT_EQ(a.network().protocol(), v1::PROTOCOL_TCP);
    EXPECT_EQ(a.network().remote_ip(), "10.231.0.2");
  }

  NetPair net_;
  std::string state_, plain_dir_, hidden_dir_, peer_;
};

TEST_F(DetectionTest, KnownBehaviourIsQuietAndNoveltiesRaiseTheRightAlert) {
  LearnBaseline();
  auto agent = Agent("0s");  // restarted on the same state; learning over
  ASSERT_NE(agent, nullptr);
  auto status = agent->WaitFor([](const Envelope& e) { return e.has_learning(); });
  ASSERT_TRUE(status.has_value());
  EXPECT_FALSE(status->learning().learning());
  EXPECT_GE(status->learning().images(), 1u);

  // 1. What the baseline knows raises nothing, after a restart.
  auto known = Connect(peer_, 8080);
  ASSERT_TRUE(agent->WaitFor(NetEvent(v1::NETWORK_KIND_CONNECT, known->pid)).has_value());

  // 2. A known binary on a new port.
  auto new_port = Connect(peer_, 9090);
  auto a = agent->WaitFor(AlertFor(new_port->pid));
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->alert().rule(), "new_behavior");
  EXPECT_EQ(a->alert().severity(), v1::SEVERITY_LOW);
  ExpectProcessAndAncestry(a->alert(), *new_port, peer_);
  EXPECT_EQ(a->alert().network().remote_port(), 9090u);
  EXPECT_GE(a->alert().baseline().known_behaviors(), 1u);
  EXPECT_TRUE(absl::StrContains(a->alert().summary(), "port 9090")) << a->alert().summary();

  // 3. A binary never seen before (a copy under a new, ordinary path).
  const std::string unseen = Copy(plain_dir_, "uploader");
  auto fresh = Connect(unseen, 8080);
  auto f = agent->WaitFor(AlertFor(fresh->pid));
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->alert().rule(), "first_network_use");
  ExpectProcessAndAncestry(f->alert(), *fresh, unseen);
  EXPECT_EQ(f->alert().image().suspicious_size(), 0);

  // 4. A copy of a known binary in a hidden, world-writable directory.
  char t[] = "/tmp/.sw_hidden_XXXXXX";
  hidden_dir_ = mkdtemp(t);
  chmod(hidden_dir_.c_str(), 01777);
  const std::string hidden = Copy(hidden_dir_, "kworker");
  auto sneaky = Connect(hidden, 8080);
  auto s = agent->WaitFor(AlertFor(sneaky->pid));
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->alert().rule(), "suspicious_image_network");
  EXPECT_EQ(s->alert().severity(), v1::SEVERITY_HIGH);
  ExpectProcessAndAncestry(s->alert(), *sneaky, hidden);
  std::vector<std::string> marks(s->alert().image().suspicious().begin(), s->alert().image().suspicious().end());
  EXPECT_NE(std::find(marks.begin(), marks.end(), "hidden_dir"), marks.end());
  EXPECT_NE(std::find(marks.begin(), marks.end(), "world_writable_dir"), marks.end());

  // 5. A script run by an interpreter is its own image.
  const std::string script = plain_dir_ + "/beacon.sh";
  std::ofstream(script) << "exec 3<>/dev/tcp/" << net_.server_v4 << "/8080 || true\n";
  auto sh = Child::Spawn(net_.client_ns, {"/bin/bash", script});
  sh->Wait();
  auto i = agent->WaitFor(AlertFor(sh->pid));
  ASSERT_TRUE(i.has_value());
  EXPECT_EQ(i->alert().rule(), "first_network_use");
  EXPECT_EQ(i->alert().image().interpreter(), "bash");
  EXPECT_EQ(i->alert().image().script(), script);
  EXPECT_EQ(i->alert().image().key(), i->alert().image().exe() + "|" + script);
  EXPECT_EQ(i->alert().process().argv(1), script);

  // Nothing at all about the known behaviour, now that everything above came in.
  EXPECT_TRUE(agent->All(AlertFor(known->pid)).empty());
  EXPECT_EQ(agent->Stop(), 0);

  // The responder's view: the local history has the event and the alert.
  const std::string out = Capture(AgentPath() + " history --state-dir=" + state_ + " --port=9090 --json");
  EXPECT_TRUE(absl::StrContains(out, "\"rule\":\"new_behavior\"")) << out;
  EXPECT_TRUE(absl::StrContains(out, "\"kind\":\"NETWORK_KIND_CONNECT\"")) << out;
  EXPECT_TRUE(absl::StrContains(out, absl::StrCat("\"pid\":", new_port->pid))) << out;
}

TEST_F(DetectionTest, ExceptionsSilenceReviewedBehaviourAndBadReloadsKeepTheOldSet) {
  LearnBaseline();
  const std::string file = state_ + "/exceptions.yaml";
  const std::string allowed = Copy(plain_dir_, "backup-agent");
  std::ofstream(file) << "exceptions:\n"
                         "  - id: backup\n"
                         "    owner: ops@example.com\n"
                         "    reason: nightly backup to the storage host\n"
                         "    expires: 2099-01-01\n"
                         "    match:\n"
                         "      exe: " << allowed << "\n"
                         "      port: [8080, 8081]\n";
  auto agent = Agent("0s", {"--exceptions=" + file});
  ASSERT_NE(agent, nullptr);
  auto ok = Connect(allowed, 8080);
  ASSERT_TRUE(agent->WaitFor(NetEvent(v1::NETWORK_KIND_CONNECT, ok->pid)).has_value());

  // A bad file on SIGHUP is refused with its line; the old set stays.
  std::ofstream(file) << "exceptions:\n  - id: broken\n    owner: x\n    reason: y\n    expires: not-a-date\n"
                         "    match: {exe: /x}\n";
  ASSERT_TRUE(agent->WaitFor([](const Envelope& e) { return e.has_learning(); }).has_value());
  testing::Run("pkill -HUP -f -- '--exceptions=" + file + "'");
  absl::SleepFor(absl::Milliseconds(500));
  auto again = Connect(allowed, 8081);  // new behaviour, covered by the old set only
  ASSERT_TRUE(agent->WaitFor(NetEvent(v1::NETWORK_KIND_CONNECT, again->pid)).has_value());
  // Not covered by the exception: another port.
  auto other = Connect(allowed, 9999);
  auto a = agent->WaitFor(AlertFor(other->pid));
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->alert().rule(), "new_behavior");
  EXPECT_EQ(agent->Stop(), 0);
  EXPECT_TRUE(agent->All(AlertFor(ok->pid)).empty());
  EXPECT_TRUE(agent->All(AlertFor(again->pid)).empty());
  const std::string err = agent->Stderr();
  EXPECT_TRUE(absl::StrContains(err, "previous set stays")) << err;
  EXPECT_TRUE(absl::StrContains(err, ":5")) << err;  // the line of the bad date
}

}  // namespace
}  // namespace sockwatch::testing
