// The images and networks of store_bench's synthetic fleet
// (store_bench_catalog.cc): what each image runs as, on which hosts, and to
// which bounded set of remotes and ports it talks.
#ifndef SOCKWATCH_TESTS_BENCH_STORE_BENCH_CATALOG_H_
#define SOCKWATCH_TESTS_BENCH_STORE_BENCH_CATALOG_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/strings/string_view.h"
#include "sockwatch/v1/event.pb.h"

namespace sockwatch::store_bench {

// Roles a host can have; an image lists the roles whose hosts run it.
enum Role : uint8_t { kWeb = 1, kDb = 2, kWorker = 4, kBuild = 8, kK8s = 16, kAll = 31 };
// Which hosts beyond their role's get an image: rare ones make the rarest-first
// lists and the "where else did this run" searches mean something.
enum Spread : uint8_t { kByRole, kOneIn37, kOneIn50Unique, kThreeHosts };

// A bounded set of IPv4 addresses: base .. base + count - 1.
struct Pool {
  uint32_t base;
  uint32_t count;
};
constexpr uint32_t Ip(uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  return a << 24 | b << 16 | c << 8 | d;
}
inline constexpr Pool kLoopback{Ip(127, 0, 0, 1), 1};
inline constexpr Pool kDns{Ip(10, 0, 0, 2), 2};
inline constexpr Pool kNtp{Ip(10, 0, 0, 123), 4};
inline constexpr Pool kMirrors{Ip(151, 101, 2, 0), 16};
inline constexpr Pool kCollector{Ip(10, 0, 5, 10), 1};
inline constexpr Pool kBastions{Ip(10, 0, 9, 10), 3};
inline constexpr Pool kMonitoring{Ip(10, 0, 7, 20), 2};
inline constexpr Pool kLogs{Ip(10, 0, 6, 30), 4};
inline constexpr Pool kMail{Ip(10, 0, 6, 25), 2};
inline constexpr Pool kConsul{Ip(10, 0, 8, 1), 5};
inline constexpr Pool kDatabases{Ip(10, 30, 1, 10), 8};
inline constexpr Pool kCaches{Ip(10, 30, 2, 10), 6};
inline constexpr Pool kQueues{Ip(10, 30, 3, 10), 5};
inline constexpr Pool kBalancers{Ip(10, 40, 0, 10), 8};
inline constexpr Pool kAppHosts{Ip(10, 20, 0, 0), 400};
inline constexpr Pool kApiServers{Ip(10, 50, 0, 1), 3};
inline constexpr Pool kRegistries{Ip(104, 18, 0, 0), 8};
inline constexpr Pool kSaas{Ip(52, 84, 0, 0), 64};
inline constexpr Pool kGitHub{Ip(140, 82, 112, 3), 4};
inline constexpr Pool kTor{Ip(185, 220, 101, 0), 32};  // alert evidence only
inline constexpr const char* kSaasCidr = "52.84.0.0/16";

struct Flow {
  v1::Direction direction;
  v1::Protocol protocol;
  uint32_t port;  // the server's: remote outbound, local inbound
  Pool pool;      // the other end
};
inline constexpr v1::Direction kOut = v1::DIRECTION_OUTBOUND;
inline constexpr v1::Direction kIn = v1::DIRECTION_INBOUND;
inline constexpr v1::Protocol kTcp = v1::PROTOCOL_TCP;
inline constexpr v1::Protocol kUdp = v1::PROTOCOL_UDP;

// What the agent knows of an image besides its path.
enum Trait : uint8_t { kPlain = 0, kHashed = 1, kContainer = 2 };

struct ImageSpec {
  const char* exe;
  const char* argv;  // space-separated; %h is the hostname
  uint8_t roles;
  Spread spread;
  int weight;  // share of the host's network events (and of execs, + 1)
  uint32_t uid;
  uint8_t traits;  // Trait bits: kHashed (sha256 known), kContainer
  std::vector<Flow> flows;
};

// Every image, in a fixed order. Weights are relative within a host; images
// without flows only exec, fork and exit.
const std::vector<ImageSpec>& Catalog();
// The index in Catalog() of the first image with this path (Catalog().size()
// if none).
size_t IndexOf(absl::string_view exe);

}  // namespace sockwatch::store_bench

#endif  // SOCKWATCH_TESTS_BENCH_STORE_BENCH_CATALOG_H_
