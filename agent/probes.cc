#include "agent/probes.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/host.h"
#include "process.skel.h"
#include "tcp.skel.h"
#include "udp.skel.h"

namespace sockwatch {
namespace {

absl::Status Errno(int err, absl::string_view what) {
  // libbpf returns -errno; some paths set errno and return NULL.
  return absl::ErrnoToStatus(err < 0 ? -err : err, what);
}

// libbpf's messages go to stderr only when something failed to load, so a
// normal start stays quiet.
int LibbpfPrint(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  return vfprintf(stderr, fmt, args);
}

template <typename Skel>
absl::Status ReuseShared(Skel* skel, process_bpf* owner) {
  if (int err = bpf_map__reuse_fd(skel->maps.sw_events, bpf_map__fd(owner->maps.sw_events)))
    return Errno(err, "reuse ring buffer");
  if (int err = bpf_map__reuse_fd(skel->maps.sw_counters, bpf_map__fd(owner->maps.sw_counters)))
    return Errno(err, "reuse counters");
  return absl::OkStatus();
}

v1::HookCoverage* AddHook(v1::Coverage* c, absl::string_view family,
                          std::initializer_list<const char*> mechanisms) {
  v1::HookCoverage* h = c->add_hooks();
  h->set_family(std::string(family));
  for (const char* m : mechanisms) h->add_mechanisms(m);
  return h;
}

}  // namespace

const char* CounterName(int i) {
  static constexpr const char* kNames[SW_CNT_MAX] = {
      "ringbuf_full",      "exec_argv_fault", "exec_path_fault", "owner_map_full",
      "owner_missing",     "udp_dedup_hit",   "fd_resolve_fail", "retired_7",
      "inspect_flow_map_full", "inspect_sample_skipped", "inspect_orphan_not_sampled",
      "inspect_parse_fail"};
  return i >= 0 && i < SW_CNT_MAX ? kNames[i] : "unknown";
}

// Not losses: suppressed repeats, and what was counted but not sampled.
bool CounterIsLoss(int i) {
  return i != SW_CNT_UDP_DEDUP_HIT && i != SW_CNT_RETIRED_7 && i != SW_CNT_SAMPLE_SKIPPED &&
         i != SW_CNT_ORPHAN_NOT_SAMPLED;
}

absl::StatusOr<std::unique_ptr<Probes>> Probes::Load(const ProbeOptions& opts) {
  libbpf_set_print(LibbpfPrint);
  std::unique_ptr<Probes> p(new Probes());
  p->coverage_.set_kernel_release(KernelRelease());
  p->coverage_.set_btf(access("/sys/kernel/btf/vmlinux", R_OK) == 0);
  p->coverage_.set_cgroup2_path(opts.cgroup2_path);
  p->coverage_.set_ring_buffer_bytes(opts.ring_bytes);

  // The process family owns the shared maps: without it nothing is attributed.
  if (absl::Status s = p->LoadProcess(opts); !s.ok()) return s;
  AddHook(&p->coverage_, "process",
          {"tp/sched/sched_process_exec", "tp_btf/sched_process_fork", "tp/sched/sched_process_exit"})
      ->set_available(true);

  v1::HookCoverage* tcp = AddHook(&p->coverage_, "tcp",
                                  {"tp_btf/inet_sock_set_state", "tp/syscalls/sys_exit_accept4",
                                   "tp/syscalls/sys_exit_accept", "tp/syscalls/sys_exit_listen"});
  if (absl::Status s = p->LoadTcp(opts); s.ok()) {
    tcp->set_available(true);
  } else {
    tcp->set_error(std::string(s.message()));
    p->coverage_.add_blind_spots("TCP connect/accept/listen/close are not observed: " +
                                 std::string(s.message()));
  }
  v1::HookCoverage* udp = AddHook(&p->coverage_, "udp",
                                  {"cgroup/sendmsg4", "cgroup/sendmsg6", "cgroup/recvmsg4",
                                   "cgroup/recvmsg6", "tp/syscalls/sys_exit_connect"});
  if (absl::Status s = p->LoadUdp(opts); s.ok()) {
    udp->set_available(true);
    p->coverage_.add_blind_spots(
        "UDP on a connected socket is reported once, at connect(); sends with write()/send() after "
        "that are not reported one by one");
    p->coverage_.add_blind_spots(
        "UDP receives are reported only when the receiver asks for the source address "
        "(recvfrom/recvmsg with an address buffer)");
    p->coverage_.add_blind_spots(
        "unconnected UDP sends from a wildcard-bound socket report local address 0.0.0.0/:: "
        "and no Community ID (the kernel picks the source after the hook)");
  } else {
    udp->set_error(std::string(s.message()));
    p->coverage_.add_blind_spots("UDP flows are not observed: " + std::string(s.message()));
  }
  if (opts.inspect) {
    if (absl::Status s = p->LoadPacket(opts); !s.ok()) {
      v1::HookCoverage* pk = AddHook(&p->coverage_, "packet", {"tc/clsact ingress", "tc/clsact egress"});
      pk->set_error(std::string(s.message()));
      p->coverage_.add_blind_spots("protocol inspection is off: " + std::string(s.message()));
    } else {
      p->UpdatePacketCoverage();
    }
  } else {
    v1::HookCoverage* pk = AddHook(&p->coverage_, "packet", {});
    pk->set_error("disabled (--inspect_interfaces=none)");
    p->coverage_.add_blind_spots("protocol inspection is disabled: payloads and orphan packets are not judged");
  }
  return p;
}

absl::Status Probes::LoadPacket(const ProbeOptions& opts) {
  PacketProbeOptions po = opts.packet;
  po.wakeup_bytes = opts.wakeup_bytes;
  auto pk = PacketProbe::Load(po, bpf_map__fd(process_->maps.sw_events), bpf_map__fd(process_->maps.sw_counters),
                              tcp_ ? bpf_map__fd(tcp_->maps.sw_sk_owner) : -1);
  if (!pk.ok()) return pk.status();
  packet_ = std::move(*pk);
  return absl::OkStatus();
}

void Probes::UpdatePacketCoverage() {
  if (!packet_) return;
  v1::HookCoverage* pk = nullptr;
  for (v1::HookCoverage& h : *coverage_.mutable_hooks())
    if (h.family() == "packet") pk = &h;
  if (!pk) pk = AddHook(&coverage_, "packet", {"tc/clsact ingress", "tc/clsact egress"});
  pk->set_available(true);
  pk->clear_interfaces();
  for (const std::string& name : packet_->Interfaces()) pk->add_interfaces(name);
  pk->clear_error();
  if (!packet_->problems().empty()) pk->set_error(absl::StrJoin(packet_->problems(), "; "));
  // The blind spots of inspection, said once.
  static constexpr const char* kPacketBlind[] = {
      "protocol inspection does not see loopback traffic",
      "protocol inspection judges only IPv4/IPv6 without extension headers on Ethernet interfaces",
      "packets routed through this host (to containers behind host-side veths, for instance) are not "
      "inspected: only packets to this namespace's own addresses and packets its sockets send are",
      "protocol inspection's kernel tables are LRU maps: a flood of new flows or spoofed sources pushes out "
      "the least recently active ones uncounted",
      "TCP flows older than the agent are not inspected (their first bytes were missed)"};
  for (const char* b : kPacketBlind)
    if (std::find(coverage_.blind_spots().begin(), coverage_.blind_spots().end(), b) ==
        coverage_.blind_spots().end())
      coverage_.add_blind_spots(b);
}

absl::Status Probes::LoadProcess(const ProbeOptions& opts) {
  process_ = process_bpf__open();
  if (!process_) return Errno(errno, "open process.bpf.o");
  if (int err = bpf_map__set_max_entries(process_->maps.sw_events, opts.ring_bytes))
    return Errno(err, "set ring buffer size");
  process_->rodata->wakeup_bytes = opts.wakeup_bytes;
  if (int err = process_bpf__load(process_)) return Errno(err, "load process.bpf.o");
  if (int err = process_bpf__attach(process_)) return Errno(err, "attach process probes");
  return absl::OkStatus();
}

absl::Status Probes::LoadTcp(const ProbeOptions& opts) {
  tcp_ = tcp_bpf__open();
  if (!tcp_) return Errno(errno, "open tcp.bpf.o");
  if (absl::Status s = ReuseShared(tcp_, process_); !s.ok()) return s;
  tcp_->rodata->wakeup_bytes = opts.wakeup_bytes;
  if (int err = tcp_bpf__load(tcp_)) return Errno(err, "load tcp.bpf.o");
  if (int err = tcp_bpf__attach(tcp_)) return Errno(err, "attach tcp probes");
  return absl::OkStatus();
}

absl::Status Probes::LoadUdp(const ProbeOptions& opts) {
  udp_ = udp_bpf__open();
  if (!udp_) return Errno(errno, "open udp.bpf.o");
  if (absl::Status s = ReuseShared(udp_, process_); !s.ok()) return s;
  udp_->rodata->wakeup_bytes = opts.wakeup_bytes;
  if (int err = bpf_map__set_max_entries(udp_->maps.sw_udp_seen, opts.udp_dedup_entries))
    return Errno(err, "set UDP dedup size");
  if (int err = udp_bpf__load(udp_)) return Errno(err, "load udp.bpf.o");
  cgroup_fd_ = open(opts.cgroup2_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cgroup_fd_ < 0) return Errno(errno, absl::StrCat("open cgroup v2 root ", opts.cgroup2_path));
  // Cgroup programs have no auto-attach: attach them to the root, and keep the
  // links in the skeleton so destroy detaches them.
  struct {
    bpf_program* prog;
    bpf_link** link;
  } cg[] = {{udp_->progs.sw_udp_sendmsg4, &udp_->links.sw_udp_sendmsg4},
            {udp_->progs.sw_udp_sendmsg6, &udp_->links.sw_udp_sendmsg6},
            {udp_->progs.sw_udp_recvmsg4, &udp_->links.sw_udp_recvmsg4},
            {udp_->progs.sw_udp_recvmsg6, &udp_->links.sw_udp_recvmsg6}};
  for (auto& c : cg) {
    *c.link = bpf_program__attach_cgroup(c.prog, cgroup_fd_);
    if (!*c.link)
      return Errno(errno, absl::StrCat("attach ", bpf_program__name(c.prog), " to ", opts.cgroup2_path));
  }
  if (int err = udp_bpf__attach(udp_)) return Errno(err, "attach udp probes");
  return absl::OkStatus();
}

void Probes::Detach() {
  if (packet_) packet_->Detach();
  if (udp_) udp_bpf__detach(udp_);
  if (tcp_) tcp_bpf__detach(tcp_);
  if (process_) process_bpf__detach(process_);
}

Probes::~Probes() {
  // Children first: they borrow the process object's maps.
  packet_.reset();
  udp_bpf__destroy(udp_);
  tcp_bpf__destroy(tcp_);
  process_bpf__destroy(process_);
  if (cgroup_fd_ >= 0) close(cgroup_fd_);
}

absl::Status Probes::SeedSocketOwner(uint64_t cookie, const sw_sk_owner& owner) {
  if (!tcp_) return absl::FailedPreconditionError("TCP probes are not loaded");
  if (bpf_map_update_elem(bpf_map__fd(tcp_->maps.sw_sk_owner), &cookie, &owner, BPF_NOEXIST) != 0 &&
      errno != EEXIST)
    return Errno(errno, "seed socket owner");
  return absl::OkStatus();
}

int Probes::ring_fd() const { return bpf_map__fd(process_->maps.sw_events); }

absl::StatusOr<Counters> Probes::ReadCounters() const {
  const int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return Errno(ncpu, "count possible CPUs");
  std::vector<uint64_t> per_cpu(ncpu);
  Counters total{};
  const int fd = bpf_map__fd(process_->maps.sw_counters);
  for (uint32_t i = 0; i < SW_CNT_MAX; ++i) {
    if (bpf_map_lookup_elem(fd, &i, per_cpu.data()) != 0) return Errno(errno, "read counters");
    for (uint64_t v : per_cpu) total[i] += v;
  }
  return total;
}

}  // namespace sockwatch
