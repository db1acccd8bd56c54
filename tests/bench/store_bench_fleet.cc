#include "tests/bench/store_bench_fleet.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "tests/bench/store_bench_catalog.h"

namespace sockwatch::store_bench {

namespace {

// Images the queries ask about, by catalog index.
const size_t kCurl = IndexOf("/usr/bin/curl");  // on every host, prevalence queries
const size_t kResolved = IndexOf("/usr/lib/systemd/systemd-resolved");  // every host, busy
const size_t kImplant = IndexOf("/tmp/.ICE-unix/.kworker");             // on three hosts

uint64_t Mix(uint64_t x) {  // splitmix64: cheap, deterministic per input
  x += 0x9e3779b97f4a7c15;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9;
  x = (x ^ (x >> 27)) * 0x94d049bb133111eb;
  return x ^ (x >> 31);
}
uint64_t HashText(std::string_view s) {  // FNV-1a; std::hash may differ between builds
  uint64_t h = 0xcbf29ce484222325;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3;
  return h;
}
std::string Hex(uint64_t seed, int chars) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(chars, '0');
  for (int i = 0; i < chars; ++i) {
    if (i % 16 == 0) seed = Mix(seed);
    out[i] = kDigits[(seed >> (4 * (i % 16))) & 15];
  }
  return out;
}
void AppendIp(std::string& out, uint32_t ip) {
  for (int shift = 24; shift >= 0; shift -= 8) {
    absl::StrAppend(&out, (ip >> shift) & 255);
    if (shift) out.push_back('.');
  }
}
std::string IpText(uint32_t ip) {
  std::string s;
  AppendIp(s, ip);
  return s;
}
void SetTime(google::protobuf::Timestamp* t, int64_t ns) {
  t->set_seconds(ns / 1'000'000'000);
  t->set_nanos(static_cast<int32_t>(ns % 1'000'000'000));
}

bool HostHas(const ImageSpec& spec, uint8_t role, int h, int hosts) {
  switch (spec.spread) {
    case kByRole:
      return (spec.roles & role) != 0;
    case kOneIn37:
      return h % 37 == 5;
    case kOneIn50Unique:
      return h % 50 == 0;
    case kThreeHosts:
      return h == hosts / 3 || h == 2 * hosts / 3 || h == hosts - 1;
  }
  return false;
}

}  // namespace

// An image as one host runs it: its strings built once.
struct HostImage {
  const ImageSpec* spec;
  size_t catalog_index;
  std::string exe, sha256, container_id, comm;
  std::vector<std::string> argv;
  uint32_t pid;
  int64_t start_ns;
};

struct Fleet::Host {
  int index;
  std::string id, instance, hostname, kernel;
  uint32_t ip;
  std::string ip_text;
  std::vector<HostImage> images;
  std::vector<uint32_t> net_weight;  // cumulative network weight per image
  std::vector<uint32_t> exec_weight;
  uint64_t total = 0;  // events this host emits
  uint64_t emitted = 0;
  uint64_t alert_offset = 0;
  int64_t boot_ns = 0;
  uint64_t cookie = 0;
  std::mt19937_64 rng;
  // Recent TCP connections, to end later (flow ends).
  struct Open {
    size_t image;
    const Flow* flow;
    uint32_t remote;
    uint32_t local_port, remote_port;
    uint64_t cookie;
    int64_t start_ns;
  };
  std::array<Open, 16> open{};
  size_t open_count = 0;
  uint64_t Roll(uint64_t n) { return rng() % n; }
};

Fleet::Fleet(const FleetOptions& options) : options_(options) {
  const auto& catalog = Catalog();
  const int64_t start_ns = absl::ToUnixNanos(options.start);
  for (int h = 0; h < options.hosts; ++h) {
    auto host = std::make_unique<Host>();
    host->index = h;
    host->id = Hex(HashText("machine-id") + h, 32);  // like /etc/machine-id
    host->instance = Hex(HashText("instance") + h, 16);
    static constexpr const char* kRoleNames[] = {"web", "db", "worker", "build", "k8s"};
    static constexpr uint8_t kRoles[] = {kWeb,    kWeb,    kWeb,   kWeb, kDb,
                                         kWorker, kWorker, kBuild, kK8s, kK8s};
    const uint8_t role = kRoles[h % 10];
    host->hostname = absl::StrCat(kRoleNames[std::countr_zero(role)], "-", h, ".prod.example.net");
    host->kernel = h % 3 ? "6.1.0-18-amd64" : "6.1.0-21-amd64";
    host->ip = Ip(10, 20, 0, 0) + static_cast<uint32_t>(h) + 1;
    host->ip_text = IpText(host->ip);
    host->rng.seed(Mix(static_cast<uint64_t>(h)));
    host->boot_ns = start_ns - static_cast<int64_t>(Mix(h) % 2'000'000) * 1'000'000'000;
    host->cookie = Mix(h + 7) & 0xffffffffff;
    host->alert_offset = Mix(h + 13) % 10'000;
    host->total = options.events / options.hosts +
                  (static_cast<uint64_t>(h) < options.events % options.hosts ? 1 : 0);
    uint32_t net = 0, exec = 0;
    for (size_t c = 0; c < catalog.size(); ++c) {
      const ImageSpec& spec = catalog[c];
      if (!HostHas(spec, role, h, options.hosts)) continue;
      HostImage& im = host->images.emplace_back();
      im.spec = &spec;
      im.catalog_index = c;
      im.exe = absl::StrReplaceAll(spec.exe, {{"%h", host->hostname}});
      for (absl::string_view a : absl::StrSplit(spec.argv, ' '))
        im.argv.push_back(absl::StrReplaceAll(a, {{"%h", host->hostname}}));
      // One host in 20 runs another build of each binary: two digests per path.
      if (spec.traits & kHashed) im.sha256 = Hex(HashText(im.exe) + (h % 20 == 3 ? 2 : 1), 64);
      if (spec.traits & kContainer) im.container_id = Hex(HashText(im.exe) ^ Mix(h), 64);
      im.comm = im.exe.substr(im.exe.rfind('/') + 1).substr(0, 15);
      im.pid = 300 + static_cast<uint32_t>((HashText(im.exe) + c * 7919 + h) % 60000);
      im.start_ns = host->boot_ns + static_cast<int64_t>(Mix(c + h) % 600) * 1'000'000'000;
      net += static_cast<uint32_t>(spec.weight);
      exec += 1 + static_cast<uint32_t>(spec.weight);
      host->net_weight.push_back(net);
      host->exec_weight.push_back(exec);
    }
    counts_.images += host->images.size();
    hosts_.push_back(std::move(host));
  }
  const Host& middle = *hosts_[hosts_.size() / 2];
  targets_.history_host = middle.id;
  targets_.history_since = options.start + options.span / 2;
  targets_.rare_exe = catalog[kImplant].exe;
  targets_.common_exe = catalog[kResolved].exe;
  targets_.common_sha256 = Hex(HashText(catalog[kCurl].exe) + 1, 64);
  targets_.common_cidr = kSaasCidr;
  targets_.exclude_host = hosts_.front()->id;
}

Fleet::~Fleet() = default;

std::vector<v1::Hello> Fleet::Hellos() const {
  std::vector<v1::Hello> out;
  for (const auto& h : hosts_) {
    v1::Hello& hello = out.emplace_back();
    hello.set_host_id(h->id);
    hello.set_agent_instance(h->instance);
    hello.set_hostname(h->hostname);
    hello.set_kernel_release(h->kernel);
    hello.set_agent_version("0.9.0");
  }
  return out;
}

WriteGroup Fleet::Next(size_t n) {
  WriteGroup group;
  group.arena = std::make_unique<google::protobuf::Arena>();
  const size_t batch = std::max<size_t>(1, options_.agent_batch);
  while (group.envelopes.size() < n && emitted_ < options_.events) {
    Host& host = *hosts_[cursor_];
    cursor_ = (cursor_ + 1) % hosts_.size();
    // A whole agent batch, unless the Write is full (the group commit
    // then leaves the batch for the next Write; here it is split instead).
    const uint64_t take =
        std::min<uint64_t>({batch, host.total - host.emitted, n - group.envelopes.size()});
    for (uint64_t i = 0; i < take; ++i) Emit(host, group);
    emitted_ += take;
  }
  return group;
}

void Fleet::Emit(Host& host, WriteGroup& group) {
  auto* env = google::protobuf::Arena::CreateMessage<v1::Envelope>(group.arena.get());
  const uint64_t j = host.emitted++;
  // Spread over the span, hosts staggered, strictly increasing per host.
  const int64_t span_ns = absl::ToInt64Nanoseconds(options_.span);
  const int64_t now_ns = absl::ToUnixNanos(options_.start) +
                         static_cast<int64_t>((static_cast<double>(j) +
                                               host.index / static_cast<double>(hosts_.size())) /
                                              static_cast<double>(host.total) * span_ns) +
                         static_cast<int64_t>(j % 1000);
  env->set_host_id(host.id);
  env->set_agent_instance(host.instance);
  env->set_seq(j + 1);
  SetTime(env->mutable_time(), now_ns);
  env->set_boottime_ns(static_cast<uint64_t>(now_ns - host.boot_ns));
  env->set_hostname(host.hostname);
  if ((j + host.alert_offset) % 10'000 == 5'000) {  // ~1 alert per 10,000 events
    FillAlert(host, now_ns, *env);
    ++counts_.alerts;
    if (targets_.sample_alert.host_id().empty()) targets_.sample_alert = *env;
  } else if (host.index % 20 == 0 && j == host.total / 2) {  // ~1 loss per 200,000
    v1::Loss* loss = env->mutable_loss();
    loss->set_reason("ring_buffer_full");
    loss->set_count(1 + host.Roll(5000));
    SetTime(loss->mutable_first_time(), now_ns - 2'000'000'000);
    SetTime(loss->mutable_last_time(), now_ns - 1'000'000'000);
    ++counts_.losses;
  } else if (const uint64_t roll = host.Roll(1000); roll < 85) {
    // Process lifecycle, 8.5%: exec 4, exit 3.5, fork 1.
    const uint32_t w = static_cast<uint32_t>(host.Roll(host.exec_weight.back()));
    const size_t i = std::upper_bound(host.exec_weight.begin(), host.exec_weight.end(), w) -
                     host.exec_weight.begin();
    const HostImage& im = host.images[i];
    v1::Process* p = roll < 40   ? env->mutable_exec()->mutable_process()
                     : roll < 75 ? env->mutable_exit()->mutable_process()
                                 : env->mutable_fork()->mutable_process();
    p->set_pid(im.pid + static_cast<uint32_t>(host.Roll(64)));
    p->set_tid(p->pid());
    p->set_ppid(im.pid);
    p->set_uid(im.spec->uid);
    p->set_gid(im.spec->uid);
    p->set_exe(im.exe);
    for (const std::string& a : im.argv) p->add_argv(a);
    SetTime(p->mutable_start_time(), roll < 40 ? now_ns : im.start_ns);
    p->set_start_boottime_ns(static_cast<uint64_t>(now_ns - host.boot_ns));
    p->set_parent_start_boottime_ns(static_cast<uint64_t>(im.start_ns - host.boot_ns));
    p->set_cgroup_id(4242 + i);
    p->set_comm(im.comm);
    p->set_sha256(im.sha256);
    p->set_container_id(im.container_id);
    if (roll >= 40 && roll < 75) env->mutable_exit()->set_exit_code(roll % 7 == 0 ? 1 : 0);
    ++(roll < 40 ? counts_.exec : roll < 75 ? counts_.exit : counts_.fork);
  } else {
    FillNetwork(host, now_ns, *env);
    ++(env->network().kind() == v1::NETWORK_KIND_FLOW_END ? counts_.flow_ends : counts_.network);
  }
  counts_.bytes += env->ByteSizeLong();
  group.envelopes.push_back(env);
}

namespace {

void FillProcess(const HostImage& im, size_t i, v1::Process* p) {
  p->set_pid(im.pid);
  p->set_tid(im.pid);
  p->set_ppid(1);
  p->set_uid(im.spec->uid);
  p->set_gid(im.spec->uid);
  p->set_exe(im.exe);
  for (const std::string& a : im.argv) p->add_argv(a);
  SetTime(p->mutable_start_time(), im.start_ns);
  p->set_cgroup_id(4242 + i);
  p->set_comm(im.comm);
  p->set_sha256(im.sha256);
  p->set_container_id(im.container_id);
}

// community_id-shaped: "1:" and 28 base64 characters.
std::string CommunityId(uint64_t seed) {
  static constexpr char k64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out = "1:";
  for (int i = 0; i < 27; ++i) {
    if (i % 10 == 0) seed = Mix(seed);
    out.push_back(k64[(seed >> (6 * (i % 10))) & 63]);
  }
  return out + "=";
}

}  // namespace

void Fleet::FillNetwork(Host& host, int64_t now_ns, v1::Envelope& env) {
  v1::NetworkEvent* n = env.mutable_network();
  Host::Open conn;
  // About a third of TCP connections are seen ending.
  const bool end = host.open_count > 0 && host.Roll(4) == 0;
  if (end) {
    conn = host.open[--host.open_count];
    n->set_kind(v1::NETWORK_KIND_FLOW_END);
    n->set_duration_ns(static_cast<uint64_t>(now_ns - conn.start_ns));
    n->set_bytes_sent(200 + host.Roll(20000));
    n->set_bytes_received(500 + host.Roll(200000));
    n->set_outcome(v1::OUTCOME_ESTABLISHED);
  } else {
    const uint32_t w = static_cast<uint32_t>(host.Roll(host.net_weight.back()));
    conn.image = std::upper_bound(host.net_weight.begin(), host.net_weight.end(), w) -
                 host.net_weight.begin();
    const auto& flows = host.images[conn.image].spec->flows;
    conn.flow = &flows[host.Roll(flows.size())];
    conn.remote = conn.flow->pool.base + static_cast<uint32_t>(host.Roll(conn.flow->pool.count));
    const uint32_t ephemeral = 32768 + static_cast<uint32_t>(host.Roll(28000));
    const bool in = conn.flow->direction == kIn;
    conn.local_port = in ? conn.flow->port : ephemeral;
    conn.remote_port = in ? ephemeral : conn.flow->port;
    conn.cookie = ++host.cookie;
    conn.start_ns = now_ns;
    const bool udp = conn.flow->protocol == kUdp;
    n->set_kind(udp ? (in ? v1::NETWORK_KIND_UDP_RECV : v1::NETWORK_KIND_UDP_SEND)
                    : (in ? v1::NETWORK_KIND_ACCEPT : v1::NETWORK_KIND_CONNECT));
    n->set_outcome(!in && !udp && host.Roll(100) == 0 ? v1::OUTCOME_TIMED_OUT
                                                      : v1::OUTCOME_ESTABLISHED);
    if (!udp && host.open_count < host.open.size()) host.open[host.open_count++] = conn;
  }
  FillProcess(host.images[conn.image], conn.image, n->mutable_process());
  n->set_protocol(conn.flow->protocol);
  n->set_ip_version(4);
  n->set_local_ip(conn.remote == kLoopback.base ? "127.0.0.1" : host.ip_text);
  n->set_local_port(conn.local_port);
  std::string remote;
  AppendIp(remote, conn.remote);
  n->set_remote_ip(std::move(remote));
  n->set_remote_port(conn.remote_port);
  n->set_direction(conn.flow->direction);
  n->set_community_id(CommunityId(conn.cookie ^ host.id.size() ^ (uint64_t{1} << host.index % 64)));
  n->set_socket_cookie(conn.cookie);
  n->set_netns(4026531840u);
}

void Fleet::FillAlert(Host& host, int64_t now_ns, v1::Envelope& env) {
  // The implant where there is one, else a busy image doing something new.
  size_t i = host.images.size();
  for (size_t k = 0; k < host.images.size(); ++k)
    if (host.images[k].catalog_index == kImplant) i = k;
  const bool implant = i < host.images.size();
  if (!implant) {
    const uint32_t w = static_cast<uint32_t>(host.Roll(host.net_weight.back()));
    i = std::upper_bound(host.net_weight.begin(), host.net_weight.end(), w) -
        host.net_weight.begin();
  }
  const HostImage& im = host.images[i];
  v1::Alert* a = env.mutable_alert();
  a->set_id(Hex(Mix(host.index) ^ now_ns, 32));
  a->set_rule(implant ? "suspicious_image_network" : "new_behavior");
  a->set_severity(implant ? v1::SEVERITY_HIGH : v1::SEVERITY_MEDIUM);
  const uint32_t remote = implant ? kTor.base + static_cast<uint32_t>(host.Roll(kTor.count))
                                  : kSaas.base + static_cast<uint32_t>(host.Roll(kSaas.count));
  const uint32_t port = implant ? 4444 : 8443;
  a->set_summary(
      absl::StrCat(im.exe, " connected to ", IpText(remote), ":", port,
                   implant ? " from a world-writable directory" : ", a destination it never used"));
  FillProcess(im, i, a->mutable_process());
  v1::ImageIdentity* image = a->mutable_image();
  image->set_exe(im.exe);
  image->set_sha256(im.sha256);
  image->set_key(im.sha256.empty() ? im.exe : im.sha256);
  image->set_container_id(im.container_id);
  if (implant) image->add_suspicious("world_writable_dir");
  for (const char* parent : {"/usr/bin/bash", "/usr/sbin/sshd"}) {
    v1::Process* p = a->add_ancestors();
    p->set_exe(parent);
    p->set_pid(im.pid - 1);
    p->add_argv(parent);
  }
  v1::NetworkEvent* n = a->mutable_network();
  n->set_kind(v1::NETWORK_KIND_CONNECT);
  n->set_protocol(v1::PROTOCOL_TCP);
  n->set_ip_version(4);
  n->set_local_ip(host.ip_text);
  n->set_local_port(32768 + static_cast<uint32_t>(host.Roll(28000)));
  n->set_remote_ip(IpText(remote));
  n->set_remote_port(port);
  n->set_direction(v1::DIRECTION_OUTBOUND);
  n->set_outcome(v1::OUTCOME_ESTABLISHED);
  n->set_socket_cookie(++host.cookie);
  v1::BaselineFacts* facts = a->mutable_baseline();
  SetTime(facts->mutable_image_first_seen(), im.start_ns);
  facts->set_known_behaviors(static_cast<uint32_t>(im.spec->flows.size()));
  facts->add_new_facts(absl::StrCat("outbound tcp ", port, " ", IpText(remote)));
  a->set_occurrences(1);
}

}  // namespace sockwatch::store_bench
