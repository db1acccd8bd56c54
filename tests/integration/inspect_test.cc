// Protocol inspection end to end: the real tc programs on the veth of one of
// two namespaces, real clients and servers (sw_testpeer, curl, openssl,
// python3's http.server) and real scans (hping3). Each case asserts the alert
// a SOC would look for — rule, evidence and the process that owns the socket
// — and that real TLS and HTTP raise nothing.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/integration/harness.h"

namespace sockwatch::testing {
namespace {

using v1::Envelope;

const std::set<std::string> kInspectionRules = {"protocol_port_mismatch", "malformed_protocol", "protocol_change",
                                                "orphan_packets", "gratuitous_traffic"};

AgentProcess::Pred Rule(const std::string& rule, pid_t pid = 0) {
  return [=](const Envelope& e) {
    return e.has_alert() && e.alert().rule() == rule &&
           (pid == 0 || e.alert().process().pid() == static_cast<uint32_t>(pid));
  };
}

std::string Hex(absl::string_view bytes) { return absl::BytesToHexString(bytes); }

// A ClientHello as real clients start it, with a session id length of 64
// (at most 32 is legal): claims TLS, breaks its syntax.
std::string MalformedClientHello() {
  std::string body = "\x03\x03";          // client_version TLS 1.2
  body += std::string(32, '\x11');        // random
  body += '\x40';                         // session id length 64
  body += std::string(64, '\x22');
  body += std::string("\x00\x02\x13\x01\x01\x00", 6);  // one suite, null compression
  std::string hs = "\x01";                // ClientHello
  hs += std::string(1, '\0') + static_cast<char>(body.size() >> 8) + static_cast<char>(body.size() & 0xff);
  hs += body;
  std::string rec = "\x16\x03\x01";
  rec += static_cast<char>(hs.size() >> 8);
  rec += static_cast<char>(hs.size() & 0xff);
  return rec + hs;
}

class InspectTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(net_.ok());
    char tmpl[] = "/tmp/sw_inspect_XXXXXX";
    state_ = mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(state_); }

  // An agent inspecting the interfaces of namespace ns; alerts at once (no learning).
  std::unique_ptr<AgentProcess> Agent(const std::string& ns) {
    auto agent = AgentProcess::Start({"--state_dir=" + state_, "--learning_period=0",
                                      "--inspect_netns=/run/netns/" + ns, "--orphan_window=10s",
                                      "--orphan_threshold=20"});
    if (!agent) return nullptr;
    auto cov = agent->WaitFor([](const Envelope& e) { return e.has_coverage(); });
    EXPECT_TRUE(cov.has_value());
    bool inspected = false;
    for (const v1::HookCoverage& h : cov->coverage().hooks())
      if (h.family() == "packet" && h.available())
        for (const std::string& i : h.interfaces()) inspected |= absl::EndsWith(i, "/" + ns);
    EXPECT_TRUE(inspected) << "the veth of " << ns << " is not inspected: " << cov->DebugString();
    return agent;
  }

  std::unique_ptr<Child> Server(const std::vector<std::string>& argv) {
    auto s = Child::Spawn(net_.server_ns, argv);
    EXPECT_EQ(s->ReadLine(), "ready");
    return s;
  }

  std::unique_ptr<Child> Send(int port, absl::string_view bytes) {
    auto c = Child::Spawn(net_.client_ns, {TestPeerPath(), "tcp-send", net_.server_v4, std::to_string(port), Hex(bytes)});
    EXPECT_EQ(c->Wait(), 0);
    return c;
  }

  NetPair net_;
  std::string state_;
};

void ExpectFlow(const v1::Alert& a, const Child& client, int port) {
  EXPECT_EQ(a.process().pid(), static_cast<uint32_t>(client.pid));
  EXPECT_EQ(a.process().exe(), TestPeerPath());
  ASSERT_GE(a.process().argv_size(), 2);
  EXPECT_EQ(a.process().argv(1), "tcp-send");
  EXPECT_EQ(a.network().direction(), v1::DIRECTION_OUTBOUND);
  EXPECT_EQ(a.network().remote_port(), static_cast<uint32_t>(port));
  EXPECT_EQ(a.network().remote_ip(), "10.231.0.2");
  EXPECT_EQ(a.network().local_ip(), "10.231.0.1");
  EXPECT_FALSE(a.network().community_id().empty());
  EXPECT_FALSE(a.ancestors().empty());  // the test binary that started it
  EXPECT_EQ(a.inspection().service_port(), static_cast<uint32_t>(port));
}

TEST_F(InspectTest, WrongProtocolOnWellKnownPortsFromTheClientProcess) {
  auto agent = Agent(net_.client_ns);
  ASSERT_NE(agent, nullptr);
  auto https = Server({TestPeerPath(), "tcp-serve", net_.server_v4, "443", "3"});
  auto dns = Server({TestPeerPath(), "tcp-serve", net_.server_v4, "53", "1"});

  // An SSH client talking to 443 (a tunnel out through the HTTPS port).
  auto ssh = Send(443, "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n");
  auto a = agent->WaitFor(Rule("protocol_port_mismatch", ssh->pid));
  ASSERT_TRUE(a.has_value()) << agent->Stderr();
  ExpectFlow(a->alert(), *ssh, 443);
  EXPECT_EQ(a->alert().inspection().observed(), "ssh");
  EXPECT_EQ(a->alert().inspection().expected(), "tls");
  EXPECT_EQ(a->alert().severity(), v1::SEVERITY_HIGH);
  ASSERT_GE(a->alert().inspection().samples_size(), 1);
  EXPECT_TRUE(a->alert().inspection().samples(0).from_client());
  EXPECT_TRUE(absl::StartsWith(a->alert().inspection().samples(0).head(), "SSH-2.0-OpenSSH_9.2p1"));
  EXPECT_TRUE(absl::StrContains(a->alert().summary(), "ssh on tcp port 443")) << a->alert().summary();

  // Random bytes to 443: no protocol at all.
  std::string noise;
  uint32_t x = 2463534242u;
  for (int i = 0; i < 200; ++i) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    noise.push_back(static_cast<char>(x & 0xff));
  }
  noise[0] = '\x8e';  // not a TLS content type
  auto rnd = Send(443, noise);
  a = agent->WaitFor(Rule("protocol_port_mismatch", rnd->pid));
  ASSERT_TRUE(a.has_value());
  ExpectFlow(a->alert(), *rnd, 443);
  EXPECT_EQ(a->alert().inspection().observed(), "none");
  EXPECT_EQ(a->alert().severity(), v1::SEVERITY_MEDIUM);

  // A ClientHello that breaks TLS's syntax.
  auto bad = Send(443, MalformedClientHello());
  a = agent->WaitFor(Rule("malformed_protocol", bad->pid));
  ASSERT_TRUE(a.has_value());
  ExpectFlow(a->alert(), *bad, 443);
  ASSERT_GE(a->alert().inspection().samples_size(), 1);
  EXPECT_EQ(a->alert().inspection().samples(0).protocol(), "tls");
  EXPECT_TRUE(a->alert().inspection().samples(0).malformed());
  EXPECT_FALSE(a->alert().inspection().samples(0).reason().empty());
  // It claims TLS on the TLS port: no mismatch on top.
  EXPECT_TRUE(agent->All(Rule("protocol_port_mismatch", bad->pid)).empty());

  // HTTP to the DNS port.
  auto http = Send(53, "GET /x HTTP/1.1\r\nHost: 10.231.0.2\r\n\r\n");
  a = agent->WaitFor(Rule("protocol_port_mismatch", http->pid));
  ASSERT_TRUE(a.has_value());
  ExpectFlow(a->alert(), *http, 53);
  EXPECT_EQ(a->alert().inspection().observed(), "http");
  EXPECT_EQ(a->alert().inspection().expected(), "dns");

  // Not DNS on 53/udp.
  auto udp = Child::Spawn(net_.client_ns, {TestPeerPath(), "udp-send-from", net_.server_v4, "53", "40053",
                                           Hex("this is not a dns query at all")});
  EXPECT_EQ(udp->Wait(), 0);
  a = agent->WaitFor(Rule("protocol_port_mismatch", udp->pid));
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->alert().network().protocol(), v1::PROTOCOL_UDP);
  EXPECT_EQ(a->alert().inspection().expected(), "dns");
  EXPECT_EQ(a->alert().inspection().observed(), "none");
  EXPECT_EQ(agent->Stop(), 0);
}

TEST_F(InspectTest, RealTlsAndHttpClientsRaiseNothing) {
  const std::string dir = state_ + "/tls";
  std::filesystem::create_directories(dir);
  ASSERT_EQ(testing::Run("openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=sockwatch-test -days 1 -keyout " + dir +
                "/k.pem -out " + dir + "/c.pem 2>/dev/null"),
            0);
  auto agent = Agent(net_.client_ns);
  ASSERT_NE(agent, nullptr);
  auto tls = Child::Spawn(net_.server_ns, {"/usr/bin/openssl", "s_server", "-quiet", "-accept",
                                           net_.server_v4 + ":443", "-cert", dir + "/c.pem", "-key", dir + "/k.pem",
                                           "-www"});
  auto web = Child::Spawn(net_.server_ns, {"/usr/bin/python3", "-m", "http.server", "80", "--bind", net_.server_v4,
                                           "--directory", dir});
  // Wait until both listen.
  for (int i = 0; i < 100; ++i) {
    if (testing::Run("ip netns exec " + net_.server_ns + " ss -ltn | grep -q ':443 ' && ip netns exec " + net_.server_ns +
            " ss -ltn | grep -q ':80 '") == 0)
      break;
    usleep(100 * 1000);
  }
  auto curl = Child::Spawn(net_.client_ns, {"/usr/bin/curl", "-sS", "-o", "/dev/null", "http://10.231.0.2/"});
  EXPECT_EQ(curl->Wait(), 0);
  auto curl_tls = Child::Spawn(net_.client_ns, {"/usr/bin/curl", "-sSk", "-o", "/dev/null", "https://10.231.0.2/"});
  EXPECT_EQ(curl_tls->Wait(), 0);
  auto s_client = Child::Spawn(net_.client_ns, {"/usr/bin/openssl", "s_client", "-connect", "10.231.0.2:443",
                                                "-servername", "sockwatch-test"});
  s_client->CloseStdin();
  s_client->Wait();
  // A control after them: once its alert is out, their flows were judged too.
  auto control = Send(443, "SSH-2.0-control\r\n");
  ASSERT_TRUE(agent->WaitFor(Rule("protocol_port_mismatch", control->pid), absl::Seconds(15)).has_value());
  // Nothing else: not for the three real clients, and not unattributed either.
  auto others = agent->All([&](const Envelope& e) {
    return e.has_alert() && kInspectionRules.contains(e.alert().rule()) &&
           e.alert().process().pid() != static_cast<uint32_t>(control->pid);
  });
  for (const Envelope& e : others) ADD_FAILURE() << e.alert().summary();
  // And the clients' flows were seen (attributed) by the agent at all.
  for (pid_t pid : {curl->pid, curl_tls->pid, s_client->pid})
    EXPECT_TRUE(agent->WaitFor(NetEvent(v1::NETWORK_KIND_CONNECT, pid)).has_value()) << pid;
  kill(tls->pid, SIGTERM);
  kill(web->pid, SIGTERM);
  EXPECT_EQ(agent->Stop(), 0);
}

TEST_F(InspectTest, ProtocolChangeOfAnImageOnAPort) {
  auto agent = Agent(net_.client_ns);
  ASSERT_NE(agent, nullptr);
  auto server = Server({TestPeerPath(), "tcp-serve", net_.server_v4, "9000", "2"});
  // 9000 is in no table: only the baseline knows what this image speaks there.
  auto first = Send(9000, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  // Judged (and learned) before the second flow starts.
  absl::SleepFor(absl::Seconds(1.5));
  EXPECT_TRUE(agent->All(Rule("protocol_change")).empty());
  auto second = Send(9000, "SSH-2.0-OpenSSH_9.2\r\n");
  auto a = agent->WaitFor(Rule("protocol_change", second->pid));
  ASSERT_TRUE(a.has_value()) << agent->Stderr();
  ExpectFlow(a->alert(), *second, 9000);
  EXPECT_EQ(a->alert().inspection().previous(), "http");
  EXPECT_EQ(a->alert().inspection().observed(), "ssh");
  EXPECT_EQ(agent->Stop(), 0);
}

TEST_F(InspectTest, ScansAndUnsolicitedAnswersAtTheServer) {
  auto agent = Agent(net_.server_ns);
  ASSERT_NE(agent, nullptr);
  auto sshd = Server({TestPeerPath(), "tcp-serve", net_.server_v4, "22", "1"});
  auto resolver = Server({TestPeerPath(), "udp-recv", net_.server_v4, "5353", "1"});
  ASSERT_TRUE(agent->WaitFor(NetEvent(v1::NETWORK_KIND_LISTEN, sshd->pid)).has_value());
  ASSERT_EQ(testing::Run("command -v hping3 >/dev/null"), 0) << "hping3 is missing (deploy/install-deps.sh installs it)";
  // hping3's exit status says whether replies came; the scans' replies do
  // not matter here (some are blackholed on purpose).
  const std::string hping = "ip netns exec " + net_.client_ns + " hping3 -q -c 30 -i u10000 ";

  // ACK scan of the listening port: packets of no flow, aimed at sshd.
  testing::Run(hping + "-A -p 22 " + net_.server_v4 + " >/dev/null 2>&1");
  auto a = agent->WaitFor(
      [&](const Envelope& e) {
        return Rule("orphan_packets")(e) && e.alert().inspection().source_ip() == net_.client_v4;
      },
      absl::Seconds(10));
  ASSERT_TRUE(a.has_value()) << agent->Stderr();
  const v1::InspectionEvidence& ev = a->alert().inspection();
  EXPECT_GE(ev.orphan_total(), 20u);
  ASSERT_GE(ev.orphans_size(), 1);
  EXPECT_EQ(ev.orphans(0).pattern(), "ack");
  EXPECT_GE(ev.orphans(0).packets(), 20u);
  EXPECT_EQ(ev.ports(0), 22u);
  EXPECT_EQ(a->alert().process().pid(), static_cast<uint32_t>(sshd->pid));  // the listener hit

  // NULL scan of closed ports, from another address.
  testing::Run(hping + "-p 2323 -a " + net_.client_v4_blackholed + " " + net_.server_v4 + " >/dev/null 2>&1");
  a = agent->WaitFor(
      [&](const Envelope& e) {
        return Rule("orphan_packets")(e) && e.alert().inspection().source_ip() == net_.client_v4_blackholed;
      },
      absl::Seconds(10));
  ASSERT_TRUE(a.has_value());
  ASSERT_GE(a->alert().inspection().orphans_size(), 1);
  EXPECT_EQ(a->alert().inspection().orphans(0).pattern(), "null");
  EXPECT_GE(a->alert().inspection().orphans(0).packets(), 20u);
  EXPECT_FALSE(a->alert().has_process());  // nothing listens there

  // FIN and Xmas scans from a third address (spoofed: its replies go nowhere).
  testing::Run("ip netns exec " + net_.client_ns + " hping3 -q -c 15 -i u10000 -F -p 2424 -a 10.231.0.77 " +
               net_.server_v4 + " >/dev/null 2>&1");
  testing::Run("ip netns exec " + net_.client_ns + " hping3 -q -c 15 -i u10000 -F -P -U -p 2425 -a 10.231.0.77 " +
               net_.server_v4 + " >/dev/null 2>&1");
  a = agent->WaitFor(
      [&](const Envelope& e) {
        return Rule("orphan_packets")(e) && e.alert().inspection().source_ip() == "10.231.0.77";
      },
      absl::Seconds(10));
  ASSERT_TRUE(a.has_value());
  std::map<std::string, uint64_t> by_pattern;
  for (const v1::OrphanCount& c : a->alert().inspection().orphans()) by_pattern[c.pattern()] = c.packets();
  EXPECT_EQ(by_pattern["fin"], 15u);
  EXPECT_GE(by_pattern["xmas"], 5u);  // the alert may come before the whole scan is counted
  EXPECT_EQ(by_pattern["fin"] + by_pattern["xmas"], a->alert().inspection().orphan_total());

  // UDP to ports with no socket, over IPv6.
  auto spray = Child::Spawn(net_.client_ns, {TestPeerPath(), "udp-spray", net_.server_v6, "31000", "40"});
  EXPECT_EQ(spray->Wait(), 0);
  a = agent->WaitFor(
      [&](const Envelope& e) {
        return Rule("orphan_packets")(e) && e.alert().inspection().source_ip() == net_.client_v6;
      },
      absl::Seconds(10));
  ASSERT_TRUE(a.has_value());
  ASSERT_GE(a->alert().inspection().orphans_size(), 1);
  EXPECT_EQ(a->alert().inspection().orphans(0).pattern(), "udp");
  EXPECT_GE(a->alert().inspection().orphans(0).packets(), 20u);

  // A SYN-ACK nobody asked for.
  testing::Run("ip netns exec " + net_.client_ns + " hping3 -q -c 2 -S -A -s 80 -k -p 41000 " + net_.server_v4 +
      " >/dev/null 2>&1");
  a = agent->WaitFor(
      [&](const Envelope& e) {
        return Rule("gratuitous_traffic")(e) && e.alert().inspection().orphans_size() > 0 &&
               e.alert().inspection().orphans(0).pattern() == "syn_ack";
      },
      absl::Seconds(10));
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->alert().network().local_port(), 41000u);

  // A DNS answer to a query never sent, at a local UDP socket.
  std::string answer("\x12\x34\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00", 12);
  answer += std::string("\x07" "example" "\x03" "com" "\x00" "\x00\x01\x00\x01", 17);
  answer += std::string("\xc0\x0c\x00\x01\x00\x01\x00\x00\x0e\x10\x00\x04\x0a\x00\x00\x01", 16);
  auto spoof = Child::Spawn(net_.client_ns, {TestPeerPath(), "udp-send-from", net_.server_v4, "5353", "53", Hex(answer)});
  EXPECT_EQ(spoof->Wait(), 0);
  a = agent->WaitFor(
      [&](const Envelope& e) {
        return Rule("gratuitous_traffic")(e) && e.alert().inspection().orphans_size() > 0 &&
               e.alert().inspection().orphans(0).pattern() == "dns_answer";
      },
      absl::Seconds(10));
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->alert().network().local_port(), 5353u);
  EXPECT_EQ(a->alert().network().remote_port(), 53u);
  EXPECT_EQ(a->alert().process().pid(), static_cast<uint32_t>(resolver->pid));
  EXPECT_EQ(agent->Stop(), 0);
}

TEST_F(InspectTest, NewInterfacesArePickedUpAndFiltersRemovedOnExit) {
  auto agent = Agent(net_.server_ns);
  ASSERT_NE(agent, nullptr);
  const std::string ns = net_.server_ns, a = "swa" + std::to_string(getpid() % 100000),
                    b = "swb" + std::to_string(getpid() % 100000);
  ASSERT_EQ(testing::Run("ip -n " + ns + " link add " + a + " type veth peer name " + b + " && ip -n " + ns +
                         " link set " + a + " up && ip -n " + ns + " link set " + b + " up"),
            0);
  const auto lists = [&](const std::string& name) {
    return [=](const Envelope& e) {
      if (!e.has_coverage()) return false;
      for (const v1::HookCoverage& h : e.coverage().hooks())
        for (const std::string& i : h.interfaces())
          if (absl::EndsWith(i, "/" + name)) return true;
      return false;
    };
  };
  auto cov = agent->WaitFor(
      [&](const Envelope& e) { return lists(a)(e) && lists(b)(e) && lists(ns)(e); }, absl::Seconds(10));
  ASSERT_TRUE(cov.has_value()) << "new interfaces not picked up";
  EXPECT_NE(testing::Capture("ip netns exec " + ns + " tc filter show dev " + a + " ingress").find("sw_tc_ingress"),
            std::string::npos);
  ASSERT_EQ(testing::Run("ip -n " + ns + " link del " + a), 0);
  // The coverage follows: a and b are gone (deleting one end deletes the pair).
  cov = agent->WaitFor([&](const Envelope& e) { return e.has_coverage() && !lists(a)(e) && !lists(b)(e) && lists(ns)(e); },
                       absl::Seconds(10));
  EXPECT_TRUE(cov.has_value()) << "the coverage still lists deleted interfaces";
  EXPECT_EQ(agent->Stop(), 0);
  // Only our filters go; nothing of ours stays behind.
  for (const char* dir : {"ingress", "egress"})
    EXPECT_EQ(testing::Capture("ip netns exec " + ns + " tc filter show dev " + ns + " " + dir).find("sw_tc_"),
              std::string::npos)
        << dir;
}

TEST_F(InspectTest, NamedInterfaceThatDoesNotExistIsABlindSpotNotACrash) {
  auto agent = AgentProcess::Start({"--state_dir=" + state_, "--inspect_interfaces=nosuch0"});
  ASSERT_NE(agent, nullptr);
  auto cov = agent->WaitFor([](const Envelope& e) { return e.has_coverage(); });
  ASSERT_TRUE(cov.has_value());
  bool said = false;
  for (const v1::HookCoverage& h : cov->coverage().hooks())
    if (h.family() == "packet") {
      EXPECT_FALSE(h.available());
      said = absl::StrContains(h.error(), "nosuch0");
    }
  EXPECT_TRUE(said) << cov->DebugString();
  EXPECT_EQ(agent->Stop(), 0);
}

TEST_F(InspectTest, BadProtocolTableRefusesToStartSayingWhere) {
  const std::string bad = state_ + "/protocols.yaml";
  std::ofstream(bad) << "ports:\n  - {port: 443, transport: tcp, expect: [tls]}\n  - {port: 80, transport: tcp, expect: [gopher]}\n";
  const std::string out = testing::Capture(AgentPath() + " --print=none --state_dir=" + state_ + " --protocols=" + bad +
                                           " 2>&1; echo exit=$?");
  EXPECT_TRUE(absl::StrContains(out, "protocols.yaml")) << out;
  EXPECT_TRUE(absl::StrContains(out, ":3")) << out;  // the line
  EXPECT_TRUE(absl::StrContains(out, "gopher")) << out;
  EXPECT_TRUE(absl::StrContains(out, "exit=1")) << out;
}

}  // namespace
}  // namespace sockwatch::testing
