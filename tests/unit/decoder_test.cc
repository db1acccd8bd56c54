#include "agent/decoder.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"

extern "C" {
#include "sockwatch_events.h"
}

namespace sockwatch {
namespace {

constexpr uint64_t kStart = 1'000'000'000;

// A string literal with its embedded NULs, without the terminating one.
template <size_t N>
std::string S(const char (&lit)[N]) {
  return std::string(lit, N - 1);
}

std::vector<uint8_t> ExecRecord(uint32_t pid, absl::string_view path_rev, absl::string_view argv,
                                uint32_t flags = 0) {
  sw_exec e{};
  e.hdr.kind = SW_KIND_EXEC;
  e.hdr.ts_ns = 2 * kStart;
  e.task.tgid = e.task.pid = pid;
  e.task.start_ns = kStart;
  e.task.uid = 1000;
  e.task.cgroup_id = 77;
  std::memcpy(e.task.comm, "curl", 4);
  e.ppid = 1;
  e.flags = flags;
  e.path_len = path_rev.size();
  e.argv_len = argv.size();
  e.argv_full_len = argv.size();
  std::memcpy(e.data, path_rev.data(), path_rev.size());
  std::memcpy(e.data + path_rev.size(), argv.data(), argv.size());
  const size_t size = offsetof(sw_exec, data) + path_rev.size() + argv.size();
  e.hdr.size = size;
  const auto* p = reinterpret_cast<const uint8_t*>(&e);
  return std::vector<uint8_t>(p, p + size);
}

sw_net NetRecord(uint32_t pid) {
  sw_net n{};
  n.hdr.kind = SW_KIND_TCP_CONNECT;
  n.hdr.size = sizeof(n);
  n.hdr.ts_ns = 3 * kStart;
  n.task.tgid = n.task.pid = pid;
  n.task.start_ns = kStart;
  n.task.uid = 1000;
  n.family = AF_INET;
  n.protocol = IPPROTO_TCP;
  n.direction = SW_DIR_OUTBOUND;
  inet_pton(AF_INET, "10.1.0.1", n.saddr);
  inet_pton(AF_INET, "10.1.0.2", n.daddr);
  n.sport = 40000;
  n.dport = 80;
  return n;
}

template <typename T>
absl::Span<const uint8_t> Bytes(const T& v) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(&v), sizeof(v));
}

class DecoderTest : public ::testing::Test {
 protected:
  ProcessTable table_;
  BootClock clock_{0};
  Decoder dec_{&table_, &clock_};
  v1::Envelope scratch_;
};

TEST_F(DecoderTest, ExecThenConnectIsAttributed) {
  std::string argv = S("curl\0-s\0http://x/\0");
  auto rec = ExecRecord(321, S("curl\0bin\0usr\0"), argv);
  v1::Envelope env;
  ASSERT_TRUE(*dec_.Decode(rec, &env));
  EXPECT_EQ(env.exec().process().exe(), "/usr/bin/curl");
  ASSERT_EQ(env.exec().process().argv_size(), 3);
  EXPECT_EQ(env.exec().process().argv(2), "http://x/");

  v1::Envelope net;
  ASSERT_TRUE(*dec_.Decode(Bytes(NetRecord(321)), &net));
  const auto& n = net.network();
  EXPECT_EQ(n.kind(), v1::NETWORK_KIND_CONNECT);
  EXPECT_EQ(n.local_ip(), "10.1.0.1");
  EXPECT_EQ(n.remote_ip(), "10.1.0.2");
  EXPECT_EQ(n.remote_port(), 80u);
  EXPECT_EQ(n.outcome(), v1::OUTCOME_ESTABLISHED);
  EXPECT_EQ(n.direction(), v1::DIRECTION_OUTBOUND);
  EXPECT_EQ(n.process().exe(), "/usr/bin/curl");
  EXPECT_EQ(n.process().argv_size(), 3);
  EXPECT_FALSE(n.process().unknown());
  EXPECT_EQ(n.community_id().substr(0, 2), "1:");
  EXPECT_EQ(net.time().seconds(), 3);
}

TEST_F(DecoderTest, RefusedConnectAndUnknownProcess) {
  sw_net n = NetRecord(999);
  n.outcome = ECONNREFUSED;
  v1::Envelope env;
  ASSERT_TRUE(*dec_.Decode(Bytes(n), &env));
  EXPECT_EQ(env.network().outcome(), v1::OUTCOME_REFUSED);
  EXPECT_EQ(env.network().error_code(), ECONNREFUSED);
  EXPECT_TRUE(env.network().process().unknown());
  EXPECT_EQ(env.network().process().pid(), 999u);
  EXPECT_EQ(dec_.unattributed(), 1u);
}

TEST_F(DecoderTest, DualStackSocketTalkingIpv4IsReportedAsIpv4) {
  sw_net n = NetRecord(1);
  n.family = AF_INET6;
  inet_pton(AF_INET6, "::ffff:10.1.0.1", n.saddr);
  inet_pton(AF_INET6, "::ffff:10.1.0.2", n.daddr);
  v1::Envelope env;
  ASSERT_TRUE(*dec_.Decode(Bytes(n), &env));
  EXPECT_EQ(env.network().ip_version(), 4u);
  EXPECT_EQ(env.network().local_ip(), "10.1.0.1");
  EXPECT_EQ(env.network().remote_ip(), "10.1.0.2");
  v1::Envelope v4;
  ASSERT_TRUE(*dec_.Decode(Bytes(NetRecord(1)), &v4));
  EXPECT_EQ(env.network().community_id(), v4.network().community_id());
  // A real IPv6 flow stays IPv6.
  inet_pton(AF_INET6, "fd00::1", n.saddr);
  inet_pton(AF_INET6, "fd00::2", n.daddr);
  ASSERT_TRUE(*dec_.Decode(Bytes(n), &env));
  EXPECT_EQ(env.network().ip_version(), 6u);
  EXPECT_EQ(env.network().remote_ip(), "fd00::2");
}

TEST_F(DecoderTest, SizeChecks) {
  v1::Envelope env;
  uint8_t tiny[4] = {};
  EXPECT_FALSE(dec_.Decode(tiny, &env).ok());
  sw_net n = NetRecord(1);
  n.hdr.size = sizeof(n) + 8;  // header lies about the size
  EXPECT_FALSE(dec_.Decode(Bytes(n), &env).ok());
  n.hdr.size = sizeof(n) - 8;  // a short network record
  EXPECT_FALSE(dec_.Decode(absl::MakeConstSpan(Bytes(n).data(), sizeof(n) - 8), &env).ok());
  n = NetRecord(1);
  n.family = 1;  // AF_UNIX
  EXPECT_FALSE(dec_.Decode(Bytes(n), &env).ok());
  auto rec = ExecRecord(5, S("x\0"), S("x\0"));
  reinterpret_cast<sw_exec*>(rec.data())->argv_len = 500;  // lengths beyond the record
  EXPECT_FALSE(dec_.Decode(rec, &env).ok());
}

TEST_F(DecoderTest, UnknownKindsAreSkippedAndCounted) {
  sw_header h{};
  h.kind = 999;
  h.size = sizeof(h);
  v1::Envelope env;
  auto r = dec_.Decode(Bytes(h), &env);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(*r);
  EXPECT_EQ(dec_.unknown_kinds(), 1u);
}

TEST_F(DecoderTest, OddCommandLinesAreKeptExactly) {
  std::string argv = S("sh\0-c\0echo \x1b[2J\nbad \xFF\0");
  auto rec = ExecRecord(7, S("sh\0bin\0"), argv, SW_EXEC_ARGV_TRUNCATED);
  v1::Envelope env;
  ASSERT_TRUE(*dec_.Decode(rec, &env));
  const auto& p = env.exec().process();
  ASSERT_EQ(p.argv_size(), 3);
  EXPECT_EQ(p.argv(2), "echo \x1b[2J\nbad \xEF\xBF\xBD");  // valid UTF-8 for the proto
  ASSERT_EQ(p.argv_raw_size(), 3);
  EXPECT_EQ(p.argv_raw(2), "echo \x1b[2J\nbad \xFF");  // the exact bytes
  EXPECT_TRUE(p.argv_truncated());
}

TEST_F(DecoderTest, ForkInheritsAndExitKeepsIdentity) {
  ASSERT_TRUE(*dec_.Decode(ExecRecord(10, S("nginx\0"), S("nginx\0")),
                           &scratch_));
  sw_fork f{};
  f.hdr.kind = SW_KIND_FORK;
  f.hdr.size = sizeof(f);
  f.child.tgid = f.child.pid = 11;
  f.child.start_ns = 5 * kStart;
  f.ppid = 10;
  f.parent_start_ns = kStart;
  v1::Envelope env;
  ASSERT_TRUE(*dec_.Decode(Bytes(f), &env));
  EXPECT_EQ(env.fork().process().exe(), "/nginx");
  EXPECT_EQ(env.fork().process().ppid(), 10u);
  sw_exit x{};
  x.hdr.kind = SW_KIND_EXIT;
  x.hdr.size = sizeof(x);
  x.task = f.child;
  x.exit_code = 256;
  v1::Envelope ex;
  ASSERT_TRUE(*dec_.Decode(Bytes(x), &ex));
  EXPECT_EQ(ex.exit().process().exe(), "/nginx");
  EXPECT_EQ(ex.exit().exit_code(), 256);
}

TEST(DecoderHelpersTest, PathsAndArgv) {
  EXPECT_EQ(JoinReversedPath(S("true\0bin\0usr\0")), "/usr/bin/true");
  EXPECT_EQ(JoinReversedPath(""), "/");
  EXPECT_EQ(SplitArgv(S("a\0\0b\0")), (std::vector<std::string>{"a", "", "b"}));
  EXPECT_EQ(SplitArgv(S("no-final-nul")), (std::vector<std::string>{"no-final-nul"}));
  EXPECT_TRUE(SplitArgv("").empty());
}

}  // namespace
}  // namespace sockwatch
