// The tc records (packet.bpf.c): payload samples and orphan packets, with
// their size checks.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>
#include <vector>

#include "agent/decoder.h"
#include "gtest/gtest.h"

extern "C" {
#include "sockwatch_events.h"
}

namespace sockwatch {
namespace {

template <typename T>
std::vector<uint8_t> Bytes(const T& rec) {
  const auto* p = reinterpret_cast<const uint8_t*>(&rec);
  return std::vector<uint8_t>(p, p + sizeof(rec));
}

sw_payload Payload() {
  sw_payload r{};
  r.hdr.kind = SW_KIND_PAYLOAD;
  r.hdr.size = sizeof(r);
  r.hdr.ts_ns = 42;
  r.task.tgid = 1234;
  r.task.start_ns = 99;
  r.family = AF_INET;
  r.protocol = IPPROTO_TCP;
  r.direction = SW_DIR_OUTBOUND;
  inet_pton(AF_INET, "10.0.0.1", r.saddr);
  inet_pton(AF_INET, "10.0.0.2", r.daddr);
  r.sport = 40000;
  r.dport = 443;
  r.ifindex = 7;
  r.sock_cookie = 555;
  r.offset = 0;
  r.wire_len = 300;
  r.len = 5;
  r.from_client = 1;
  std::memcpy(r.data, "\x16\x03\x01\x01\x00", 5);
  return r;
}

TEST(DecoderPacketTest, PayloadSample) {
  const std::vector<uint8_t> rec = Bytes(Payload());
  ASSERT_TRUE(Decoder::IsPacket(rec));
  auto r = Decoder::DecodePacket(rec);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->kind, PacketRecord::kPayload);
  EXPECT_EQ(r->src_ip, "10.0.0.1");
  EXPECT_EQ(r->dst_ip, "10.0.0.2");
  EXPECT_EQ(r->src_addr.size(), 4u);
  EXPECT_EQ(r->src_port, 40000);
  EXPECT_EQ(r->dst_port, 443);
  EXPECT_FALSE(r->ingress);
  EXPECT_TRUE(r->from_client);
  EXPECT_EQ(r->protocol, v1::PROTOCOL_TCP);
  EXPECT_EQ(r->cookie, 555u);
  EXPECT_EQ(r->owner_tgid, 1234u);
  EXPECT_EQ(r->wire_len, 300u);
  EXPECT_EQ(r->data, std::string("\x16\x03\x01\x01\x00", 5));
  EXPECT_EQ(r->boot_ns, 42u);
}

TEST(DecoderPacketTest, OrphanPacketOverIpv6) {
  sw_orphan o{};
  o.hdr.kind = SW_KIND_ORPHAN;
  o.hdr.size = sizeof(o);
  o.family = AF_INET6;
  o.protocol = IPPROTO_TCP;
  inet_pton(AF_INET6, "fd00::1", o.saddr);
  inet_pton(AF_INET6, "fd00::2", o.daddr);
  o.sport = 1234;
  o.dport = 22;
  o.pattern = SW_ORPHAN_TCP_XMAS;
  o.tcp_flags = 0x29;
  o.source_total = 17;
  auto r = Decoder::DecodePacket(Bytes(o));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->kind, PacketRecord::kOrphan);
  EXPECT_EQ(r->src_ip, "fd00::1");
  EXPECT_EQ(r->src_addr.size(), 16u);
  EXPECT_TRUE(r->ingress);
  EXPECT_EQ(r->pattern, SW_ORPHAN_TCP_XMAS);
  EXPECT_STREQ(OrphanPatternName(r->pattern), "xmas");
  EXPECT_EQ(r->source_total, 17u);
}

TEST(DecoderPacketTest, BadRecordsAreErrorsNotCrashes) {
  std::vector<uint8_t> rec = Bytes(Payload());
  rec.resize(rec.size() - 1);  // short
  EXPECT_FALSE(Decoder::DecodePacket(rec).ok());
  sw_payload big = Payload();
  big.len = SW_SAMPLE_MAX + 1;  // says more than it holds
  EXPECT_FALSE(Decoder::DecodePacket(Bytes(big)).ok());
  sw_payload fam = Payload();
  fam.family = 99;
  EXPECT_FALSE(Decoder::DecodePacket(Bytes(fam)).ok());
  EXPECT_FALSE(Decoder::DecodePacket(std::vector<uint8_t>(4)).ok());
  EXPECT_FALSE(Decoder::IsPacket(std::vector<uint8_t>(1)));
  EXPECT_STREQ(OrphanPatternName(SW_ORPHAN_MAX), "unknown");
}

}  // namespace
}  // namespace sockwatch
