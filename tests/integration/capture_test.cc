// Every hook against real traffic between two network namespaces joined by
// veth, asserting every field a user reads: process (pid, ppid, uid, exe,
// argv, start time, cgroup), 5-tuple, direction, outcome, Community ID.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cerrno>

#include "agent/community_id.h"
#include "gtest/gtest.h"
#include "tests/integration/harness.h"

namespace sockwatch::testing {
namespace {

using v1::Envelope;
using v1::NetworkEvent;

std::vector<uint8_t> IpBytes(const std::string& ip) {
  std::vector<uint8_t> b(16);
  if (inet_pton(AF_INET, ip.c_str(), b.data()) == 1) b.resize(4);
  else inet_pton(AF_INET6, ip.c_str(), b.data());
  return b;
}

std::string ExpectedCommunityId(uint8_t proto, const std::string& a, uint16_t ap, const std::string& b,
                                uint16_t bp) {
  return CommunityId(proto, IpBytes(a), ap, IpBytes(b), bp);
}

std::string DumpNetworkOf(AgentProcess* agent) {
  std::string out;
  for (const Envelope& e : agent->All([](const Envelope& e) { return e.has_network(); }))
    out += e.ShortDebugString() + "\n";
  return out;
}

class CaptureTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    net_ = new NetPair();
    agent_ = AgentProcess::Start({"--snapshot=false"}).release();
  }
  static void TearDownTestSuite() {
    delete agent_;
    delete net_;
  }
  void SetUp() override {
    ASSERT_TRUE(net_->ok()) << "could not create the network namespaces";
    ASSERT_NE(agent_, nullptr) << "the agent did not start";
  }

  // The process fields every event about a test peer must carry.
  static void ExpectPeer(const v1::Process& p, const Child& c) {
    EXPECT_EQ(p.pid(), static_cast<uint32_t>(c.pid));
    EXPECT_EQ(p.ppid(), static_cast<uint32_t>(getpid()));
    EXPECT_EQ(p.uid(), 0u);
    EXPECT_EQ(p.gid(), 0u);
    EXPECT_EQ(p.exe(), TestPeerPath());
    ASSERT_EQ(p.argv_size(), static_cast<int>(c.argv.size()));
    for (size_t i = 0; i < c.argv.size(); ++i) EXPECT_EQ(p.argv(i), c.argv[i]) << i;
    EXPECT_EQ(p.comm(), "sw_testpeer");
    EXPECT_GE(p.start_boottime_ns(), c.boot_before);
    EXPECT_LE(p.start_boottime_ns(), c.boot_after);
    EXPECT_TRUE(p.has_start_time());
    EXPECT_GT(p.start_time().seconds(), 1'600'000'000);
    EXPECT_EQ(p.cgroup_id(), OwnCgroupId());
    EXPECT_FALSE(p.unknown());
  }

  static Envelope Expect(const AgentProcess::Pred& pred, const char* what,
                         absl::Duration wait = absl::Seconds(10)) {
    auto e = agent_->WaitFor(pred, wait);
    EXPECT_TRUE(e.has_value()) << "no event: " << what << "\nnetwork events seen:\n"
                               << DumpNetwork() << "agent stderr:\n" << agent_->Stderr()
                               << "kernel counters:\n"
                               << Capture("bpftool map dump name sw_counters 2>&1 | head -80");
    return e.value_or(Envelope());
  }

  // Runs a TCP exchange client -> server and checks all six events.
  void TcpRoundTrip(const std::string& server_ip, const std::string& client_ip, int ip_version,
                    int port) {
    const std::string peer = TestPeerPath();
    auto server = Child::Spawn(net_->server_ns, {peer, "tcp-server", server_ip, std::to_string(port)});
    ASSERT_EQ(server->ReadLine(), "ready");
    auto client = Child::Spawn(net_->client_ns, {peer, "tcp-client", server_ip, std::to_string(port)});
    ASSERT_EQ(client->Wait(), 0);
    ASSERT_EQ(server->Wait(), 0);

    Envelope listen = Expect(NetEvent(v1::NETWORK_KIND_LISTEN, server->pid), "listen");
    const NetworkEvent& l = listen.network();
    ExpectPeer(l.process(), *server);
    EXPECT_EQ(l.protocol(), v1::PROTOCOL_TCP);
    EXPECT_EQ(l.ip_version(), static_cast<uint32_t>(ip_version));
    EXPECT_EQ(l.local_ip(), server_ip);
    EXPECT_EQ(l.local_port(), static_cast<uint32_t>(port));
    EXPECT_EQ(l.direction(), v1::DIRECTION_INBOUND);
    EXPECT_EQ(l.netns(), net_->server_netns());

    Envelope connect = Expect(NetEvent(v1::NETWORK_KIND_CONNECT, client->pid), "connect");
    const NetworkEvent& c = connect.network();
    ExpectPeer(c.process(), *client);
    EXPECT_EQ(c.protocol(), v1::PROTOCOL_TCP);
    EXPECT_EQ(c.ip_version(), static_cast<uint32_t>(ip_version));
    EXPECT_EQ(c.local_ip(), client_ip);
    EXPECT_GE(c.local_port(), 1024u);
    EXPECT_EQ(c.remote_ip(), server_ip);
    EXPECT_EQ(c.remote_port(), static_cast<uint32_t>(port));
    EXPECT_EQ(c.direction(), v1::DIRECTION_OUTBOUND);
    EXPECT_EQ(c.outcome(), v1::OUTCOME_ESTABLISHED);
    EXPECT_EQ(c.error_code(), 0);
    EXPECT_NE(c.socket_cookie(), 0u);
    EXPECT_EQ(c.netns(), net_->client_netns());
    const std::string cid = ExpectedCommunityId(6, client_ip, c.local_port(), server_ip, port);
    EXPECT_EQ(c.community_id(), cid);

    Envelope accept = Expect(NetEvent(v1::NETWORK_KIND_ACCEPT, server->pid), "accept");
    const NetworkEvent& a = accept.network();
    ExpectPeer(a.process(), *server);
    EXPECT_EQ(a.local_ip(), server_ip);
    EXPECT_EQ(a.local_port(), static_cast<uint32_t>(port));
    EXPECT_EQ(a.remote_ip(), client_ip);
    EXPECT_EQ(a.remote_port(), c.local_port());
    EXPECT_EQ(a.direction(), v1::DIRECTION_INBOUND);
    EXPECT_EQ(a.outcome(), v1::OUTCOME_ESTABLISHED);
    EXPECT_EQ(a.community_id(), cid);  // both ends of one flow hash the same
    EXPECT_EQ(a.netns(), net_->server_netns());
    EXPECT_NE(a.socket_cookie(), 0u);

    for (const Child* who : {client.get(), server.get()}) {
      Envelope end = Expect(NetEvent(v1::NETWORK_KIND_FLOW_END, who->pid), "flow end");
      const NetworkEvent& f = end.network();
      ExpectPeer(f.process(), *who);
      EXPECT_EQ(f.bytes_sent(), 5u);  // "hello" one way, "world" the other
      EXPECT_EQ(f.bytes_received(), 5u);
      EXPECT_GT(f.duration_ns(), 0u);
      EXPECT_LT(f.duration_ns(), 30'000'000'000u);
      EXPECT_EQ(f.community_id(), cid);
      EXPECT_EQ(f.netns(), who == client.get() ? net_->client_netns() : net_->server_netns());
      EXPECT_EQ(f.direction(), who == client.get() ? v1::DIRECTION_OUTBOUND : v1::DIRECTION_INBOUND);
      EXPECT_EQ(f.local_port(), who == client.get() ? c.local_port() : static_cast<uint32_t>(port));
    }
  }

  static std::string DumpNetwork() { return DumpNetworkOf(agent_); }

  static NetPair* net_;
  static AgentProcess* agent_;
};

NetPair* CaptureTest::net_ = nullptr;
AgentProcess* CaptureTest::agent_ = nullptr;

TEST_F(CaptureTest, TcpIpv4ClientAndServer) {
  TcpRoundTrip(net_->server_v4, net_->client_v4, 4, 8080);
}

TEST_F(CaptureTest, TcpIpv6ClientAndServer) {
  TcpRoundTrip(net_->server_v6, net_->client_v6, 6, 8443);
}

TEST_F(CaptureTest, RefusedConnect) {
  auto client = Child::Spawn(net_->client_ns, {TestPeerPath(), "tcp-client", net_->server_v4, "9"});
  EXPECT_EQ(client->Wait(), 10 + ECONNREFUSED % 100);
  Envelope e = Expect(NetEvent(v1::NETWORK_KIND_CONNECT, client->pid), "refused connect");
  const NetworkEvent& n = e.network();
  ExpectPeer(n.process(), *client);
  EXPECT_EQ(n.outcome(), v1::OUTCOME_REFUSED);
  EXPECT_EQ(n.error_code(), ECONNREFUSED);
  EXPECT_EQ(n.remote_ip(), net_->server_v4);
  EXPECT_EQ(n.remote_port(), 9u);
  EXPECT_EQ(n.local_ip(), net_->client_v4);
  EXPECT_NE(n.local_port(), 0u);
  EXPECT_EQ(n.direction(), v1::DIRECTION_OUTBOUND);
}

TEST_F(CaptureTest, TimedOutConnect) {
  auto client = Child::Spawn(net_->client_ns, {TestPeerPath(), "tcp-client", net_->server_v4, "80",
                                               "--bind=" + net_->client_v4_blackholed});
  EXPECT_EQ(client->Wait(absl::Seconds(30)), 10 + ETIMEDOUT % 100);
  // The give-up runs from the retransmit timer; allow for a slow machine.
  Envelope e = Expect(NetEvent(v1::NETWORK_KIND_CONNECT, client->pid), "timed-out connect",
                      absl::Seconds(30));
  const NetworkEvent& n = e.network();
  ExpectPeer(n.process(), *client);
  EXPECT_EQ(n.outcome(), v1::OUTCOME_TIMED_OUT);
  EXPECT_EQ(n.error_code(), ETIMEDOUT);
  EXPECT_EQ(n.local_ip(), net_->client_v4_blackholed);
  EXPECT_EQ(n.remote_port(), 80u);
}

TEST_F(CaptureTest, UdpUnconnectedSendAndReceiveIpv4) {
  const std::string peer = TestPeerPath();
  auto server = Child::Spawn(net_->server_ns, {peer, "udp-recv", net_->server_v4, "5353", "3"});
  ASSERT_EQ(server->ReadLine(), "ready");
  auto client = Child::Spawn(net_->client_ns, {peer, "udp-send", net_->server_v4, "5353", "3"});
  ASSERT_EQ(client->Wait(), 0);
  ASSERT_EQ(server->Wait(), 0);

  Envelope s = Expect(NetEvent(v1::NETWORK_KIND_UDP_SEND, client->pid), "udp send");
  const NetworkEvent& n = s.network();
  ExpectPeer(n.process(), *client);
  EXPECT_EQ(n.protocol(), v1::PROTOCOL_UDP);
  EXPECT_EQ(n.ip_version(), 4u);
  EXPECT_EQ(n.remote_ip(), net_->server_v4);
  EXPECT_EQ(n.remote_port(), 5353u);
  EXPECT_GE(n.local_port(), 1024u);
  EXPECT_EQ(n.direction(), v1::DIRECTION_OUTBOUND);
  EXPECT_EQ(n.netns(), net_->client_netns());
  // An unbound socket's source address is chosen after the hook: the agent
  // reports the wildcard and no Community ID rather than a wrong one.
  EXPECT_EQ(n.local_ip(), "0.0.0.0");
  EXPECT_EQ(n.community_id(), "");

  Envelope r = Expect(NetEvent(v1::NETWORK_KIND_UDP_RECV, server->pid), "udp recv");
  const NetworkEvent& m = r.network();
  ExpectPeer(m.process(), *server);
  EXPECT_EQ(m.local_port(), 5353u);
  EXPECT_EQ(m.local_ip(), net_->server_v4);
  EXPECT_EQ(m.remote_ip(), net_->client_v4);
  EXPECT_EQ(m.remote_port(), n.local_port());
  EXPECT_EQ(m.direction(), v1::DIRECTION_INBOUND);
  EXPECT_EQ(m.netns(), net_->server_netns());

  // Three datagrams, one (process, socket, remote): the kernel reports it once.
  EXPECT_EQ(agent_->All(NetEvent(v1::NETWORK_KIND_UDP_SEND, client->pid)).size(), 1u);
  EXPECT_EQ(agent_->All(NetEvent(v1::NETWORK_KIND_UDP_RECV, server->pid)).size(), 1u);
}

TEST_F(CaptureTest, UdpIpv6SendAndReceive) {
  const std::string peer = TestPeerPath();
  auto server = Child::Spawn(net_->server_ns, {peer, "udp-recv", net_->server_v6, "5354", "1"});
  ASSERT_EQ(server->ReadLine(), "ready");
  auto client = Child::Spawn(net_->client_ns, {peer, "udp-send", net_->server_v6, "5354", "1"});
  ASSERT_EQ(client->Wait(), 0);
  ASSERT_EQ(server->Wait(), 0);
  Envelope s = Expect(NetEvent(v1::NETWORK_KIND_UDP_SEND, client->pid), "udp6 send");
  ExpectPeer(s.network().process(), *client);
  EXPECT_EQ(s.network().ip_version(), 6u);
  EXPECT_EQ(s.network().remote_ip(), net_->server_v6);
  Envelope r = Expect(NetEvent(v1::NETWORK_KIND_UDP_RECV, server->pid), "udp6 recv");
  ExpectPeer(r.network().process(), *server);
  EXPECT_EQ(r.network().remote_ip(), net_->client_v6);
  EXPECT_EQ(r.network().remote_port(), s.network().local_port());
  EXPECT_EQ(r.network().local_ip(), net_->server_v6);
}

TEST_F(CaptureTest, UdpConnectedSend) {
  const std::string peer = TestPeerPath();
  auto server = Child::Spawn(net_->server_ns, {peer, "udp-recv", net_->server_v4, "5355", "2"});
  ASSERT_EQ(server->ReadLine(), "ready");
  auto client = Child::Spawn(net_->client_ns, {peer, "udp-connect-send", net_->server_v4, "5355", "2"});
  ASSERT_EQ(client->Wait(), 0);
  ASSERT_EQ(server->Wait(), 0);
  Envelope e = Expect(NetEvent(v1::NETWORK_KIND_UDP_CONNECT, client->pid), "udp connect");
  const NetworkEvent& n = e.network();
  ExpectPeer(n.process(), *client);
  EXPECT_EQ(n.local_ip(), net_->client_v4);  // a connected socket knows its local address
  EXPECT_GE(n.local_port(), 1024u);
  EXPECT_EQ(n.remote_ip(), net_->server_v4);
  EXPECT_EQ(n.remote_port(), 5355u);
  EXPECT_EQ(n.direction(), v1::DIRECTION_OUTBOUND);
  EXPECT_EQ(n.community_id(),
            ExpectedCommunityId(17, net_->client_v4, n.local_port(), net_->server_v4, 5355));
  Envelope r = Expect(NetEvent(v1::NETWORK_KIND_UDP_RECV, server->pid), "udp recv of connected send");
  EXPECT_EQ(r.network().remote_port(), n.local_port());
}

}  // namespace
}  // namespace sockwatch::testing
