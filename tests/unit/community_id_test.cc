#include "agent/community_id.h"

#include <arpa/inet.h>

#include <array>

#include "gtest/gtest.h"

namespace sockwatch {
namespace {

std::array<uint8_t, 4> V4(const char* s) {
  std::array<uint8_t, 4> a{};
  inet_pton(AF_INET, s, a.data());
  return a;
}

// Vectors from the Community ID spec's README (Zeek/Suricata agree on them).
TEST(CommunityIdTest, SpecTcpVector) {
  auto src = V4("128.232.110.120"), dst = V4("66.35.250.204");
  EXPECT_EQ(CommunityId(6, src, 34855, dst, 80), "1:LQU9qZlK+B5F3KDmev6m5PMibrg=");
}

TEST(CommunityIdTest, BothDirectionsHashTheSame) {
  auto a = V4("10.0.0.1"), b = V4("10.0.0.2");
  EXPECT_EQ(CommunityId(17, a, 5353, b, 53), CommunityId(17, b, 53, a, 5353));
  EXPECT_NE(CommunityId(17, a, 5353, b, 53), CommunityId(6, a, 5353, b, 53));
}

TEST(CommunityIdTest, SameAddressOrdersByPort) {
  auto lo = V4("127.0.0.1");
  EXPECT_EQ(CommunityId(6, lo, 40000, lo, 80), CommunityId(6, lo, 80, lo, 40000));
}

TEST(CommunityIdTest, Ipv6AndBadSizes) {
  std::array<uint8_t, 16> a{}, b{};
  a[15] = 1;
  b[15] = 2;
  const std::string id = CommunityId(6, a, 1234, b, 443);
  EXPECT_EQ(id.rfind("1:", 0), 0u);
  EXPECT_EQ(id.size(), 2u + 28u);  // base64 of 20 bytes
  EXPECT_EQ(CommunityId(6, V4("1.2.3.4"), 1, b, 2), "");
}

}  // namespace
}  // namespace sockwatch
