#include "agent/protocols.h"

#include <random>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "agent/protocols_internal.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/protocol_samples.h"

namespace sockwatch {
namespace {

using samples::kProtocolSamples;
using ::testing::HasSubstr;
using Bytes = std::vector<uint8_t>;

Bytes B(absl::string_view s) { return Bytes(s.begin(), s.end()); }
Bytes B(absl::Span<const uint8_t> s) { return Bytes(s.begin(), s.end()); }

Verdict Tcp(const Bytes& b, bool truncated = false) {
  return Classify(b, Transport::kTcp, truncated);
}
Verdict Udp(const Bytes& b, bool truncated = false) {
  return Classify(b, Transport::kUdp, truncated);
}

// What a user reading the alert relies on: no terminal control bytes, no
// raw sample bytes, plain ASCII.
bool PrintableAscii(absl::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) return false;
  }
  return true;
}

std::string Describe(const Verdict& v) {
  return std::string(ProtoName(v.protocol)) + (v.malformed ? " malformed: " + v.reason : "");
}

TEST(ProtocolNames, RoundTrip) {
  for (Proto p :
       {Proto::kUnknown, Proto::kTls, Proto::kHttp, Proto::kSsh, Proto::kDns, Proto::kSmtp}) {
    EXPECT_EQ(ProtoFromName(ProtoName(p)), p) << ProtoName(p);
  }
  EXPECT_STREQ(ProtoName(Proto::kTls), "tls");
  EXPECT_STREQ(ProtoName(Proto::kSmtp), "smtp");
  EXPECT_EQ(ProtoFromName("TLS"), std::nullopt);
  EXPECT_EQ(ProtoFromName("ftp"), std::nullopt);
  EXPECT_EQ(ProtoFromName(""), std::nullopt);
}

TEST(ProtocolClassify, EveryRealSampleIsRecognisedAndWellFormed) {
  ASSERT_GE(std::size(kProtocolSamples), 15u);
  for (const auto& s : kProtocolSamples) {
    const Verdict v = Classify(s.bytes, s.transport, s.truncated);
    EXPECT_EQ(v.protocol, s.proto) << s.name << ": " << Describe(v);
    EXPECT_FALSE(v.malformed) << s.name << ": " << v.reason;
    EXPECT_TRUE(v.reason.empty()) << s.name;
  }
}

// The kernel hands over 256 bytes by default; shorter samples come from
// small captures or early closes. Neither makes a real sample malformed.
TEST(ProtocolClassify, TruncatedRealSamplesAreNotMalformed) {
  for (const auto& s : kProtocolSamples) {
    for (size_t n : {256, 64, 16}) {
      if (n >= s.bytes.size()) continue;
      const Verdict v = Classify(s.bytes.first(n), s.transport, true);
      EXPECT_EQ(v.protocol, s.proto) << s.name << " at " << n << ": " << Describe(v);
      EXPECT_FALSE(v.malformed) << s.name << " at " << n << ": " << v.reason;
    }
    // Every cut point: a prefix of a valid sample is never malformed.
    for (size_t n = 1; n < s.bytes.size(); ++n) {
      const Verdict v = Classify(s.bytes.first(n), s.transport, true);
      ASSERT_FALSE(v.malformed) << s.name << " at " << n << ": " << v.reason;
      if (v.protocol != Proto::kUnknown) {
        ASSERT_EQ(v.protocol, s.proto) << s.name << " at " << n;
      }
    }
  }
}

TEST(ProtocolClassify, EmptyIsUnknown) {
  EXPECT_EQ(Tcp({}).protocol, Proto::kUnknown);
  EXPECT_EQ(Udp({}, true).protocol, Proto::kUnknown);
  EXPECT_FALSE(Tcp({}).malformed);
}

const auto& Sample(absl::string_view name) {
  for (const auto& s : kProtocolSamples) {
    if (name == s.name) return s;
  }
  ADD_FAILURE() << "no sample " << name;
  return kProtocolSamples[0];
}

void ExpectMalformed(const Verdict& v, Proto p, absl::string_view reason_part) {
  EXPECT_EQ(v.protocol, p) << Describe(v);
  EXPECT_TRUE(v.malformed) << Describe(v);
  EXPECT_THAT(v.reason, HasSubstr(std::string(reason_part)));
  EXPECT_TRUE(PrintableAscii(v.reason)) << v.reason;
}

TEST(ProtocolTls, BrokenRecordVersion) {
  Bytes b = B(Sample("tls13_client_hello").bytes);
  b[1] = 0x09;
  b[2] = 0x09;
  ExpectMalformed(Tcp(b), Proto::kTls, "TLS record version 0x0909");
  b = B(Sample("tls12_server_hello").bytes);
  b[2] = 0x05;
  ExpectMalformed(Tcp(b, true), Proto::kTls, "TLS record version 0x0305");
}

TEST(ProtocolTls, ClientHelloFields) {
  const Bytes hello = B(Sample("tls13_client_hello").bytes);
  // record(5) type(1) length(3) version(2) random(32), then the session id.
  constexpr size_t kSid = 5 + 4 + 2 + 32;
  Bytes b = hello;
  b[kSid] = 200;
  ExpectMalformed(Tcp(b), Proto::kTls, "session id length 200");
  b = hello;
  b[9] = 0x02;  // legacy_version 0x0203
  ExpectMalformed(Tcp(b), Proto::kTls, "ClientHello version 0x0203");
  // A 256-byte cut is still checked where it has the fields.
  b.resize(256);
  ExpectMalformed(Tcp(b, true), Proto::kTls, "ClientHello version");
  b = hello;
  const size_t suites = kSid + 1 + hello[kSid];
  b[suites + 1] |= 1;  // odd cipher suites length
  ExpectMalformed(Tcp(b), Proto::kTls, "cipher suites length");
  b = hello;
  b[5] = 11;  // a Certificate before any hello
  ExpectMalformed(Tcp(b), Proto::kTls, "message type 11");
}

TEST(ProtocolTls, LengthsMustAgree) {
  const Bytes hello = B(Sample("tls12_client_hello").bytes);
  // The hello's last 8 bytes cut from its record: when the sample ends
  // there, it is short, not malformed; when a CCS record follows, the
  // hello was cut by another record type.
  Bytes b(hello.begin(), hello.begin() + 5 + ((hello[3] << 8) | hello[4]));
  b.resize(b.size() - 8);
  b[4] -= 8;  // 183 bytes: no borrow
  EXPECT_FALSE(Tcp(b).malformed) << Describe(Tcp(b));
  b.insert(b.end(), {0x14, 0x03, 0x03, 0x00, 0x01, 0x01});
  ExpectMalformed(Tcp(b), Proto::kTls, "cut by another record type");
  // Extensions length that does not fill the message.
  b = hello;
  // Walk to the extensions length: past the session id, suites and methods.
  size_t pos = 5 + 4 + 2 + 32;
  pos += 1 + b[pos];
  pos += 2 + ((b[pos] << 8) | b[pos + 1]);
  pos += 1 + b[pos];
  b[pos + 1] -= 1;
  ExpectMalformed(Tcp(b), Proto::kTls, "extensions length");
  b = {0x16, 0x03, 0x01, 0x00, 0x00};
  ExpectMalformed(Tcp(b), Proto::kTls, "record length 0");
  b = {0x16, 0x03, 0x01, 0x50, 0x00, 0x01};
  ExpectMalformed(Tcp(b, true), Proto::kTls, "record length 20480");
}

TEST(ProtocolTls, OtherRecordTypesClaimTls) {
  EXPECT_EQ(Tcp({0x17, 0x03, 0x03, 0x00, 0x10, 1, 2, 3}, true).protocol, Proto::kTls);
  EXPECT_EQ(Tcp({0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28}).protocol, Proto::kTls);
  EXPECT_FALSE(Tcp({0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28}).malformed);
  EXPECT_EQ(Tcp({0x18, 0x03, 0x03}).protocol, Proto::kUnknown);
}

TEST(ProtocolHttp, RealLinesAndOtherMethods) {
  EXPECT_EQ(Tcp(B("HEAD /x HTTP/1.0\r\n\r\n")).protocol, Proto::kHttp);
  EXPECT_FALSE(Tcp(B("PROPFIND /dav/ HTTP/1.1\r\nHost: a\r\n\r\n")).malformed);
  EXPECT_EQ(Tcp(B("PROPFIND /dav/ HTTP/1.1\r\nHost: a\r\n\r\n")).protocol, Proto::kHttp);
  // An unknown token without a valid request line is not HTTP at all.
  EXPECT_EQ(Tcp(B("HELLO world\r\n")).protocol, Proto::kUnknown);
  EXPECT_FALSE(Tcp(B("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")).malformed);
  EXPECT_FALSE(Tcp(B("HTTP/1.1 204\r\n\r\n")).malformed);
  EXPECT_FALSE(Tcp(B("GET")).malformed);  // too short to judge
  EXPECT_FALSE(Tcp(B("GET /")).malformed);
}

TEST(ProtocolHttp, Broken) {
  ExpectMalformed(Tcp(B("GET / HTTP/9.9\r\nHost: a\r\n\r\n")), Proto::kHttp,
                  "HTTP version 'HTTP/9.9'");
  ExpectMalformed(Tcp(B("GET /a\x01z HTTP/1.1\r\n\r\n")), Proto::kHttp,
                  "control character 0x01 in the request target");
  ExpectMalformed(Tcp(B("GET /a b HTTP/1.1\r\n\r\n")), Proto::kHttp, "space in the request target");
  ExpectMalformed(Tcp(B("GET /index.html\r\n")), Proto::kHttp, "no HTTP version");
  ExpectMalformed(Tcp(B("GET /index.html HTTP/1.1")), Proto::kHttp, "not terminated");
  ExpectMalformed(Tcp(B("HTTP/1.1 2x0 OK\r\n")), Proto::kHttp, "status code '2x0'");
  ExpectMalformed(Tcp(B("HTTP/1.1 200 O\x1b[2JK\r\n")), Proto::kHttp, "control character 0x1b");
  // A hostile version string comes back escaped, never raw.
  ExpectMalformed(Tcp(B("GET / HTTP/1.1\x1b]0;pwned\x07\r\n")), Proto::kHttp, "\\x1b]0;pwned\\x07");
}

TEST(ProtocolSsh, Banners) {
  EXPECT_FALSE(Tcp(B("SSH-1.99-OpenSSH_3.9\r\n")).malformed);
  EXPECT_FALSE(Tcp(B("SSH-2.0-Cisco-1.25\r\n")).malformed);  // '-' tolerated, see parser
  EXPECT_FALSE(Tcp(B("SSH-2.0-dropbear_2022.83\n")).malformed);
  ExpectMalformed(Tcp(B("SSH-3.0-x\r\n")), Proto::kSsh, "SSH protocol version '3.0'");
  ExpectMalformed(Tcp(B("SSH-2.0-\r\n")), Proto::kSsh, "empty SSH software version");
  ExpectMalformed(Tcp(B(absl::string_view("SSH-2.0-a\0b\r\n", 13))), Proto::kSsh,
                  "control character 0x00");
  ExpectMalformed(Tcp(B("SSH-2.0-x " + std::string(300, 'a'))), Proto::kSsh, "longer than 255");
  // The KEXINIT packet after the banner is framed: a wild length is not SSH.
  Bytes b = B(Sample("ssh_client").bytes);
  b[40] = 0x7f;
  ExpectMalformed(Tcp(b, true), Proto::kSsh, "SSH packet length");
}

TEST(ProtocolSmtp, RepliesAndCommands) {
  EXPECT_FALSE(Tcp(B("220-mx.example.org ESMTP\r\n220 ready\r\n")).malformed);
  EXPECT_EQ(Tcp(B("554 no service\r\n")).protocol, Proto::kSmtp);
  EXPECT_FALSE(Tcp(B("HELO relay.example.org\r\n")).malformed);
  ExpectMalformed(Tcp(B("22x greeting\r\n")), Proto::kSmtp, "SMTP reply code '22x'");
  ExpectMalformed(Tcp(B("220_mx ESMTP\r\n")), Proto::kSmtp, "separator 0x5f");
  ExpectMalformed(Tcp(B("220 mx\x1b[31m ESMTP\r\n")), Proto::kSmtp, "control character 0x1b");
  ExpectMalformed(Tcp(B("220-mx\r\n250 ok\r\n")), Proto::kSmtp, "inside a multi-line 220 reply");
  ExpectMalformed(Tcp(B("EHLO \r\n")), Proto::kSmtp, "EHLO without a domain");
}

// A query for a.example with its first label `len` bytes long.
Bytes DnsQuery(size_t len) {
  Bytes b = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
  b.push_back(static_cast<uint8_t>(len));
  b.insert(b.end(), len, 'a');
  b.insert(b.end(), {7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0, 0, 1, 0, 1});
  return b;
}

TEST(ProtocolDns, Structure) {
  EXPECT_EQ(Udp(DnsQuery(63)).protocol, Proto::kDns);
  EXPECT_FALSE(Udp(DnsQuery(63)).malformed);
  ExpectMalformed(Udp(DnsQuery(70)), Proto::kDns, "DNS label length 70");
  Bytes tcp = DnsQuery(70);
  tcp.insert(tcp.begin(), {0, static_cast<uint8_t>(tcp.size())});
  ExpectMalformed(Tcp(tcp), Proto::kDns, "DNS label length 70");
  // Cut datagram: the name runs off a whole message, not off a capture.
  Bytes cut = DnsQuery(10);
  cut.resize(18);
  ExpectMalformed(Udp(cut), Proto::kDns, "runs past the end");
  EXPECT_FALSE(Udp(cut, true).malformed);
  Bytes ptr = DnsQuery(1);
  ptr[12] = 0xc0;
  ptr[13] = 0x0c;
  ExpectMalformed(Udp(ptr), Proto::kDns, "compression pointer");
  Bytes cls = DnsQuery(3);
  cls[cls.size() - 1] = 9;
  ExpectMalformed(Udp(cls), Proto::kDns, "DNS question class 9");
  // A long name: four 63-byte labels and more.
  Bytes name = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
  for (int i = 0; i < 5; ++i) {
    name.push_back(63);
    name.insert(name.end(), 63, 'x');
  }
  name.insert(name.end(), {0, 0, 1, 0, 1});
  ExpectMalformed(Udp(name), Proto::kDns, "longer than 255");
  // Not DNS: a header with an unassigned opcode, or no questions.
  Bytes op = DnsQuery(3);
  op[2] = 0x18;  // opcode 3
  EXPECT_EQ(Udp(op).protocol, Proto::kUnknown);
  Bytes none = DnsQuery(3);
  none[5] = 0;
  EXPECT_EQ(Udp(none).protocol, Proto::kUnknown);
}

TEST(ProtocolDns, TextAndTlsNeverClassifyAsDns) {
  std::vector<Bytes> inputs;
  for (const auto& s : kProtocolSamples) {
    if (s.proto != Proto::kDns) inputs.push_back(B(s.bytes));
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {  // printable text, the shape of HTTP
    Bytes b(1 + rng() % 300);
    for (auto& c : b) c = static_cast<uint8_t>(0x20 + rng() % 95);
    if (i % 2) b.insert(b.begin(), {'G', 'E', 'T', ' '});
    inputs.push_back(std::move(b));
  }
  for (const Bytes& b : inputs) {
    for (bool t : {false, true}) {
      EXPECT_NE(Tcp(b, t).protocol, Proto::kDns) << absl::string_view(
          reinterpret_cast<const char*>(b.data()), std::min<size_t>(b.size(), 40));
      ASSERT_NE(Udp(b, t).protocol, Proto::kDns);
    }
  }
}

// Random bytes: mostly unknown, and malformed claims are rare (a TLS record
// header needs 2 specific bytes, 4 in 65536).
TEST(ProtocolClassify, RandomBytesAreMostlyUnknown) {
  std::mt19937 rng(12345);
  constexpr int kSamples = 200000;
  int unknown = 0, malformed = 0;
  for (int i = 0; i < kSamples; ++i) {
    Bytes b(1 + rng() % 256);
    for (auto& c : b) c = static_cast<uint8_t>(rng());
    const Verdict v = Classify(b, i % 2 ? Transport::kTcp : Transport::kUdp, rng() % 2);
    unknown += v.protocol == Proto::kUnknown;
    malformed += v.malformed;
    ASSERT_TRUE(PrintableAscii(v.reason)) << v.reason;
    ASSERT_TRUE(v.malformed || v.reason.empty());
    ASSERT_TRUE(!v.malformed || !v.reason.empty());
  }
  EXPECT_GT(unknown, kSamples * 999 / 1000);
  EXPECT_LT(malformed, kSamples / 1000);
}

// Reasons from mutated real samples: never a control or raw byte.
TEST(ProtocolClassify, ReasonsArePrintableAscii) {
  std::mt19937 rng(99);
  int malformed = 0;
  for (int round = 0; round < 2000; ++round) {
    for (const auto& s : kProtocolSamples) {
      Bytes b = B(s.bytes);
      for (int k = 0; k < 3; ++k) b[rng() % b.size()] = static_cast<uint8_t>(rng());
      const Verdict v = Classify(b, s.transport, s.truncated);
      malformed += v.malformed;
      ASSERT_TRUE(PrintableAscii(v.reason)) << s.name << ": " << v.reason;
    }
  }
  EXPECT_GT(malformed, 1000);  // the mutations did reach the checks
  EXPECT_EQ(protocols_internal::Escape("a\x1b\\\x80z"), "a\\x1b\\x5c\\x80z");
}

}  // namespace
}  // namespace sockwatch
