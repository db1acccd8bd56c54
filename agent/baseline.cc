#include "agent/baseline.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agent/protocols.h"

namespace sockwatch {
namespace {

constexpr int kSchemaVersion = 1;

bool InPrefix(const uint8_t* a, const uint8_t* net, int bits) {
  const int bytes = bits / 8, rest = bits % 8;
  if (std::memcmp(a, net, bytes) != 0) return false;
  if (rest == 0) return true;
  const uint8_t mask = uint8_t(0xff << (8 - rest));
  return (a[bytes] & mask) == (net[bytes] & mask);
}

// Parses into 4 or 16 bytes; v4-mapped IPv6 becomes IPv4.
std::vector<uint8_t> ParseIp(absl::string_view ip) {
  std::string s(ip);
  uint8_t buf[16];
  if (inet_pton(AF_INET, s.c_str(), buf) == 1) return {buf, buf + 4};
  if (inet_pton(AF_INET6, s.c_str(), buf) == 1) {
    static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(buf, kMapped, 12) == 0) return {buf + 12, buf + 16};
    return {buf, buf + 16};
  }
  return {};
}

class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) { sqlite3_prepare_v2(db, sql, -1, &s_, nullptr); }
  ~Stmt() { sqlite3_finalize(s_); }
  sqlite3_stmt* get() { return s_; }
  bool ok() const { return s_ != nullptr; }

 private:
  sqlite3_stmt* s_ = nullptr;
};

absl::Status SqlError(sqlite3* db, absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", sqlite3_errmsg(db)));
}

absl::Status Exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    absl::Status s = absl::InternalError(absl::StrCat("baseline: ", sql, ": ", err ? err : "?"));
    sqlite3_free(err);
    return s;
  }
  return absl::OkStatus();
}

int64_t ToNs(absl::Time t) { return absl::ToUnixNanos(t); }

}  // namespace

const char* AddrClassName(AddrClass c) {
  switch (c) {
    case AddrClass::kLoopback: return "loopback";
    case AddrClass::kPrivate: return "private";
    case AddrClass::kLinkLocal: return "link-local";
    case AddrClass::kMulticast: return "multicast";
    case AddrClass::kPublic: return "public";
    case AddrClass::kSameSubnet: return "same subnet";
    case AddrClass::kUnspecified: break;
  }
  return "unspecified";
}

std::vector<Subnet> LocalSubnets() {
  std::vector<Subnet> out;
  ifaddrs* ifa = nullptr;
  if (getifaddrs(&ifa) != 0) return out;
  for (ifaddrs* i = ifa; i; i = i->ifa_next) {
    if (!i->ifa_addr || !i->ifa_netmask) continue;
    Subnet s;
    const uint8_t* mask;
    size_t len;
    if (i->ifa_addr->sa_family == AF_INET) {
      auto* a = reinterpret_cast<sockaddr_in*>(i->ifa_addr);
      s.addr.assign(reinterpret_cast<uint8_t*>(&a->sin_addr), reinterpret_cast<uint8_t*>(&a->sin_addr) + 4);
      mask = reinterpret_cast<uint8_t*>(&reinterpret_cast<sockaddr_in*>(i->ifa_netmask)->sin_addr);
      len = 4;
    } else if (i->ifa_addr->sa_family == AF_INET6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(i->ifa_addr);
      s.addr.assign(a->sin6_addr.s6_addr, a->sin6_addr.s6_addr + 16);
      mask = reinterpret_cast<sockaddr_in6*>(i->ifa_netmask)->sin6_addr.s6_addr;
      len = 16;
    } else {
      continue;
    }
    for (size_t b = 0; b < len; ++b) s.prefix_len += __builtin_popcount(mask[b]);
    if (s.prefix_len == 0 || s.prefix_len == int(len * 8)) continue;  // no subnet to speak of
    out.push_back(std::move(s));
  }
  freeifaddrs(ifa);
  return out;
}

AddrClass ClassifyAddress(absl::string_view ip, const std::vector<Subnet>& subnets) {
  const std::vector<uint8_t> a = ParseIp(ip);
  if (a.empty()) return AddrClass::kUnspecified;
  if (std::all_of(a.begin(), a.end(), [](uint8_t b) { return b == 0; })) return AddrClass::kUnspecified;
  if (a.size() == 4) {
    if (a[0] == 127) return AddrClass::kLoopback;
    if (a[0] >= 224) return AddrClass::kMulticast;  // and broadcast
    if (a[0] == 169 && a[1] == 254) return AddrClass::kLinkLocal;
  } else {
    static constexpr uint8_t kLoop[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    if (std::memcmp(a.data(), kLoop, 16) == 0) return AddrClass::kLoopback;
    if (a[0] == 0xff) return AddrClass::kMulticast;
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) return AddrClass::kLinkLocal;
  }
  for (const Subnet& s : subnets)
    if (s.addr.size() == a.size() && InPrefix(a.data(), s.addr.data(), s.prefix_len))
      return AddrClass::kSameSubnet;
  if (a.size() == 4) {
    if (a[0] == 10 || (a[0] == 172 && (a[1] & 0xf0) == 16) || (a[0] == 192 && a[1] == 168) ||
        (a[0] == 100 && (a[1] & 0xc0) == 64))
      return AddrClass::kPrivate;
  } else if ((a[0] & 0xfe) == 0xfc) {
    return AddrClass::kPrivate;
  }
  return AddrClass::kPublic;
}

uint64_t Behavior::Code() const {
  const uint8_t low = kind == kSpeaks ? app_protocol : static_cast<uint8_t>(addr_class);
  return uint64_t(direction & 0x3) << 40 | uint64_t(protocol & 0x3) << 36 | uint64_t(kind & 0x3) << 32 |
         uint64_t(port) << 8 | uint64_t(low);
}

Behavior Behavior::FromCode(uint64_t c) {
  Behavior b;
  b.direction = static_cast<v1::Direction>((c >> 40) & 0x3);
  b.protocol = static_cast<v1::Protocol>((c >> 36) & 0x3);
  b.kind = static_cast<Kind>((c >> 32) & 0x3);
  b.port = (c >> 8) & 0xffff;
  if (b.kind == kSpeaks)
    b.app_protocol = c & 0xff;
  else
    b.addr_class = static_cast<AddrClass>(c & 0xff);
  return b;
}

std::string Behavior::Describe() const {
  const char* proto = protocol == v1::PROTOCOL_TCP ? "tcp" : "udp";
  if (kind == kListen) return absl::StrFormat("listening on %s port %d", proto, port);
  if (kind == kSpeaks)
    return absl::StrFormat("speaks %s on %s port %d (%s)", ProtoName(static_cast<Proto>(app_protocol)), proto, port,
                           direction == v1::DIRECTION_INBOUND ? "server" : "client");
  if (direction == v1::DIRECTION_INBOUND)
    return absl::StrFormat("inbound %s on port %d from a %s address", proto, port, AddrClassName(addr_class));
  return absl::StrFormat("outbound %s to port %d (%s address)", proto, port, AddrClassName(addr_class));
}

std::optional<Behavior> Behavior::Of(const v1::NetworkEvent& n, const std::vector<Subnet>& subnets) {
  Behavior b;
  b.protocol = n.protocol();
  switch (n.kind()) {
    case v1::NETWORK_KIND_LISTEN:
      b.kind = kListen;
      b.direction = v1::DIRECTION_INBOUND;
      b.port = n.local_port();
      return b;
    case v1::NETWORK_KIND_EXISTING:
      if (n.socket_state() == "LISTEN" || n.socket_state() == "UNCONNECTED") {
        b.kind = kListen;
        b.direction = v1::DIRECTION_INBOUND;
        b.port = n.local_port();
        return b;
      }
      break;
    case v1::NETWORK_KIND_CONNECT:
    case v1::NETWORK_KIND_ACCEPT:
    case v1::NETWORK_KIND_UDP_SEND:
    case v1::NETWORK_KIND_UDP_RECV:
    case v1::NETWORK_KIND_UDP_CONNECT:
      break;
    default:
      return std::nullopt;  // flow ends repeat what the open already said
  }
  b.direction = n.direction();
  b.port = b.direction == v1::DIRECTION_INBOUND ? n.local_port() : n.remote_port();
  b.addr_class = ClassifyAddress(n.remote_ip(), subnets);
  return b;
}

absl::StatusOr<std::unique_ptr<Baseline>> Baseline::Open(const BaselineOptions& opts) {
  std::unique_ptr<Baseline> b(new Baseline());
  if (absl::Status s = b->Init(opts); !s.ok()) return s;
  return b;
}

Baseline::~Baseline() {
  if (db_) sqlite3_close(db_);
}

absl::Status Baseline::Init(const BaselineOptions& opts) {
  opts_ = opts;
  absl::Time started = absl::Now();
  if (!opts.path.empty()) {
    if (sqlite3_open(opts.path.c_str(), &db_) != SQLITE_OK)
      return absl::UnavailableError(absl::StrCat("open baseline ", opts.path, ": ", sqlite3_errmsg(db_)));
    sqlite3_busy_timeout(db_, 5000);
    for (const char* sql : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL",
                            "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
                            "CREATE TABLE IF NOT EXISTS images (key TEXT PRIMARY KEY, sha256 TEXT, "
                            "first_seen INTEGER, last_seen INTEGER, networked INTEGER) WITHOUT ROWID",
                            "CREATE TABLE IF NOT EXISTS behaviors (key TEXT, code INTEGER, first_seen "
                            "INTEGER, last_seen INTEGER, count INTEGER, PRIMARY KEY (key, code)) WITHOUT ROWID"})
      if (absl::Status s = Exec(db_, sql); !s.ok()) return s;
    // The schema version and when learning began survive restarts and upgrades.
    Stmt get(db_, "SELECT k, v FROM meta");
    absl::flat_hash_map<std::string, std::string> meta;
    while (get.ok() && sqlite3_step(get.get()) == SQLITE_ROW)
      meta[reinterpret_cast<const char*>(sqlite3_column_text(get.get(), 0))] =
          reinterpret_cast<const char*>(sqlite3_column_text(get.get(), 1));
    int version = 0;
    if (meta.contains("schema_version") && (!absl::SimpleAtoi(meta["schema_version"], &version) ||
                                            version > kSchemaVersion))
      return absl::FailedPreconditionError(absl::StrCat(
          "baseline ", opts.path, " has schema version ", meta["schema_version"],
          "; this agent knows up to ", kSchemaVersion, " (downgrade not supported: move the file away)"));
    int64_t started_ns;
    if (meta.contains("learning_started") && absl::SimpleAtoi(meta["learning_started"], &started_ns)) {
      started = absl::FromUnixNanos(started_ns);
    } else {
      Stmt put(db_, "INSERT OR REPLACE INTO meta (k, v) VALUES ('learning_started', ?)");
      const std::string v = absl::StrCat(ToNs(started));
      sqlite3_bind_text(put.get(), 1, v.c_str(), -1, SQLITE_TRANSIENT);
      if (sqlite3_step(put.get()) != SQLITE_DONE) return SqlError(db_, "baseline meta");
    }
    if (absl::Status s = Exec(db_, absl::StrCat("INSERT OR REPLACE INTO meta (k, v) VALUES "
                                                 "('schema_version', '", kSchemaVersion, "')").c_str());
        !s.ok())
      return s;
    if (absl::Status s = Load(); !s.ok()) return s;
  }
  learning_started_ = started;
  learning_ends_ = started + opts.learning_period;
  return absl::OkStatus();
}

absl::Status Baseline::Load() {
  Stmt img(db_, "SELECT key, sha256, first_seen, last_seen, networked FROM images");
  if (!img.ok()) return SqlError(db_, "load images");
  while (sqlite3_step(img.get()) == SQLITE_ROW) {
    std::string key(reinterpret_cast<const char*>(sqlite3_column_text(img.get(), 0)));
    ImageRec& r = images_[key];
    if (const unsigned char* sha = sqlite3_column_text(img.get(), 1)) r.sha256 = reinterpret_cast<const char*>(sha);
    r.first_seen = sqlite3_column_int64(img.get(), 2);
    r.last_seen = sqlite3_column_int64(img.get(), 3);
    r.networked = sqlite3_column_int(img.get(), 4) != 0;
    if (!r.sha256.empty()) sha_to_key_[r.sha256] = key;
  }
  Stmt beh(db_, "SELECT key, code, first_seen, last_seen, count FROM behaviors");
  if (!beh.ok()) return SqlError(db_, "load behaviors");
  while (sqlite3_step(beh.get()) == SQLITE_ROW) {
    auto it = images_.find(reinterpret_cast<const char*>(sqlite3_column_text(beh.get(), 0)));
    if (it == images_.end()) continue;
    BehaviorRec& b = it->second.behaviors[sqlite3_column_int64(beh.get(), 1)];
    b.first_seen = sqlite3_column_int64(beh.get(), 2);
    b.last_seen = sqlite3_column_int64(beh.get(), 3);
    b.count = sqlite3_column_int64(beh.get(), 4);
    ++behavior_count_;
  }
  EvictIfFull();
  return absl::OkStatus();
}

Baseline::ImageRec& Baseline::Touch(absl::string_view key, absl::string_view sha256, int64_t now,
                                    Observation* obs) {
  auto [it, inserted] = images_.try_emplace(key);
  ImageRec& r = it->second;
  if (inserted) {
    r.first_seen = now;
    deleted_.erase(key);
    if (obs) obs->new_image = true;
  }
  if (!sha256.empty() && r.sha256 != sha256) {
    if (obs && !r.sha256.empty()) obs->previous_sha256 = r.sha256;
    r.sha256 = std::string(sha256);
    sha_to_key_[r.sha256] = std::string(key);
  }
  r.last_seen = std::max(r.last_seen, now);
  r.dirty = true;
  return r;
}

void Baseline::SeeImage(absl::string_view key, absl::string_view sha256, absl::Time now) {
  Touch(key, sha256, ToNs(now), nullptr);
  EvictIfFull();
}

Observation Baseline::Observe(absl::string_view key, absl::string_view sha256, const Behavior& b,
                              absl::Time now) {
  Observation obs;
  const int64_t t = ToNs(now);
  ImageRec& r = Touch(key, sha256, t, &obs);
  obs.image_first_seen = absl::FromUnixNanos(r.first_seen);
  obs.known_behaviors = r.behaviors.size();
  obs.first_network = !r.networked;
  r.networked = true;
  auto [bit, fresh] = r.behaviors.try_emplace(b.Code());
  if (fresh) {
    bit->second.first_seen = t;
    ++behavior_count_;
  }
  obs.new_behavior = fresh;
  bit->second.last_seen = t;
  ++bit->second.count;
  bit->second.dirty = true;
  EvictIfFull();
  return obs;
}

std::vector<uint8_t> Baseline::SpokenOn(absl::string_view key, v1::Direction direction, v1::Protocol protocol,
                                       uint16_t port) const {
  std::vector<uint8_t> out;
  auto it = images_.find(key);
  if (it == images_.end()) return out;
  for (const auto& [code, rec] : it->second.behaviors) {
    const Behavior b = Behavior::FromCode(code);
    if (b.kind == Behavior::kSpeaks && b.direction == direction && b.protocol == protocol && b.port == port)
      out.push_back(b.app_protocol);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string Baseline::KeyWithSha(absl::string_view sha256, absl::string_view except_key) const {
  if (sha256.empty()) return "";
  auto it = sha_to_key_.find(sha256);
  if (it == sha_to_key_.end() || it->second == except_key || !images_.contains(it->second)) return "";
  return it->second;
}

// When full, the least recently seen images go first, with all their
// behaviours, 1% at a time so the cost is amortized; each one is counted.
void Baseline::EvictIfFull() {
  if (images_.size() <= opts_.max_images && behavior_count_ <= opts_.max_behaviors) return;
  std::vector<std::pair<int64_t, std::string>> order;
  order.reserve(images_.size());
  for (const auto& [k, r] : images_) order.emplace_back(r.last_seen, k);
  std::sort(order.begin(), order.end());
  const size_t target_images = opts_.max_images - opts_.max_images / 100;
  const size_t target_behaviors = opts_.max_behaviors - opts_.max_behaviors / 100;
  for (const auto& [t, k] : order) {
    if (images_.size() <= target_images && behavior_count_ <= target_behaviors) break;
    auto it = images_.find(k);
    behavior_count_ -= it->second.behaviors.size();
    if (auto s = sha_to_key_.find(it->second.sha256); s != sha_to_key_.end() && s->second == k)
      sha_to_key_.erase(s);
    images_.erase(it);
    deleted_.insert(k);
    ++evicted_images_;
  }
}

absl::Status Baseline::Flush() {
  if (!db_) return absl::OkStatus();
  if (absl::Status s = Exec(db_, "BEGIN"); !s.ok()) return s;
  Stmt img(db_, "INSERT OR REPLACE INTO images (key, sha256, first_seen, last_seen, networked) "
                "VALUES (?, ?, ?, ?, ?)");
  Stmt beh(db_, "INSERT OR REPLACE INTO behaviors (key, code, first_seen, last_seen, count) "
                "VALUES (?, ?, ?, ?, ?)");
  Stmt del_img(db_, "DELETE FROM images WHERE key = ?");
  Stmt del_beh(db_, "DELETE FROM behaviors WHERE key = ?");
  if (!img.ok() || !beh.ok() || !del_img.ok() || !del_beh.ok()) {
    Exec(db_, "ROLLBACK").IgnoreError();
    return SqlError(db_, "baseline flush");
  }
  auto step = [&](sqlite3_stmt* s) {
    const int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE;
  };
  bool ok = true;
  for (const std::string& k : deleted_) {
    for (sqlite3_stmt* s : {del_img.get(), del_beh.get()}) {
      sqlite3_bind_text(s, 1, k.data(), k.size(), SQLITE_STATIC);
      ok &= step(s);
    }
  }
  for (auto& [k, r] : images_) {
    if (!r.dirty) continue;
    sqlite3_bind_text(img.get(), 1, k.data(), k.size(), SQLITE_STATIC);
    sqlite3_bind_text(img.get(), 2, r.sha256.data(), r.sha256.size(), SQLITE_STATIC);
    sqlite3_bind_int64(img.get(), 3, r.first_seen);
    sqlite3_bind_int64(img.get(), 4, r.last_seen);
    sqlite3_bind_int(img.get(), 5, r.networked);
    ok &= step(img.get());
    for (auto& [code, b] : r.behaviors) {
      if (!b.dirty) continue;
      sqlite3_bind_text(beh.get(), 1, k.data(), k.size(), SQLITE_STATIC);
      sqlite3_bind_int64(beh.get(), 2, code);
      sqlite3_bind_int64(beh.get(), 3, b.first_seen);
      sqlite3_bind_int64(beh.get(), 4, b.last_seen);
      sqlite3_bind_int64(beh.get(), 5, b.count);
      ok &= step(beh.get());
    }
  }
  if (!ok) {
    absl::Status s = SqlError(db_, "baseline flush");
    Exec(db_, "ROLLBACK").IgnoreError();
    return s;  // dirty marks stay: the next flush retries
  }
  if (absl::Status s = Exec(db_, "COMMIT"); !s.ok()) return s;
  deleted_.clear();
  for (auto& [k, r] : images_) {
    if (!r.dirty) continue;
    r.dirty = false;
    for (auto& [code, b] : r.behaviors) b.dirty = false;
  }
  return absl::OkStatus();
}

}  // namespace sockwatch
