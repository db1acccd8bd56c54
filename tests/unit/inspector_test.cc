// The inspector's judgement on tc records, without a kernel: which flows
// raise which alert, with which process, and which raise nothing.
#include "agent/inspector.h"

#include <arpa/inet.h>

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/unit/protocol_samples.h"

namespace sockwatch {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

std::vector<uint8_t> V4(const char* ip) {
  std::vector<uint8_t> a(4);
  inet_pton(AF_INET, ip, a.data());
  return a;
}

// One payload sample, as the kernel sends it.
PacketRecord Sample(const char* src, uint16_t sport, const char* dst, uint16_t dport, std::string data,
                    bool ingress, bool from_client, uint64_t cookie, uint32_t offset = 0,
                    v1::Protocol proto = v1::PROTOCOL_TCP) {
  PacketRecord r;
  r.kind = PacketRecord::kPayload;
  r.protocol = proto;
  r.src_ip = src;
  r.dst_ip = dst;
  r.src_addr = V4(src);
  r.dst_addr = V4(dst);
  r.src_port = sport;
  r.dst_port = dport;
  r.ingress = ingress;
  r.from_client = from_client;
  r.cookie = cookie;
  r.offset = offset;
  r.wire_len = data.size();
  r.data = std::move(data);
  return r;
}

class InspectorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    BaselineOptions bo;
    bo.learning_period = absl::ZeroDuration();
    baseline_ = *Baseline::Open(bo);
    detector_ = std::make_unique<Detector>(baseline_.get(), &table_, &clock_, Identify, std::vector<Subnet>{});
    InspectorOptions io;
    io.orphan_threshold = 20;
    inspector_ = std::make_unique<Inspector>(detector_.get(), baseline_.get(), &table_, &clock_, Identify,
                                             &ProtocolTable::Default(), io);
  }

  static v1::ImageIdentity Identify(const v1::Process& p) {
    v1::ImageIdentity id;
    id.set_exe(p.exe());
    id.set_key(p.exe());
    return id;
  }

  // A connect by pid with exe on the socket `cookie`.
  void Own(uint64_t cookie, uint32_t pid, const std::string& exe, v1::NetworkKind kind = v1::NETWORK_KIND_CONNECT,
           uint32_t local_port = 0, v1::Protocol proto = v1::PROTOCOL_TCP) {
    v1::Envelope env;
    v1::NetworkEvent* n = env.mutable_network();
    n->set_kind(kind);
    n->set_protocol(proto);
    n->set_socket_cookie(cookie);
    n->set_local_port(local_port);
    n->mutable_process()->set_pid(pid);
    n->mutable_process()->set_exe(exe);
    inspector_->OnEnvelope(env);
  }

  std::vector<v1::Alert> Feed(const PacketRecord& r) {
    std::vector<v1::Alert> out;
    inspector_->OnPacket(r, kT0, &out);
    return out;
  }
  std::vector<v1::Alert> TickAt(absl::Time t, const std::vector<OrphanSource>& orphans = {}) {
    std::vector<v1::Alert> out;
    inspector_->Tick(t, orphans, &out);
    return out;
  }

  ProcessTable table_;
  BootClock clock_{0};
  std::unique_ptr<Baseline> baseline_;
  std::unique_ptr<Detector> detector_;
  std::unique_ptr<Inspector> inspector_;
};

TEST_F(InspectorTest, SshOnTheTlsPortIsAMismatchOfTheOwningProcess) {
  Own(7, 4242, "/usr/bin/ssh");
  EXPECT_TRUE(Feed(Sample("10.0.0.1", 40000, "10.0.0.2", 443, "SSH-2.0-OpenSSH_9.2\r\n", false, true, 7)).empty());
  // Judged once the server had its time to answer.
  EXPECT_TRUE(TickAt(kT0 + absl::Milliseconds(100)).empty());
  const auto alerts = TickAt(kT0 + absl::Seconds(1));
  ASSERT_EQ(alerts.size(), 1u);
  const v1::Alert& a = alerts[0];
  EXPECT_EQ(a.rule(), "protocol_port_mismatch");
  EXPECT_EQ(a.process().pid(), 4242u);
  EXPECT_EQ(a.inspection().observed(), "ssh");
  EXPECT_EQ(a.inspection().expected(), "tls");
  EXPECT_EQ(a.network().direction(), v1::DIRECTION_OUTBOUND);
  EXPECT_EQ(a.network().remote_port(), 443u);
  EXPECT_FALSE(a.network().community_id().empty());
  EXPECT_EQ(inspector_->flows_judged(), 1u);
}

// The inspector keeps one copy of a process for all its sockets; a socket
// opened after an exec (same pid and start time, another image) must get the
// new image, and one opened before keeps the old.
TEST_F(InspectorTest, SocketsBeforeAndAfterAnExecKeepTheirOwnImage) {
  Own(21, 4242, "/usr/bin/bash");
  Own(22, 4242, "/usr/bin/ssh");  // bash exec'd ssh
  EXPECT_TRUE(Feed(Sample("10.0.0.1", 40021, "10.0.0.2", 443, "SSH-2.0-x\r\n", false, true, 21)).empty());
  EXPECT_TRUE(Feed(Sample("10.0.0.1", 40022, "10.0.0.2", 443, "SSH-2.0-y\r\n", false, true, 22)).empty());
  std::vector<std::string> got;
  for (const v1::Alert& a : TickAt(kT0 + absl::Seconds(1)))
    got.push_back(absl::StrCat(a.network().local_port(), " ", a.process().exe()));
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<std::string>{"40021 /usr/bin/bash", "40022 /usr/bin/ssh"}));
}

TEST_F(InspectorTest, RealTlsBothWaysRaisesNothing) {
  Own(8, 100, "/usr/bin/curl");
  const auto bytes = [](absl::Span<const uint8_t> b) { return std::string(b.begin(), b.end()); };
  const std::string hello = bytes(samples::kTls13ClientHello),
                    server_hello = bytes(samples::kTls13ServerHello);
  // 256 bytes each way complete both sides: judged at once, not at a tick.
  EXPECT_TRUE(Feed(Sample("10.0.0.1", 40001, "10.0.0.2", 443, hello.substr(0, 256), false, true, 8)).empty());
  EXPECT_EQ(inspector_->flows_judged(), 0u);
  EXPECT_TRUE(Feed(Sample("10.0.0.2", 443, "10.0.0.1", 40001, server_hello.substr(0, 256), true, false, 8)).empty());
  EXPECT_EQ(inspector_->flows_judged(), 1u);
  for (const v1::Alert& a : TickAt(kT0 + absl::Seconds(1))) ADD_FAILURE() << a.summary();
}

TEST_F(InspectorTest, ServerSeenFirstStillUsesTheTablePort) {
  // A UDP answer from port 53 seen before any query: the table's port tells
  // which side serves, and DNS on 53 is fine.
  std::string answer("\x12\x34\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x00\x00\x01\x00\x01", 21);
  Feed(Sample("10.0.0.53", 53, "10.0.0.1", 5353, answer, true, true, 0, 0, v1::PROTOCOL_UDP));
  for (const v1::Alert& a : TickAt(kT0 + absl::Seconds(1))) EXPECT_NE(a.rule(), "protocol_port_mismatch") << a.summary();
  EXPECT_EQ(inspector_->flows_judged(), 1u);
}

TEST_F(InspectorTest, ProtocolChangeOnAnUnlistedPort) {
  Own(9, 300, "/opt/agent");
  Feed(Sample("10.0.0.1", 40002, "10.0.0.2", 9000, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", false, true, 9));
  EXPECT_TRUE(TickAt(kT0 + absl::Seconds(1)).empty());  // learned: http on 9000
  Own(10, 301, "/opt/agent");
  Feed(Sample("10.0.0.1", 40003, "10.0.0.2", 9000, "SSH-2.0-x_1\r\n", false, true, 10));
  const auto alerts = TickAt(kT0 + absl::Seconds(2));
  ASSERT_EQ(alerts.size(), 1u);
  EXPECT_EQ(alerts[0].rule(), "protocol_change");
  EXPECT_EQ(alerts[0].process().pid(), 301u);
  EXPECT_EQ(alerts[0].inspection().previous(), "http");
  EXPECT_EQ(alerts[0].inspection().observed(), "ssh");
}

TEST_F(InspectorTest, OrphansCountedPerSourceAgainstTheThreshold) {
  PacketRecord o;
  o.kind = PacketRecord::kOrphan;
  o.protocol = v1::PROTOCOL_TCP;
  o.src_ip = "10.0.0.9";
  o.src_addr = V4("10.0.0.9");
  o.dst_ip = "10.0.0.1";
  o.dst_addr = V4("10.0.0.1");
  o.dst_port = 22;
  o.pattern = SW_ORPHAN_TCP_ACK;
  Own(0, 55, "/usr/sbin/sshd", v1::NETWORK_KIND_LISTEN, 22);
  Feed(o);
  OrphanSource src;
  src.addr.assign(16, 0);
  std::copy(o.src_addr.begin(), o.src_addr.end(), src.addr.begin());
  src.counts[SW_ORPHAN_TCP_ACK] = 19;
  EXPECT_TRUE(TickAt(kT0 + absl::Seconds(1), {src}).empty());  // under the threshold
  src.counts[SW_ORPHAN_TCP_ACK] = 30;
  src.counts[SW_ORPHAN_TCP_NULL] = 2;
  const auto alerts = TickAt(kT0 + absl::Seconds(2), {src});
  ASSERT_EQ(alerts.size(), 1u);
  const v1::Alert& a = alerts[0];
  EXPECT_EQ(a.rule(), "orphan_packets");
  EXPECT_EQ(a.inspection().source_ip(), "10.0.0.9");
  EXPECT_EQ(a.inspection().orphan_total(), 32u);
  ASSERT_EQ(a.inspection().orphans_size(), 2);
  EXPECT_EQ(a.inspection().orphans(0).pattern(), "null");
  EXPECT_EQ(a.inspection().orphans(1).pattern(), "ack");
  EXPECT_EQ(a.inspection().orphans(1).packets(), 30u);
  EXPECT_EQ(a.process().pid(), 55u);  // the listener the packets hit
  // The count starts again after an alert: 5 more is not another.
  src.counts[SW_ORPHAN_TCP_ACK] = 35;
  EXPECT_TRUE(TickAt(kT0 + absl::Seconds(3), {src}).empty());
}

TEST_F(InspectorTest, UnsolicitedDnsAnswerNamesTheSocketOwner) {
  Own(0, 77, "/usr/bin/resolver", v1::NETWORK_KIND_UDP_RECV, 5353, v1::PROTOCOL_UDP);
  PacketRecord o;
  o.kind = PacketRecord::kOrphan;
  o.protocol = v1::PROTOCOL_UDP;
  o.src_ip = "10.0.0.66";
  o.src_addr = V4("10.0.0.66");
  o.src_port = 53;
  o.dst_ip = "10.0.0.1";
  o.dst_addr = V4("10.0.0.1");
  o.dst_port = 5353;
  o.pattern = SW_ORPHAN_DNS_ANSWER;
  Feed(o);
  const auto alerts = TickAt(kT0 + absl::Seconds(1));
  ASSERT_EQ(alerts.size(), 1u);
  EXPECT_EQ(alerts[0].rule(), "gratuitous_traffic");
  EXPECT_EQ(alerts[0].process().pid(), 77u);
  EXPECT_EQ(alerts[0].network().local_port(), 5353u);
  EXPECT_EQ(alerts[0].inspection().orphans(0).pattern(), "dns_answer");
}

TEST(SampleHeadTest, EscapesEverythingNotPrintable) {
  EXPECT_EQ(SampleHead(std::string("GET \x1b[2J\\\n\xff", 11)), "GET \\x1b[2J\\x5c\\x0a\\xff");
  EXPECT_EQ(SampleHead(std::string(100, 'a'), 8), "aaaaaaaa");
}

}  // namespace
}  // namespace sockwatch
