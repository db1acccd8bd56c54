// What is normal on this host: per image, whether it ever used the network
// and each network behaviour it showed (direction, protocol, port, remote
// address class) with first/last seen and counts. Kept in memory for the hot
// path, persisted to SQLite (write-behind, schema versioned), bounded.
#ifndef SOCKWATCH_AGENT_BASELINE_H_
#define SOCKWATCH_AGENT_BASELINE_H_

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "sockwatch/v1/event.pb.h"

namespace sockwatch {

enum class AddrClass : uint8_t {
  kUnspecified = 0,
  kLoopback = 1,
  kPrivate = 2,
  kLinkLocal = 3,
  kMulticast = 4,
  kPublic = 5,
  kSameSubnet = 6,
};
const char* AddrClassName(AddrClass c);

// An IPv4 or IPv6 prefix the host is directly on.
struct Subnet {
  std::vector<uint8_t> addr;  // 4 or 16 bytes, network order
  int prefix_len = 0;
};
// The subnets of this network namespace's interfaces (getifaddrs).
std::vector<Subnet> LocalSubnets();
AddrClass ClassifyAddress(absl::string_view ip, const std::vector<Subnet>& local_subnets);

// One network behaviour of an image, packed into 64 bits.
struct Behavior {
  // kSpeaks: protocol inspection saw the image speak `app_protocol` (agent/
  // protocols.h Proto) with `port` as the service port.
  enum Kind : uint8_t { kFlow = 0, kListen = 1, kSpeaks = 2 };
  v1::Direction direction = v1::DIRECTION_UNSPECIFIED;
  v1::Protocol protocol = v1::PROTOCOL_UNSPECIFIED;
  Kind kind = kFlow;
  uint16_t port = 0;  // remote port (outbound), local port (inbound, listen)
  AddrClass addr_class = AddrClass::kUnspecified;  // of the remote; unspecified for listen
  uint8_t app_protocol = 0;  // kSpeaks only (packed where addr_class goes)

  uint64_t Code() const;
  static Behavior FromCode(uint64_t code);
  std::string Describe() const;  // "outbound tcp to port 443 (public)"
  // None for events that carry no behaviour (e.g. a flow end).
  static std::optional<Behavior> Of(const v1::NetworkEvent& n, const std::vector<Subnet>& subnets);
};

struct BaselineOptions {
  std::string path;  // SQLite file; "" keeps the baseline in memory only
  size_t max_images = 200'000;
  size_t max_behaviors = 2'000'000;
  absl::Duration learning_period = absl::Hours(24);
};

// What the baseline knew before an observation, and what it changed.
struct Observation {
  bool new_image = false;        // never seen before at all
  bool first_network = false;    // never used the network before
  bool new_behavior = false;     // this behaviour is new for the image
  absl::Time image_first_seen;   // before this observation (now if new)
  uint32_t known_behaviors = 0;  // before this observation
  std::string previous_sha256;   // the image key was known with other bytes
};

class Baseline {
 public:
  static absl::StatusOr<std::unique_ptr<Baseline>> Open(const BaselineOptions& opts);
  ~Baseline();

  // An exec of the image (no network yet): records first seen.
  void SeeImage(absl::string_view key, absl::string_view sha256, absl::Time now);
  // A network act of the image.
  Observation Observe(absl::string_view key, absl::string_view sha256, const Behavior& b,
                      absl::Time now);
  // kSpeaks behaviours of the image with this direction, transport and port:
  // the protocols it spoke there (empty when none or the image is unknown).
  std::vector<uint8_t> SpokenOn(absl::string_view key, v1::Direction direction, v1::Protocol protocol,
                                uint16_t port) const;
  // Another image key already known with these bytes ("" when none).
  std::string KeyWithSha(absl::string_view sha256, absl::string_view except_key) const;

  bool Learning(absl::Time now) const {
    return opts_.learning_period > absl::ZeroDuration() && now < learning_ends_;
  }
  absl::Time learning_started() const { return learning_started_; }
  absl::Time learning_ends() const { return learning_ends_; }
  size_t images() const { return images_.size(); }
  size_t behaviors() const { return behavior_count_; }
  uint64_t evicted_images() const { return evicted_images_; }

  // Writes what changed since the last flush, in one transaction.
  absl::Status Flush();

 private:
  struct BehaviorRec {
    int64_t first_seen = 0, last_seen = 0;  // unix ns
    uint64_t count = 0;
    bool dirty = false;
  };
  struct ImageRec {
    int64_t first_seen = 0, last_seen = 0;
    std::string sha256;
    bool networked = false;
    bool dirty = false;
    absl::flat_hash_map<uint64_t, BehaviorRec> behaviors;
  };

  Baseline() = default;
  absl::Status Init(const BaselineOptions& opts);
  absl::Status Load();
  ImageRec& Touch(absl::string_view key, absl::string_view sha256, int64_t now_ns, Observation* obs);
  void EvictIfFull();

  BaselineOptions opts_;
  sqlite3* db_ = nullptr;
  absl::flat_hash_map<std::string, ImageRec> images_;
  absl::flat_hash_map<std::string, std::string> sha_to_key_;
  absl::flat_hash_set<std::string> deleted_;  // evicted keys to delete on flush
  size_t behavior_count_ = 0;
  uint64_t evicted_images_ = 0;
  absl::Time learning_started_;
  absl::Time learning_ends_;
};

}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_BASELINE_H_
