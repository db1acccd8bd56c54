#include "collector/store.h"

#include <memory>
#include <string>
#include <utility>

#include <arpa/inet.h>

#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_cat.h"
#include "collector/sqlite_store.h"

namespace sockwatch {

namespace {

// Listed in every scheme error, so a typo tells the operator what works.
constexpr absl::string_view kAcceptedSchemes =
    "accepted: \"sqlite:PATH\" (ClickHouse is not supported yet)";

// An address or network: family, bytes, prefix length.
struct Net {
  int family = 0;
  unsigned char addr[16] = {};
  int bits = 0;
};

bool ParseNet(absl::string_view text, Net* net) {
  const size_t slash = text.find('/');
  const std::string ip(text.substr(0, slash));
  if (inet_pton(AF_INET, ip.c_str(), net->addr) == 1) {
    net->family = AF_INET;
    net->bits = 32;
  } else if (inet_pton(AF_INET6, ip.c_str(), net->addr) == 1) {
    net->family = AF_INET6;
    net->bits = 128;
  } else {
    return false;
  }
  if (slash != absl::string_view::npos) {
    int bits = -1;
    if (!absl::SimpleAtoi(text.substr(slash + 1), &bits) || bits < 0 || bits > net->bits) return false;
    net->bits = bits;
  }
  return true;
}

bool InNet(const Net& net, absl::string_view ip_text) {
  Net ip;
  if (!ParseNet(ip_text, &ip) || ip.family != net.family) return false;
  const int full = net.bits / 8, rest = net.bits % 8;
  if (std::memcmp(ip.addr, net.addr, full) != 0) return false;
  if (rest == 0) return true;
  const unsigned char mask = static_cast<unsigned char>(0xff << (8 - rest));
  return (ip.addr[full] & mask) == (net.addr[full] & mask);
}

}  // namespace

const v1::Process* EventProcess(const v1::Envelope& env) {
  switch (env.event_case()) {
    case v1::Envelope::kNetwork:
      return &env.network().process();
    case v1::Envelope::kExec:
      return &env.exec().process();
    case v1::Envelope::kFork:
      return &env.fork().process();
    case v1::Envelope::kExit:
      return &env.exit().process();
    case v1::Envelope::kAlert:
      return &env.alert().process();
    default:
      return nullptr;
  }
}

absl::Status CheckRemoteFilter(absl::string_view remote) {
  Net net;
  if (remote.empty() || ParseNet(remote, &net)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "remote \"", remote, "\": expected an IP address or a CIDR (10.0.0.0/8, fd00::/8)"));
}

bool MatchesDecodedFilters(const EventQuery& q, const v1::Envelope& env) {
  if (!q.remote.empty()) {
    const v1::NetworkEvent* n = env.has_network() ? &env.network()
                                : env.has_alert() && env.alert().has_network() ? &env.alert().network()
                                                                               : nullptr;
    Net net;
    if (!n || !ParseNet(q.remote, &net) || !InNet(net, n->remote_ip())) return false;
  }
  if (!q.argv_contains.empty()) {
    const v1::Process* p = EventProcess(env);
    if (!p || !absl::StrContains(absl::StrJoin(p->argv(), " "), q.argv_contains)) return false;
  }
  return true;
}

absl::StatusOr<std::unique_ptr<Store>> OpenStore(absl::string_view url) {
  const size_t colon = url.find(':');
  if (colon == absl::string_view::npos || colon == 0)
    return absl::InvalidArgumentError(
        absl::StrCat("store URL \"", url, "\" has no scheme; ", kAcceptedSchemes));
  // Schemes are case-insensitive (RFC 3986); the path is taken as written.
  const std::string scheme = absl::AsciiStrToLower(url.substr(0, colon));
  const absl::string_view rest = url.substr(colon + 1);
  if (scheme == "sqlite") {
    if (rest.empty())
      return absl::InvalidArgumentError(
          absl::StrCat("store URL \"", url, "\" names no file; expected \"sqlite:PATH\""));
    SqliteStoreOptions options;
    options.path = std::string(rest);
    absl::StatusOr<std::unique_ptr<SqliteStore>> store = SqliteStore::Open(options);
    if (!store.ok()) return store.status();
    return std::unique_ptr<Store>(std::move(*store));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("store URL \"", url, "\": unknown scheme \"", scheme, "\"; ", kAcceptedSchemes));
}

absl::string_view EnvelopeKind(const v1::Envelope& env) {
  switch (env.event_case()) {
    case v1::Envelope::kExec:
      return "exec";
    case v1::Envelope::kFork:
      return "fork";
    case v1::Envelope::kExit:
      return "exit";
    case v1::Envelope::kNetwork:
      return "network";
    case v1::Envelope::kLoss:
      return "loss";
    case v1::Envelope::kCoverage:
      return "coverage";
    case v1::Envelope::kAlert:
      return "alert";
    case v1::Envelope::kLearning:
      return "learning";
    case v1::Envelope::EVENT_NOT_SET:
      break;
  }
  return "";
}

}  // namespace sockwatch
