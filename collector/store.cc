#include "collector/store.h"

#include <algorithm>
#include <iterator>
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
#include "collector/clickhouse_store.h"
#include "collector/sqlite_store.h"

namespace sockwatch {

namespace {

// Listed in every scheme error, so a typo tells the operator what works.
constexpr absl::string_view kAcceptedSchemes =
    "accepted: \"sqlite:PATH\", \"clickhouse://HOST:PORT/DB\"";

// An address or network: family, bytes, prefix length.
struct Net {
  int family = 0;
  unsigned char addr[16] = {};
  int bits = 0;
};

bool ParseNet(absl::string_view text, Net* net) {
  if (text.size() > 64) return false;
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

EventColumns ColumnsOf(const v1::Envelope& env) {
  EventColumns c;
  if (env.has_alert()) {
    const v1::Alert& a = env.alert();
    if (a.has_network()) c.network = &a.network();
    // The alert's own process is the authority; the network copy may be bare.
    if (a.has_process()) {
      c.process = &a.process();
    } else if (c.network != nullptr && c.network->has_process()) {
      c.process = &c.network->process();
    }
    c.rule = a.rule();
    c.alert_id = a.id();
    if (a.has_image()) {
      c.sha256 = a.image().sha256();
      c.container_id = a.image().container_id();
    }
  } else {
    if (env.has_network()) c.network = &env.network();
    const v1::Process* p = EventProcess(env);
    // An unset process (the default instance) is no process.
    if (p != nullptr && p != &v1::Process::default_instance()) c.process = p;
  }
  if (c.container_id.empty() && c.process != nullptr) c.container_id = c.process->container_id();
  return c;
}

absl::Status CheckEventQuery(const EventQuery& q) {
  // What EnvelopeKind names.
  static constexpr const char* kKinds[] = {"exec", "fork",     "exit",  "network",
                                           "loss", "coverage", "alert", "learning"};
  if (!q.kind.empty() &&
      std::find(std::begin(kKinds), std::end(kKinds), q.kind) == std::end(kKinds))
    return absl::InvalidArgumentError(absl::StrCat("store: unknown event kind \"", q.kind,
                                                   "\"; known: ", absl::StrJoin(kKinds, ", ")));
  if (absl::Status s = CheckRemoteFilter(q.remote); !s.ok()) return s;
  return CheckAlertStatus(q.alert_status);
}

absl::Status CheckTriageRecord(const TriageRecord& record) {
  if (record.alert_id.empty()) return absl::InvalidArgumentError("store: triage without alert id");
  if (record.status.empty()) return absl::InvalidArgumentError("store: triage without status");
  return CheckAlertStatus(record.status);
}

absl::Status CheckRemoteFilter(absl::string_view remote) {
  Net net;
  if (remote.empty() || ParseNet(remote, &net)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "remote \"", remote, "\": expected an IP address or a CIDR (10.0.0.0/8, fd00::/8)"));
}

bool InRemoteFilter(absl::string_view remote, absl::string_view ip) {
  if (remote.empty()) return true;
  Net net;
  return ParseNet(remote, &net) && InNet(net, ip);
}

absl::Status CheckAlertStatus(absl::string_view status) {
  if (status.empty() || status == "open" || status == "acked" || status == "closed")
    return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("alert status \"", status, "\": expected open, acked or closed"));
}

bool HasDecodedFilters(const EventQuery& q) {
  return !q.remote.empty() || !q.argv_contains.empty() || !q.alert_id.empty() ||
         !q.alert_status.empty();
}

TriageStatuses LatestStatuses(absl::Span<const TriageRecord> records) {
  TriageStatuses out;
  for (const TriageRecord& r : records) out[r.alert_id] = r.status;  // in order: the last wins
  return out;
}

bool MatchesDecodedFilters(const EventQuery& q, const v1::Envelope& env,
                           const TriageStatuses* statuses) {
  if (!q.remote.empty()) {
    const v1::NetworkEvent* n = env.has_network() ? &env.network()
                                : env.has_alert() && env.alert().has_network() ? &env.alert().network()
                                                                               : nullptr;
    if (!n || !InRemoteFilter(q.remote, n->remote_ip())) return false;
  }
  if (!q.argv_contains.empty()) {
    const v1::Process* p = EventProcess(env);
    if (!p || !absl::StrContains(absl::StrJoin(p->argv(), " "), q.argv_contains)) return false;
  }
  if (!q.alert_id.empty() && (!env.has_alert() || env.alert().id() != q.alert_id)) return false;
  if (!q.alert_status.empty()) {
    if (!env.has_alert()) return false;
    std::string status = "open";
    if (statuses) {
      auto it = statuses->find(env.alert().id());
      if (it != statuses->end()) status = it->second;
    }
    if (status != q.alert_status) return false;
  }
  return true;
}

std::optional<NetworkFact> FactOf(const v1::Envelope& env) {
  const v1::NetworkEvent* n = nullptr;
  NetworkFact f;
  if (env.has_network()) {
    n = &env.network();
    if (n->kind() == v1::NETWORK_KIND_FLOW_END) return std::nullopt;  // its connect or accept counts
    f.sha256 = n->process().sha256();
    f.exe = n->process().exe();
  } else if (env.has_alert() && env.alert().has_network()) {
    // The agent moves the evidence's process to the alert's own.
    const v1::Alert& a = env.alert();
    n = &a.network();
    const v1::Process& p = a.has_process() ? a.process() : n->process();
    f.exe = p.exe();
    f.sha256 = a.image().sha256();
    if (f.sha256.empty()) f.sha256 = p.sha256();
  } else {
    return std::nullopt;
  }
  if (f.exe.empty()) return std::nullopt;  // unknown process: no image to count
  f.direction = n->direction();
  f.protocol = n->protocol();
  const bool inbound =
      n->kind() == v1::NETWORK_KIND_LISTEN || n->direction() == v1::DIRECTION_INBOUND;
  f.port = inbound ? n->local_port() : n->remote_port();
  if (n->kind() != v1::NETWORK_KIND_LISTEN) f.remote_ip = n->remote_ip();
  return f;
}

absl::Status AddFleetPrevalence(Store& store, uint64_t fleet_hosts, v1::Envelope& env) {
  if (!env.has_alert()) return absl::OkStatus();
  const std::optional<NetworkFact> fact = FactOf(env);
  if (!fact) return absl::OkStatus();
  v1::FleetPrevalence* fleet = env.mutable_alert()->mutable_fleet();
  PrevalenceQuery image;
  image.exclude_host = env.host_id();
  if (!fact->sha256.empty()) {
    image.sha256 = fact->sha256;
    fleet->set_by_sha256(true);
  } else {
    image.exe = fact->exe;
  }
  absl::StatusOr<uint64_t> image_hosts = store.CountFactHosts(image);
  if (!image_hosts.ok()) return image_hosts.status();
  PrevalenceQuery behavior;
  behavior.exclude_host = env.host_id();
  behavior.exe = fact->exe;
  behavior.direction = fact->direction;
  behavior.protocol = fact->protocol;
  behavior.port = fact->port;
  absl::StatusOr<uint64_t> behavior_hosts = store.CountFactHosts(behavior);
  if (!behavior_hosts.ok()) return behavior_hosts.status();
  // The alert is itself evidence that its host used the network so.
  fleet->set_image_hosts(*image_hosts + 1);
  fleet->set_behavior_hosts(*behavior_hosts + 1);
  fleet->set_fleet_hosts(std::max<uint64_t>(fleet_hosts, *image_hosts + 1));
  return absl::OkStatus();
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
  if (scheme == "clickhouse") {
    ClickHouseStoreOptions options;
    options.url = std::string(url);
    absl::StatusOr<std::unique_ptr<ClickHouseStore>> store = ClickHouseStore::Open(options);
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

absl::Status CheckHellos(absl::Span<const v1::Hello* const> hellos) {
  for (const v1::Hello* h : hellos)
    if (h == nullptr || h->host_id().empty())
      return absl::InvalidArgumentError("store: Hello without host_id");
  return absl::OkStatus();
}

absl::Status Store::UpsertHosts(absl::Span<const v1::Hello* const> hellos, absl::Time now) {
  if (absl::Status s = CheckHellos(hellos); !s.ok()) return s;
  for (const v1::Hello* h : hellos)
    if (absl::Status s = UpsertHost(*h, now); !s.ok()) return s;
  return absl::OkStatus();
}

}  // namespace sockwatch
