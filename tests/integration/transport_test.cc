// Agent -> collector, end to end with the real binaries over mTLS: every
// event the agent printed is stored exactly once, whatever fails between.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "collector/store.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "tests/integration/collector_harness.h"
#include "tests/integration/harness.h"

namespace sockwatch::testing {
namespace {

using Seqs = std::vector<uint64_t>;

class TransportTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pki_ = new TestPki({"host-e2e", "host-other"});
    net_ = new NetPair();
  }
  static void TearDownTestSuite() {
    delete net_;
    delete pki_;
  }
  void SetUp() override {
    ASSERT_TRUE(pki_->ok()) << "make-certs.sh failed";
    ASSERT_TRUE(net_->ok()) << "could not create the network namespaces";
    char tmpl[] = "/tmp/sw_transport_XXXXXX";
    dir_ = mkdtemp(tmpl);
    db_ = dir_ + "/collector.db";
    port_ = FreePort();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<CollectorProcess> StartCollector() {
    return CollectorProcess::Start(port_, db_, pki_->CollectorFlags());
  }

  std::unique_ptr<AgentProcess> StartAgent(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> flags = pki_->AgentFlags("host-e2e");
    flags.push_back(absl::StrCat("--collector=127.0.0.1:", port_));
    flags.push_back("--snapshot=false");
    flags.push_back("--detect=false");
    flags.push_back("--reconnect_max=1s");
    flags.insert(flags.end(), extra.begin(), extra.end());
    return AgentProcess::Start(flags);
  }

  // n UDP sends, each to its own port: n network events, quickly.
  void Spray(int n, int first_port = 20000) {
    auto c = Child::Spawn(net_->client_ns, {TestPeerPath(), "udp-spray", net_->server_v4,
                                             std::to_string(first_port), std::to_string(n)});
    ASSERT_EQ(c->Wait(), 0);
  }

  // (instance -> seqs) of everything an agent printed.
  static std::map<std::string, Seqs> Printed(AgentProcess& a) {
    std::map<std::string, Seqs> out;
    for (const v1::Envelope& e : a.All([](const v1::Envelope&) { return true; }))
      out[e.agent_instance()].push_back(e.seq());
    for (auto& [_, s] : out) std::sort(s.begin(), s.end());
    return out;
  }

  // Polls the store until pred holds (or timeout).
  std::map<std::string, StoredInstance> WaitForStore(
      const std::function<bool(const std::map<std::string, StoredInstance>&)>& pred,
      absl::Duration timeout = absl::Seconds(30)) {
    const absl::Time deadline = absl::Now() + timeout;
    auto stored = ReadStore(db_, "host-e2e");
    while (!pred(stored) && absl::Now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      stored = ReadStore(db_, "host-e2e");
    }
    return stored;
  }

  static TestPki* pki_;
  static NetPair* net_;
  std::string dir_, db_;
  int port_ = 0;
};

TestPki* TransportTest::pki_ = nullptr;
NetPair* TransportTest::net_ = nullptr;

TEST_F(TransportTest, EveryEventStoredOnceOverMtls) {
  auto collector = StartCollector();
  ASSERT_NE(collector, nullptr);
  auto agent = StartAgent();
  ASSERT_NE(agent, nullptr);
  const std::string peer = TestPeerPath();
  auto server = Child::Spawn(net_->server_ns, {peer, "tcp-server", net_->server_v4, "7001"});
  ASSERT_EQ(server->ReadLine(), "ready");
  auto client = Child::Spawn(net_->client_ns, {peer, "tcp-client", net_->server_v4, "7001"});
  ASSERT_EQ(client->Wait(), 0);
  ASSERT_EQ(server->Wait(), 0);
  Spray(200);
  auto connect = agent->WaitFor(NetEvent(v1::NETWORK_KIND_CONNECT, client->pid));
  ASSERT_TRUE(connect.has_value()) << agent->Stderr();
  ASSERT_EQ(agent->Stop(), 0) << agent->Stderr();
  EXPECT_TRUE(absl::StrContains(agent->Stderr(), "streaming to 127.0.0.1")) << agent->Stderr();

  const auto printed = Printed(*agent);
  ASSERT_EQ(printed.size(), 1u);
  const auto& [instance, seqs] = *printed.begin();
  ASSERT_GT(seqs.size(), 200u);  // the spray alone is 200 events
  auto stored = ReadStore(db_, "host-e2e");
  ASSERT_EQ(stored.count(instance), 1u) << collector->Stderr();
  EXPECT_EQ(stored[instance].seqs, seqs) << "stored != printed; agent:\n" << agent->Stderr();
  EXPECT_EQ(RepeatedSeqs(stored[instance].seqs), 0u);
  EXPECT_EQ(MissingSeqs(stored[instance].seqs), 0u);

  // The stored connect is the printed one, field for field.
  bool found = false;
  for (const v1::Envelope& e : stored[instance].network)
    if (e.seq() == connect->seq()) {
      found = true;
      EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(e, *connect))
          << "stored:\n" << e.DebugString() << "printed:\n" << connect->DebugString();
      EXPECT_EQ(e.network().process().exe(), TestPeerPath());
      EXPECT_EQ(e.network().remote_ip(), net_->server_v4);
    }
  EXPECT_TRUE(found);

  // The host's hello: facts and coverage.
  auto store = OpenStore("sqlite:" + db_);
  ASSERT_TRUE(store.ok());
  auto hosts = (*store)->Hosts();
  ASSERT_TRUE(hosts.ok());
  ASSERT_EQ(hosts->size(), 1u);
  EXPECT_EQ((*hosts)[0].hello.host_id(), "host-e2e");
  EXPECT_EQ((*hosts)[0].hello.agent_instance(), instance);
  EXPECT_FALSE((*hosts)[0].hello.kernel_release().empty());
  EXPECT_GT((*hosts)[0].hello.coverage().hooks_size(), 0);
}

TEST_F(TransportTest, CollectorKilledAndRestartedLosesNothing) {
  auto collector = StartCollector();
  ASSERT_NE(collector, nullptr);
  auto agent = StartAgent();
  ASSERT_NE(agent, nullptr);
  // Traffic throughout: sprays in a loop while the collector dies and returns.
  const std::string loop = absl::StrCat("for i in $(seq 1 30); do ", TestPeerPath(),
                                        " udp-spray ", net_->server_v4,
                                        " $((21000 + i * 100)) 50; sleep 0.1; done");
  auto traffic = Child::Spawn(net_->client_ns, {"/bin/sh", "-c", loop});
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  collector->Stop(SIGKILL);
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  collector = StartCollector();
  ASSERT_NE(collector, nullptr);
  ASSERT_EQ(traffic->Wait(absl::Seconds(60)), 0);
  ASSERT_EQ(agent->Stop(), 0) << agent->Stderr();

  const auto printed = Printed(*agent);
  ASSERT_EQ(printed.size(), 1u);
  const auto& [instance, seqs] = *printed.begin();
  ASSERT_GT(seqs.size(), 1500u);  // 30 sprays of 50
  auto stored = ReadStore(db_, "host-e2e");
  EXPECT_EQ(stored[instance].seqs, seqs) << "agent:\n" << agent->Stderr() << "collector:\n"
                                         << collector->Stderr();
  EXPECT_EQ(RepeatedSeqs(stored[instance].seqs), 0u);
  // The agent noticed the outage and came back.
  EXPECT_TRUE(absl::StrContains(agent->Stderr(), "retrying in")) << agent->Stderr();
}

TEST_F(TransportTest, AgentKilledAndRestartedReplaysItsSpool) {
  const std::string state = dir_ + "/agent-state";
  std::filesystem::create_directories(state);
  // The collector is down: everything waits in the spool.
  auto first = StartAgent({"--state_dir=" + state});
  ASSERT_NE(first, nullptr);
  Spray(300);
  ASSERT_TRUE(first->WaitFor([](const v1::Envelope& e) {
    return e.has_network() && e.network().remote_port() == 20299;
  }));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // flushed to the spool
  first->Stop(SIGKILL);
  const auto printed_first = Printed(*first);
  ASSERT_EQ(printed_first.size(), 1u);
  const auto& [first_instance, first_seqs] = *printed_first.begin();
  ASSERT_GE(first_seqs.size(), 300u);

  auto collector = StartCollector();
  ASSERT_NE(collector, nullptr);
  auto second = StartAgent({"--state_dir=" + state});
  ASSERT_NE(second, nullptr);
  Spray(100, 23000);
  auto stored = WaitForStore([&](const auto& s) {
    auto it = s.find(first_instance);
    return it != s.end() && !it->second.seqs.empty() && it->second.seqs.back() >= first_seqs.back();
  });
  ASSERT_EQ(second->Stop(), 0) << second->Stderr();
  stored = ReadStore(db_, "host-e2e");

  // Everything the killed agent printed was replayed by the next one, once.
  const Seqs& got = stored[first_instance].seqs;
  EXPECT_EQ(RepeatedSeqs(got), 0u);
  EXPECT_EQ(MissingSeqs(got), 0u);
  for (uint64_t s : first_seqs) EXPECT_TRUE(std::binary_search(got.begin(), got.end(), s)) << s;
  // And the second agent's own events, exactly.
  const auto printed_second = Printed(*second);
  ASSERT_EQ(printed_second.size(), 1u);
  EXPECT_EQ(stored[printed_second.begin()->first].seqs, printed_second.begin()->second)
      << second->Stderr();
}

TEST_F(TransportTest, SpoolOverflowWhileCollectorDownIsStoredAsLoss) {
  // 64 KiB of spool holds ~150 events; 2000 arrive while the collector is down.
  auto agent = StartAgent({"--spool_max_bytes=65536", "--spool_segment_bytes=8192"});
  ASSERT_NE(agent, nullptr);
  Spray(2000);
  auto loss = agent->WaitFor(
      [](const v1::Envelope& e) { return e.has_loss() && e.loss().reason() == "spool"; },
      absl::Seconds(15));
  ASSERT_TRUE(loss.has_value()) << agent->Stderr();
  auto collector = StartCollector();
  ASSERT_NE(collector, nullptr);
  const std::string instance = loss->agent_instance();
  WaitForStore([&](const auto& s) {
    auto it = s.find(instance);
    return it != s.end() && it->second.loss_spool > 0;
  });
  ASSERT_EQ(agent->Stop(), 0) << agent->Stderr();

  auto stored = ReadStore(db_, "host-e2e");
  const StoredInstance& si = stored[instance];
  printf("[ spool ] %zu stored, %llu missing, %llu accounted for by loss records\n", si.seqs.size(),
         static_cast<unsigned long long>(MissingSeqs(si.seqs)),
         static_cast<unsigned long long>(si.loss_spool));
  ASSERT_GT(si.loss_spool, 1000u) << agent->Stderr();
  // Every sequence number missing from the store is accounted for by a
  // stored loss record, and nothing is there twice.
  EXPECT_EQ(MissingSeqs(si.seqs), si.loss_spool) << agent->Stderr();
  EXPECT_EQ(RepeatedSeqs(si.seqs), 0u);
  // What did arrive is the newest: the last spray event is stored.
  const auto printed = Printed(*agent);
  EXPECT_EQ(si.seqs.back(), printed.at(instance).back());
}

TEST_F(TransportTest, StalledCollectorSlowsSendingNotCapture) {
  auto collector = StartCollector();
  ASSERT_NE(collector, nullptr);
  auto agent = StartAgent();
  ASSERT_NE(agent, nullptr);
  // The collector stops reading (SIGSTOP): its TCP window fills, and the
  // agent's sends back up -- but capture goes on into the spool.
  ASSERT_EQ(kill(collector->pid(), SIGSTOP), 0);
  Spray(1500, 24000);
  auto last = agent->WaitFor([](const v1::Envelope& e) {
    return e.has_network() && e.network().remote_port() == 25499;
  });
  EXPECT_TRUE(last.has_value()) << "capture stalled with the collector: " << agent->Stderr();
  const auto stalled = ReadStore(db_, "host-e2e");
  ASSERT_EQ(kill(collector->pid(), SIGCONT), 0);
  ASSERT_TRUE(last.has_value());
  const std::string instance = last->agent_instance();
  auto stored = WaitForStore([&](const auto& s) {
    auto it = s.find(instance);
    return it != s.end() && !it->second.seqs.empty() && it->second.seqs.back() >= last->seq();
  });
  ASSERT_EQ(agent->Stop(), 0) << agent->Stderr();
  // While stalled the store could not have the spray; afterwards it has all of it, once.
  auto before = stalled.find(instance);
  EXPECT_TRUE(before == stalled.end() || before->second.seqs.empty() ||
              before->second.seqs.back() < last->seq());
  stored = ReadStore(db_, "host-e2e");
  EXPECT_EQ(stored[instance].seqs, Printed(*agent).at(instance)) << agent->Stderr();
}

TEST_F(TransportTest, AgentRefusesPlaintextToANonLoopbackCollector) {
  const int status = testing::Run(absl::StrCat(AgentPath(), " --collector=192.0.2.1:7443 --insecure 2>&1 | grep -q 'allowed only to a collector on loopback'"));
  EXPECT_EQ(status, 0);
  const int missing = testing::Run(absl::StrCat(AgentPath(), " --collector=127.0.0.1:7443 --tls_cert=/nonexistent.pem --tls_ca=", pki_->ca(), " 2>&1 | grep -q 'tls_cert=/nonexistent.pem: cannot read'"));
  EXPECT_EQ(missing, 0);
}

}  // namespace
}  // namespace sockwatch::testing
