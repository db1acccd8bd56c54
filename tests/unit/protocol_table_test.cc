#include "agent/protocol_table.h"

#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sockwatch {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ProtocolTable, DefaultHasTheWellKnownPorts) {
  const ProtocolTable& t = ProtocolTable::Default();
  struct Row {
    uint16_t port;
    Transport transport;
    Proto proto;
  };
  const Row rows[] = {
      {443, Transport::kTcp, Proto::kTls},   {80, Transport::kTcp, Proto::kHttp},
      {8080, Transport::kTcp, Proto::kHttp}, {22, Transport::kTcp, Proto::kSsh},
      {53, Transport::kUdp, Proto::kDns},    {53, Transport::kTcp, Proto::kDns},
      {25, Transport::kTcp, Proto::kSmtp},   {587, Transport::kTcp, Proto::kSmtp},
      {465, Transport::kTcp, Proto::kTls},   {993, Transport::kTcp, Proto::kTls},
      {995, Transport::kTcp, Proto::kTls},   {853, Transport::kTcp, Proto::kTls},
      {8443, Transport::kTcp, Proto::kTls},
  };
  EXPECT_GE(t.size(), std::size(rows));
  for (const Row& r : rows) {
    const PortRule* rule = t.Find(r.port, r.transport);
    ASSERT_NE(rule, nullptr) << r.port;
    EXPECT_EQ(rule->port, r.port);
    EXPECT_EQ(rule->transport, r.transport);
    EXPECT_THAT(rule->expect, ElementsAre(r.proto)) << r.port;
  }
  EXPECT_EQ(t.Find(443, Transport::kUdp), nullptr);
  EXPECT_EQ(t.Find(22, Transport::kUdp), nullptr);
  EXPECT_EQ(t.Find(12345, Transport::kTcp), nullptr);
  EXPECT_EQ(t.Find(0, Transport::kTcp), nullptr);
  EXPECT_EQ(t.Find(65535, Transport::kUdp), nullptr);
}

TEST(ProtocolTable, EmbeddedDefaultIsTheDeployFile) {
  auto file = ProtocolTable::Load(SOCKWATCH_PROTOCOLS_YAML);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->rules(), ProtocolTable::Default().rules());
  EXPECT_GE(file->size(), 13u);
}

TEST(ProtocolTable, ParseAndFind) {
  auto t = ProtocolTable::Parse(
      "# mine\n"
      "ports:\n"
      "  - {port: 8443, transport: tcp, expect: [tls, http]}\n"
      "  - port: 5353\n"
      "    transport: udp\n"
      "    expect: [dns]\n"
      "  - {port: 1, transport: tcp, expect: [ssh]}\n",
      "mine.yaml");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->size(), 3u);
  ASSERT_NE(t->Find(8443, Transport::kTcp), nullptr);
  EXPECT_THAT(t->Find(8443, Transport::kTcp)->expect, ElementsAre(Proto::kTls, Proto::kHttp));
  ASSERT_NE(t->Find(5353, Transport::kUdp), nullptr);
  EXPECT_NE(t->Find(1, Transport::kTcp), nullptr);
  EXPECT_EQ(t->Find(5353, Transport::kTcp), nullptr);
  auto empty = ProtocolTable::Parse("# c\n---\nports: []\n...\n", "empty.yaml");
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->size(), 0u);
}

TEST(ProtocolTable, ErrorsNameTheLine) {
  struct Case {
    const char* yaml;
    const char* want;  // source:line: and what
  };
  const Case cases[] = {
      {"ports:\n  - {port: 443, transport: tcp, expect: [tsl]}\n",
       "p.yaml:2: unknown protocol 'tsl'"},
      {"ports:\n  - {port: 443, transport: tcp, expect: [unknown]}\n",
       "p.yaml:2: unknown protocol 'unknown'"},
      {"ports:\n  - {port: 70000, transport: tcp, expect: [tls]}\n", "p.yaml:2: bad port '70000'"},
      {"ports:\n  - {port: 0, transport: tcp, expect: [tls]}\n", "p.yaml:2: bad port '0'"},
      {"ports:\n  - {port: https, transport: tcp, expect: [tls]}\n", "p.yaml:2: bad port 'https'"},
      {"ports:\n  - {port: -1, transport: tcp, expect: [tls]}\n", "p.yaml:2: bad port '-1'"},
      {"ports:\n  - {port: 443, transport: sctp, expect: [tls]}\n",
       "p.yaml:2: bad transport 'sctp'"},
      {"ports:\n  - {port: 443, transport: tcp, expect: [tls]}\n"
       "  - {port: 443, transport: tcp, expect: [http]}\n",
       "p.yaml:3: duplicate port 443/tcp (first at line 2)"},
      {"ports:\n  - {port: 443, transport: tcp, expect: [tls], except: [http]}\n",
       "p.yaml:2: unknown key 'except'"},
      {"ports:\n  - port: 443\n    transport: tcp\n    colour: blue\n    expect: [tls]\n",
       "p.yaml:4: unknown key 'colour'"},
      {"ports:\n  - {port: 443, expect: [tls]}\n", "p.yaml:2: missing the key 'transport'"},
      {"ports:\n  - {port: 443, transport: tcp, expect: []}\n",
       "p.yaml:2: expect: expected a non-empty"},
      {"ports:\n  - {port: 443, transport: tcp, expect: tls}\n",
       "p.yaml:2: expect: expected a non-empty"},
      {"ports:\n  - {port: 443, transport: tcp, expect: [tls, tls]}\n",
       "p.yaml:2: protocol 'tls' listed twice"},
      {"ports:\n  - port: 443\n    port: 80\n    transport: tcp\n    expect: [tls]\n", "p.yaml:3"},
      {"portz:\n  - {port: 443, transport: tcp, expect: [tls]}\n", "p.yaml:1: unknown key 'portz'"},
      {"ports: {port: 443}\n", "p.yaml:1: ports: expected a list"},
      {"ports:\n  - 443\n", "p.yaml:2: expected a map"},
      {"ports:\n  - {port: 443, transport: tcp, expect: [tls]\n", "p.yaml:"},
      {"", "p.yaml:1: empty file"},
      {"- 1\n", "p.yaml:1: expected a map with the key 'ports'"},
      {"ports: []\n---\nports: []\n", "p.yaml:2: more than one YAML document"},
      {"ports: []\n...\nports: []\n", "p.yaml:3: more than one YAML document"},
      {",", "p.yaml:1: empty file"},  // yaml-cpp's LoadAll never returns on this
      {",\n,\n", "p.yaml:"},
      {"ports:\n  - {port: 443, transport: tcp, expect: [\"\\e[31m\"]}\n", "'\\x1b[31m'"},
  };
  for (const Case& c : cases) {
    auto t = ProtocolTable::Parse(c.yaml, "p.yaml");
    ASSERT_FALSE(t.ok()) << c.yaml;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << c.yaml;
    EXPECT_THAT(std::string(t.status().message()), HasSubstr(c.want)) << c.yaml;
  }
}

TEST(ProtocolTable, LoadMissingFile) {
  auto t = ProtocolTable::Load("/nonexistent/protocols.yaml");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace sockwatch
