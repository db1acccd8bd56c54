#include "agent/baseline.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "gtest/gtest.h"

namespace sockwatch {
namespace {

Behavior Out(uint16_t port, AddrClass c = AddrClass::kPublic, v1::Protocol p = v1::PROTOCOL_TCP) {
  Behavior b;
  b.direction = v1::DIRECTION_OUTBOUND;
  b.protocol = p;
  b.port = port;
  b.addr_class = c;
  return b;
}

class BaselineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sw_baseline_XXXXXX";
    dir_ = mkdtemp(tmpl);
    path_ = dir_ + "/baseline.db";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::unique_ptr<Baseline> Open(absl::Duration learning = absl::ZeroDuration(), size_t max_images = 1000,
                                 size_t max_behaviors = 10000) {
    BaselineOptions o;
    o.path = path_;
    o.learning_period = learning;
    o.max_images = max_images;
    o.max_behaviors = max_behaviors;
    auto b = Baseline::Open(o);
    EXPECT_TRUE(b.ok()) << b.status();
    return std::move(*b);
  }
  std::string dir_, path_;
  absl::Time t0_ = absl::FromUnixSeconds(1'800'000'000);
};

TEST_F(BaselineTest, FirstUseThenNewBehaviorThenKnown) {
  auto b = Open();
  b->SeeImage("/usr/bin/curl", "aa", t0_);
  Observation o = b->Observe("/usr/bin/curl", "aa", Out(443), t0_ + absl::Seconds(1));
  EXPECT_TRUE(o.first_network);
  EXPECT_TRUE(o.new_behavior);
  EXPECT_FALSE(o.new_image);
  EXPECT_EQ(o.image_first_seen, t0_);
  EXPECT_EQ(o.known_behaviors, 0u);
  o = b->Observe("/usr/bin/curl", "aa", Out(443), t0_ + absl::Seconds(2));
  EXPECT_FALSE(o.first_network);
  EXPECT_FALSE(o.new_behavior);
  o = b->Observe("/usr/bin/curl", "aa", Out(4444), t0_ + absl::Seconds(3));
  EXPECT_FALSE(o.first_network);
  EXPECT_TRUE(o.new_behavior);
  EXPECT_EQ(o.known_behaviors, 1u);
  // Same port, other address class or protocol: new too.
  EXPECT_TRUE(b->Observe("/usr/bin/curl", "aa", Out(443, AddrClass::kPrivate), t0_).new_behavior);
  EXPECT_TRUE(b->Observe("/usr/bin/curl", "aa", Out(443, AddrClass::kPublic, v1::PROTOCOL_UDP), t0_).new_behavior);
  EXPECT_EQ(b->behaviors(), 4u);
}

TEST_F(BaselineTest, SurvivesRestartIncludingLearningStart) {
  {
    auto b = Open(absl::Hours(24));
    b->Observe("/usr/sbin/sshd", "s1", Out(22), t0_);
    ASSERT_TRUE(b->Flush().ok());
  }
  auto b = Open(absl::Hours(24));
  const absl::Time started = b->learning_started();
  EXPECT_EQ(b->images(), 1u);
  EXPECT_EQ(b->behaviors(), 1u);
  Observation o = b->Observe("/usr/sbin/sshd", "s1", Out(22), t0_ + absl::Hours(1));
  EXPECT_FALSE(o.first_network);
  EXPECT_FALSE(o.new_behavior);
  EXPECT_EQ(o.image_first_seen, t0_);
  b.reset();
  EXPECT_EQ(Open(absl::Hours(24))->learning_started(), started);  // learning is not restarted
}

TEST_F(BaselineTest, LearningWindow) {
  auto b = Open(absl::Hours(24));
  EXPECT_TRUE(b->Learning(absl::Now()));
  EXPECT_FALSE(b->Learning(absl::Now() + absl::Hours(25)));
  EXPECT_FALSE(Open(absl::ZeroDuration())->Learning(absl::Now()));
}

TEST_F(BaselineTest, ShaFacts) {
  auto b = Open();
  b->Observe("/usr/bin/curl", "sha-curl", Out(80), t0_);
  EXPECT_EQ(b->KeyWithSha("sha-curl", "/tmp/.x/curl"), "/usr/bin/curl");  // same bytes, new path
  EXPECT_EQ(b->KeyWithSha("sha-curl", "/usr/bin/curl"), "");
  Observation o = b->Observe("/usr/bin/curl", "sha-evil", Out(80), t0_);
  EXPECT_EQ(o.previous_sha256, "sha-curl");  // new bytes, known path
}

TEST_F(BaselineTest, EvictsLeastRecentlySeenAndCounts) {
  auto b = Open(absl::ZeroDuration(), 100, 100000);
  for (int i = 0; i < 150; ++i)
    b->Observe("/bin/img" + std::to_string(i), "", Out(80), t0_ + absl::Seconds(i));
  EXPECT_LE(b->images(), 100u);
  EXPECT_GE(b->evicted_images(), 50u);
  // The newest survive, the oldest went.
  EXPECT_FALSE(b->Observe("/bin/img149", "", Out(80), t0_ + absl::Seconds(200)).new_behavior);
  EXPECT_TRUE(b->Observe("/bin/img0", "", Out(80), t0_ + absl::Seconds(201)).first_network);
  ASSERT_TRUE(b->Flush().ok());
  const size_t kept = b->images();
  b.reset();
  EXPECT_EQ(Open(absl::ZeroDuration(), 100, 100000)->images(), kept);  // evictions reached the file
}

TEST_F(BaselineTest, RefusesANewerSchema) {
  Open().reset();
  sqlite3* db;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  sqlite3_exec(db, "UPDATE meta SET v='99' WHERE k='schema_version'", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  BaselineOptions o;
  o.path = path_;
  auto b = Baseline::Open(o);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("schema version 99"), std::string::npos);
}

TEST(AddressClassTest, Classes) {
  std::vector<Subnet> subnets = {{{10, 231, 0, 0}, 24}};
  EXPECT_EQ(ClassifyAddress("127.0.0.1", subnets), AddrClass::kLoopback);
  EXPECT_EQ(ClassifyAddress("::1", subnets), AddrClass::kLoopback);
  EXPECT_EQ(ClassifyAddress("10.231.0.9", subnets), AddrClass::kSameSubnet);
  EXPECT_EQ(ClassifyAddress("10.9.0.9", subnets), AddrClass::kPrivate);
  EXPECT_EQ(ClassifyAddress("192.168.1.1", subnets), AddrClass::kPrivate);
  EXPECT_EQ(ClassifyAddress("172.20.0.1", subnets), AddrClass::kPrivate);
  EXPECT_EQ(ClassifyAddress("172.32.0.1", subnets), AddrClass::kPublic);
  EXPECT_EQ(ClassifyAddress("fd00::5", subnets), AddrClass::kPrivate);
  EXPECT_EQ(ClassifyAddress("169.254.1.1", subnets), AddrClass::kLinkLocal);
  EXPECT_EQ(ClassifyAddress("fe80::1", subnets), AddrClass::kLinkLocal);
  EXPECT_EQ(ClassifyAddress("224.0.0.251", subnets), AddrClass::kMulticast);
  EXPECT_EQ(ClassifyAddress("ff02::fb", subnets), AddrClass::kMulticast);
  EXPECT_EQ(ClassifyAddress("8.8.8.8", subnets), AddrClass::kPublic);
  EXPECT_EQ(ClassifyAddress("2001:db8::1", subnets), AddrClass::kPublic);
  EXPECT_EQ(ClassifyAddress("::ffff:127.0.0.1", subnets), AddrClass::kLoopback);
  EXPECT_EQ(ClassifyAddress("0.0.0.0", subnets), AddrClass::kUnspecified);
  EXPECT_EQ(ClassifyAddress("garbage", subnets), AddrClass::kUnspecified);
}

TEST(BehaviorTest, CodeRoundTripsAndDescribes) {
  Behavior b = Out(4444, AddrClass::kPublic, v1::PROTOCOL_UDP);
  Behavior c = Behavior::FromCode(b.Code());
  EXPECT_EQ(c.Code(), b.Code());
  EXPECT_EQ(c.port, 4444);
  EXPECT_EQ(c.protocol, v1::PROTOCOL_UDP);
  EXPECT_EQ(b.Describe(), "outbound udp to port 4444 (public address)");
  v1::NetworkEvent listen;
  listen.set_kind(v1::NETWORK_KIND_LISTEN);
  listen.set_protocol(v1::PROTOCOL_TCP);
  listen.set_local_port(8080);
  auto l = Behavior::Of(listen, {});
  ASSERT_TRUE(l.has_value());
  EXPECT_EQ(l->Describe(), "listening on tcp port 8080");
  v1::NetworkEvent end;
  end.set_kind(v1::NETWORK_KIND_FLOW_END);
  EXPECT_FALSE(Behavior::Of(end, {}).has_value());
}

}  // namespace
}  // namespace sockwatch
