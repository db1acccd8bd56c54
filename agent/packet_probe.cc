#include "agent/packet_probe.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "packet.skel.h"

namespace sockwatch {
namespace {

// Our filters: a fixed handle and priority, so a restarted agent replaces
// what a crashed one left behind instead of stacking a second copy.
constexpr uint32_t kHandle = 0x5357;  // "SW"
constexpr uint32_t kPriority = 0xC000;

absl::Status Errno(int err, absl::string_view what) {
  return absl::ErrnoToStatus(err < 0 ? -err : err, what);
}

// Runs fn with this thread in the namespace netns_fd (-1: as is). Sockets
// (netlink, ioctl) are created in the thread's namespace, so every interface
// call happens inside.
absl::Status InNetns(int netns_fd, const std::function<absl::Status()>& fn) {
  if (netns_fd < 0) return fn();
  const int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (self < 0) return Errno(errno, "open /proc/thread-self/ns/net");
  absl::Cleanup close_self = [self] { close(self); };
  if (setns(netns_fd, CLONE_NEWNET) != 0) return Errno(errno, "enter the inspected network namespace");
  absl::Status s = fn();
  if (setns(self, CLONE_NEWNET) != 0) {
    // Staying in the wrong namespace would misdirect every later socket.
    fprintf(stderr, "sockwatch-agent: cannot return to own network namespace: %s\n", strerror(errno));
    abort();
  }
  return s;
}

struct Iface {
  int ifindex;
  std::string name;
  bool inspectable;  // present, but down, loopback or not Ethernet when false
};

// Up, not loopback, Ethernet framing (what packet.bpf.c parses).
absl::StatusOr<std::vector<Iface>> Candidates() {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Errno(errno, "socket for interface flags");
  absl::Cleanup close_fd = [fd] { close(fd); };
  struct if_nameindex* names = if_nameindex();
  if (!names) return Errno(errno, "list interfaces");
  absl::Cleanup free_names = [names] { if_freenameindex(names); };
  std::vector<Iface> out;
  for (struct if_nameindex* n = names; n->if_index != 0; ++n) {
    struct ifreq ifr = {};
    strncpy(ifr.ifr_name, n->if_name, IFNAMSIZ - 1);
    if (ioctl(fd, SIOCGIFFLAGS, &ifr) != 0) continue;  // gone meanwhile
    const short flags = ifr.ifr_flags;
    if (ioctl(fd, SIOCGIFHWADDR, &ifr) != 0) continue;
    out.push_back({static_cast<int>(n->if_index), n->if_name,
                   (flags & IFF_UP) && !(flags & IFF_LOOPBACK) && ifr.ifr_hwaddr.sa_family == ARPHRD_ETHER});
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<PacketProbe>> PacketProbe::Load(const PacketProbeOptions& opts, int events_fd,
                                                               int counters_fd, int owner_fd) {
  if (opts.sample_bytes == 0 || opts.sample_bytes > SW_SAMPLE_MAX)
    return absl::InvalidArgumentError(
        absl::StrCat("inspection sample size must be 1..", SW_SAMPLE_MAX, " bytes, not ", opts.sample_bytes));
  if (opts.sample_segments == 0 || opts.sample_segments > 16)
    return absl::InvalidArgumentError(
        absl::StrCat("inspection segments must be 1..16, not ", opts.sample_segments));
  std::unique_ptr<PacketProbe> p(new PacketProbe());
  p->opts_ = opts;
  if (!opts.netns.empty()) {
    p->netns_fd_ = open(opts.netns.c_str(), O_RDONLY | O_CLOEXEC);
    if (p->netns_fd_ < 0) return Errno(errno, absl::StrCat("open network namespace ", opts.netns));
  }
  p->skel_ = packet_bpf__open();
  if (!p->skel_) return Errno(errno, "open packet.bpf.o");
  if (int err = bpf_map__reuse_fd(p->skel_->maps.sw_events, events_fd)) return Errno(err, "reuse ring buffer");
  if (int err = bpf_map__reuse_fd(p->skel_->maps.sw_counters, counters_fd)) return Errno(err, "reuse counters");
  if (owner_fd >= 0)
    if (int err = bpf_map__reuse_fd(p->skel_->maps.sw_sk_owner, owner_fd)) return Errno(err, "reuse owner map");
  p->skel_->rodata->wakeup_bytes = opts.wakeup_bytes;
  p->skel_->rodata->sample_bytes = opts.sample_bytes;
  p->skel_->rodata->sample_segments = opts.sample_segments;
  p->skel_->rodata->orphan_samples_per_sec = opts.orphan_samples_per_sec;
  if (int err = packet_bpf__load(p->skel_)) return Errno(err, "load packet.bpf.o");
  auto changed = p->Refresh();
  if (!changed.ok()) return changed.status();
  if (p->links_.empty() && !opts.interfaces.empty())
    return absl::NotFoundError(absl::StrCat("no interface to inspect: ", p->problems_.empty() ? "" : p->problems_[0]));
  return p;
}

PacketProbe::~PacketProbe() {
  Detach();
  packet_bpf__destroy(skel_);
  if (netns_fd_ >= 0) close(netns_fd_);
}

absl::Status PacketProbe::Attach(int ifindex) {
  DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
  // An existing clsact qdisc (another tool's, or ours from before) is fine.
  if (int err = bpf_tc_hook_create(&hook); err && err != -EEXIST) return Errno(err, "create clsact qdisc");
  const struct {
    bpf_tc_attach_point point;
    bpf_program* prog;
  } progs[] = {{BPF_TC_INGRESS, skel_->progs.sw_tc_ingress}, {BPF_TC_EGRESS, skel_->progs.sw_tc_egress}};
  for (const auto& p : progs) {
    hook.attach_point = p.point;
    DECLARE_LIBBPF_OPTS(bpf_tc_opts, o, .prog_fd = bpf_program__fd(p.prog), .flags = BPF_TC_F_REPLACE,
                        .handle = kHandle, .priority = kPriority);
    if (int err = bpf_tc_attach(&hook, &o)) {
      DetachOne(ifindex);
      return Errno(err, p.point == BPF_TC_INGRESS ? "attach tc ingress" : "attach tc egress");
    }
  }
  return absl::OkStatus();
}

void PacketProbe::DetachOne(int ifindex) {
  for (bpf_tc_attach_point point : {BPF_TC_INGRESS, BPF_TC_EGRESS}) {
    DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = point);
    DECLARE_LIBBPF_OPTS(bpf_tc_opts, o, .handle = kHandle, .priority = kPriority);
    bpf_tc_detach(&hook, &o);  // the interface may be gone: nothing to undo then
  }
}

void PacketProbe::Detach() {
  if (links_.empty()) return;
  (void)InNetns(netns_fd_, [&] {
    for (const Link& l : links_) DetachOne(l.ifindex);
    return absl::OkStatus();
  });
  links_.clear();
}

absl::StatusOr<bool> PacketProbe::Refresh() {
  bool changed = false;
  absl::Status s = InNetns(netns_fd_, [&]() -> absl::Status {
    auto cands = Candidates();
    if (!cands.ok()) return cands.status();
    std::vector<std::string> problems;
    // Forget links whose interface went (or changed index).
    const auto gone = [&](const Link& l) {
      return std::none_of(cands->begin(), cands->end(),
                          [&](const Iface& c) { return c.ifindex == l.ifindex && c.name == l.name; });
    };
    const size_t before = links_.size();
    links_.erase(std::remove_if(links_.begin(), links_.end(), gone), links_.end());
    changed = links_.size() != before;
    const auto wanted = [&](const std::string& name) {
      return opts_.interfaces.empty() ||
             std::find(opts_.interfaces.begin(), opts_.interfaces.end(), name) != opts_.interfaces.end();
    };
    for (const Iface& c : *cands) {
      if (!wanted(c.name)) continue;
      if (!c.inspectable) {
        if (!opts_.interfaces.empty())
          problems.push_back(absl::StrCat(c.name, ": down, loopback or not Ethernet"));
        continue;
      }
      if (std::any_of(links_.begin(), links_.end(), [&](const Link& l) { return l.ifindex == c.ifindex; }))
        continue;
      if (absl::Status a = Attach(c.ifindex); !a.ok()) {
        problems.push_back(absl::StrCat(c.name, ": ", a.message()));
        continue;
      }
      links_.push_back({c.ifindex, c.name});
      changed = true;
    }
    for (const std::string& name : opts_.interfaces)
      if (std::none_of(cands->begin(), cands->end(), [&](const Iface& c) { return c.name == name; }))
        problems.push_back(absl::StrCat(name, ": no such interface"));
    problems_ = std::move(problems);
    return UpdateLocalAddrs();
  });
  if (!s.ok()) return s;
  return changed;
}

absl::Status PacketProbe::UpdateLocalAddrs() {
  struct ifaddrs* ifa = nullptr;
  if (getifaddrs(&ifa) != 0) return Errno(errno, "list local addresses");
  absl::Cleanup free_ifa = [ifa] { freeifaddrs(ifa); };
  std::vector<std::array<uint8_t, 16>> addrs;
  for (struct ifaddrs* i = ifa; i; i = i->ifa_next) {
    if (!i->ifa_addr) continue;
    std::array<uint8_t, 16> a{};
    if (i->ifa_addr->sa_family == AF_INET) {
      std::memcpy(a.data(), &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, 4);
    } else if (i->ifa_addr->sa_family == AF_INET6) {
      std::memcpy(a.data(), &reinterpret_cast<sockaddr_in6*>(i->ifa_addr)->sin6_addr, 16);
    } else {
      continue;
    }
    addrs.push_back(a);
  }
  const int fd = bpf_map__fd(skel_->maps.sw_local_addrs);
  // Add first, then remove what is no longer local: never a moment with none.
  const uint8_t one = 1;
  for (const auto& a : addrs)
    if (bpf_map_update_elem(fd, a.data(), &one, BPF_ANY) != 0) return Errno(errno, "update local addresses");
  std::array<uint8_t, 16> key{}, next{};
  std::vector<std::array<uint8_t, 16>> stale;
  void* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, next.data()) == 0) {
    if (std::find(addrs.begin(), addrs.end(), next) == addrs.end()) stale.push_back(next);
    key = next;
    prev = key.data();
  }
  for (const auto& a : stale) bpf_map_delete_elem(fd, a.data());
  return absl::OkStatus();
}

std::vector<std::string> PacketProbe::Interfaces() const {
  std::vector<std::string> out;
  for (const Link& l : links_)
    out.push_back(opts_.netns.empty() ? l.name : absl::StrCat(opts_.netns, "/", l.name));
  return out;
}

absl::StatusOr<std::vector<OrphanSource>> PacketProbe::ReadOrphans() const {
  const int fd = bpf_map__fd(skel_->maps.sw_orphan_src);
  std::vector<OrphanSource> out;
  std::array<uint8_t, 16> key{}, next{};
  void* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, next.data()) == 0) {
    sw_orphan_counts c;
    if (bpf_map_lookup_elem(fd, next.data(), &c) == 0) {
      OrphanSource s;
      s.addr.assign(next.begin(), next.end());
      std::copy(std::begin(c.counts), std::end(c.counts), s.counts.begin());
      out.push_back(std::move(s));
    }
    key = next;
    prev = key.data();
  }
  return out;
}

}  // namespace sockwatch
