#include "agent/decoder.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/community_id.h"
#include "agent/text.h"

extern "C" {
#include "sockwatch_events.h"
}

namespace sockwatch {
namespace {

// The kernel and the agent must agree on every layout: a drift fails the build.
static_assert(sizeof(sw_header) == 16);
static_assert(offsetof(sw_header, ts_ns) == 8);
static_assert(sizeof(sw_task) == 48);
static_assert(offsetof(sw_task, start_ns) == 8 && offsetof(sw_task, comm) == 32);
static_assert(offsetof(sw_exec, task) == 16 && offsetof(sw_exec, ppid) == 64);
static_assert(offsetof(sw_exec, path_len) == 80 && offsetof(sw_exec, data) == 96);
static_assert(sizeof(sw_exec) == 96 + SW_PATH_MAX + SW_ARGV_MAX);
static_assert(sizeof(sw_fork) == 80 && offsetof(sw_fork, parent_start_ns) == 72);
static_assert(sizeof(sw_exit) == 72 && offsetof(sw_exit, exit_code) == 64);
static_assert(offsetof(sw_net, saddr) == 64 && offsetof(sw_net, daddr) == 80);
static_assert(offsetof(sw_net, sport) == 96 && offsetof(sw_net, outcome) == 104);
static_assert(offsetof(sw_net, sock_cookie) == 112 && sizeof(sw_net) == 144);
static_assert(offsetof(sw_payload, saddr) == 64 && offsetof(sw_payload, sport) == 96);
static_assert(offsetof(sw_payload, ifindex) == 104 && offsetof(sw_payload, sock_cookie) == 112);
static_assert(offsetof(sw_payload, len) == 128 && offsetof(sw_payload, data) == 136);
static_assert(sizeof(sw_payload) == 136 + SW_SAMPLE_MAX);
static_assert(offsetof(sw_orphan, sport) == 48 && offsetof(sw_orphan, ifindex) == 56);
static_assert(offsetof(sw_orphan, sock_cookie) == 64 && sizeof(sw_orphan) == 80);

template <typename T>
absl::StatusOr<T> Read(absl::Span<const uint8_t> rec, const char* what) {
  if (rec.size() != sizeof(T))
    return absl::InvalidArgumentError(
        absl::StrCat(what, " record of ", rec.size(), " bytes, want ", sizeof(T)));
  T v;
  std::memcpy(&v, rec.data(), sizeof(T));
  return v;
}

std::string Comm(const char (&comm)[SW_TASK_COMM_LEN]) {
  return std::string(comm, strnlen(comm, SW_TASK_COMM_LEN));
}

ProcInfo FromTask(const sw_task& t) {
  ProcInfo p;
  p.pid = t.tgid;
  p.uid = t.uid;
  p.gid = t.gid;
  p.start_ns = t.start_ns;
  p.cgroup_id = t.cgroup_id;
  p.comm = Comm(t.comm);
  return p;
}

std::string IpString(uint16_t family, const uint8_t (&addr)[16]) {
  if (family != AF_INET6)  // inet_ntop goes through printf: IPv4 is most events
    return absl::StrCat(addr[0], ".", addr[1], ".", addr[2], ".", addr[3]);
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(family == AF_INET6 ? AF_INET6 : AF_INET, addr, buf, sizeof(buf));
  return buf;
}

v1::NetworkKind KindOf(uint16_t kind) {
  switch (kind) {
    case SW_KIND_TCP_CONNECT: return v1::NETWORK_KIND_CONNECT;
    case SW_KIND_TCP_ACCEPT: return v1::NETWORK_KIND_ACCEPT;
    case SW_KIND_TCP_LISTEN: return v1::NETWORK_KIND_LISTEN;
    case SW_KIND_TCP_CLOSE: return v1::NETWORK_KIND_FLOW_END;
    case SW_KIND_UDP_SEND: return v1::NETWORK_KIND_UDP_SEND;
    case SW_KIND_UDP_RECV: return v1::NETWORK_KIND_UDP_RECV;
    case SW_KIND_UDP_CONNECT: return v1::NETWORK_KIND_UDP_CONNECT;
  }
  return v1::NETWORK_KIND_UNSPECIFIED;
}

}  // namespace

BootClock::BootClock() {
  timespec rt, bt;
  clock_gettime(CLOCK_REALTIME, &rt);
  clock_gettime(CLOCK_BOOTTIME, &bt);
  offset_ns_ = (int64_t{rt.tv_sec} - bt.tv_sec) * 1'000'000'000 + (rt.tv_nsec - bt.tv_nsec);
}

uint64_t BootClock::NowBootNs() {
  timespec bt;
  clock_gettime(CLOCK_BOOTTIME, &bt);
  return uint64_t(bt.tv_sec) * 1'000'000'000 + bt.tv_nsec;
}

void BootClock::ToTimestamp(uint64_t boot_ns, google::protobuf::Timestamp* ts) const {
  const int64_t wall = int64_t(boot_ns) + offset_ns_;
  ts->set_seconds(wall / 1'000'000'000);
  ts->set_nanos(wall % 1'000'000'000);
}

std::vector<std::string> SplitArgv(absl::string_view block) {
  if (block.empty()) return {};
  if (block.back() == '\0') block.remove_suffix(1);
  return absl::StrSplit(block, absl::ByChar('\0'));
}

std::string JoinReversedPath(absl::string_view components) {
  std::vector<absl::string_view> parts = absl::StrSplit(components, absl::ByChar('\0'));
  std::string path;
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
    if (it->empty()) continue;
    absl::StrAppend(&path, "/", *it);
  }
  return path.empty() ? "/" : path;
}

void FillProcess(const ProcInfo& p, const BootClock& clock, v1::Process* out) {
  out->set_pid(p.pid);
  out->set_ppid(p.ppid);
  out->set_uid(p.uid);
  out->set_gid(p.gid);
  if (p.text_valid) {  // the common case, checked once when the table got it
    out->set_exe(p.exe);
    out->mutable_argv()->Assign(p.argv.begin(), p.argv.end());
    out->set_comm(p.comm);
  } else {
    out->set_exe(ValidUtf8(p.exe));
    out->set_comm(ValidUtf8(p.comm));
    bool raw_needed = !IsValidUtf8(p.exe);
    for (const std::string& a : p.argv) {
      out->add_argv(ValidUtf8(a));
      raw_needed |= !IsValidUtf8(a);
    }
    if (raw_needed) {
      // Nothing lost: the exact bytes ride along when the text had to be mended.
      out->set_exe_raw(p.exe);
      for (const std::string& a : p.argv) out->add_argv_raw(a);
    }
  }
  if (p.start_ns) clock.ToTimestamp(p.start_ns, out->mutable_start_time());
  out->set_start_boottime_ns(p.start_ns);
  out->set_parent_start_boottime_ns(p.parent_start_ns);
  out->set_cgroup_id(p.cgroup_id);
  out->set_argv_truncated(p.argv_truncated);
  out->set_argv_full_len(p.argv_full_len);
  out->set_exe_deleted(p.exe_deleted);
  out->set_exe_truncated(p.exe_truncated);
  out->set_from_snapshot(p.from_snapshot);
}

absl::StatusOr<bool> Decoder::Decode(absl::Span<const uint8_t> rec, v1::Envelope* out) {
  out->Clear();
  if (rec.size() < sizeof(sw_header))
    return absl::InvalidArgumentError(absl::StrCat("record of ", rec.size(), " bytes is shorter than its header"));
  sw_header h;
  std::memcpy(&h, rec.data(), sizeof(h));
  if (h.size != rec.size())
    return absl::InvalidArgumentError(
        absl::StrCat("record kind ", h.kind, " says ", h.size, " bytes, has ", rec.size()));
  out->set_boottime_ns(h.ts_ns);
  clock_->ToTimestamp(h.ts_ns, out->mutable_time());
  switch (h.kind) {
    case SW_KIND_EXEC: return DecodeExec(rec, out);
    case SW_KIND_FORK: return DecodeFork(rec, out);
    case SW_KIND_EXIT: return DecodeExit(rec, out);
    case SW_KIND_TCP_CONNECT:
    case SW_KIND_TCP_ACCEPT:
    case SW_KIND_TCP_LISTEN:
    case SW_KIND_TCP_CLOSE:
    case SW_KIND_UDP_SEND:
    case SW_KIND_UDP_RECV:
    case SW_KIND_UDP_CONNECT:
      return DecodeNet(rec, out);
  }
  ++unknown_kinds_;
  return false;
}

absl::StatusOr<bool> Decoder::DecodeExec(absl::Span<const uint8_t> rec, v1::Envelope* out) {
  constexpr size_t kFixed = offsetof(sw_exec, data);
  if (rec.size() < kFixed || rec.size() > sizeof(sw_exec))
    return absl::InvalidArgumentError(absl::StrCat("exec record of ", rec.size(), " bytes"));
  sw_exec e;
  std::memcpy(&e, rec.data(), kFixed);
  if (uint64_t{e.path_len} + e.argv_len != rec.size() - kFixed)
    return absl::InvalidArgumentError(absl::StrCat("exec record lengths ", e.path_len, "+", e.argv_len,
                                                   " do not match its ", rec.size() - kFixed, " data bytes"));
  const char* data = reinterpret_cast<const char*>(rec.data()) + kFixed;
  ProcInfo p = FromTask(e.task);
  p.ppid = e.ppid;
  p.parent_start_ns = e.parent_start_ns;
  p.exe = JoinReversedPath(absl::string_view(data, e.path_len));
  p.argv = SplitArgv(absl::string_view(data + e.path_len, e.argv_len));
  p.argv_full_len = e.argv_full_len;
  p.argv_truncated = e.flags & (SW_EXEC_ARGV_TRUNCATED | SW_EXEC_ARGV_FAULT);
  p.exe_deleted = e.flags & SW_EXEC_PATH_DELETED;
  p.exe_truncated = e.flags & (SW_EXEC_PATH_TRUNCATED | SW_EXEC_PATH_FAULT);
  const uint32_t pid = p.pid;
  const uint64_t start = p.start_ns;
  table_->Upsert(std::move(p));  // first: the table checks the text once for all events
  FillProcess(*table_->Find(pid, start), *clock_, out->mutable_exec()->mutable_process());
  out->mutable_exec()->mutable_process()->set_tid(e.task.pid);
  return true;
}

absl::StatusOr<bool> Decoder::DecodeFork(absl::Span<const uint8_t> rec, v1::Envelope* out) {
  auto e = Read<sw_fork>(rec, "fork");
  if (!e.ok()) return e.status();
  ProcInfo p = FromTask(e->child);
  p.ppid = e->ppid;
  p.parent_start_ns = e->parent_start_ns;
  table_->Fork(p);
  const ProcInfo* child = table_->Find(p.pid, p.start_ns);
  FillProcess(child ? *child : p, *clock_, out->mutable_fork()->mutable_process());
  return true;
}

absl::StatusOr<bool> Decoder::DecodeExit(absl::Span<const uint8_t> rec, v1::Envelope* out) {
  auto e = Read<sw_exit>(rec, "exit");
  if (!e.ok()) return e.status();
  v1::ProcessExit* x = out->mutable_exit();
  if (const ProcInfo* p = table_->Find(e->task.tgid, e->task.start_ns)) {
    FillProcess(*p, *clock_, x->mutable_process());
  } else {
    FillProcess(FromTask(e->task), *clock_, x->mutable_process());
    x->mutable_process()->set_unknown(true);
  }
  x->set_exit_code(e->exit_code);
  table_->Exit(e->task.tgid, e->task.start_ns, e->hdr.ts_ns);
  return true;
}

// A dual-stack socket talking IPv4 has v4-mapped IPv6 addresses (::ffff:a.b.c.d);
// the flow on the wire is IPv4, and that is what Zeek and Suricata hash.
static void UnmapV4(sw_net* e) {
  static constexpr uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  auto mapped_or_any = [](const uint8_t(&a)[16]) {
    static constexpr uint8_t kAny[16] = {};
    return std::memcmp(a, kPrefix, 12) == 0 || std::memcmp(a, kAny, 16) == 0;
  };
  if (e->family != AF_INET6 || std::memcmp(e->daddr, kPrefix, 12) != 0 || !mapped_or_any(e->saddr))
    return;
  e->family = AF_INET;
  std::memmove(e->saddr, e->saddr + 12, 4);
  std::memmove(e->daddr, e->daddr + 12, 4);
  std::memset(e->saddr + 4, 0, 12);
  std::memset(e->daddr + 4, 0, 12);
}

const char* OrphanPatternName(int p) {
  static constexpr const char* kNames[SW_ORPHAN_MAX] = {"null", "fin",     "xmas", "ack",       "rst",
                                                        "syn_ack", "other", "udp",  "dns_answer"};
  return p >= 0 && p < SW_ORPHAN_MAX ? kNames[p] : "unknown";
}

bool Decoder::IsPacket(absl::Span<const uint8_t> rec) {
  if (rec.size() < sizeof(sw_header)) return false;
  uint16_t kind;
  std::memcpy(&kind, rec.data(), sizeof(kind));
  return kind == SW_KIND_PAYLOAD || kind == SW_KIND_ORPHAN;
}

namespace {

template <typename T>
void FillTuple(const T& e, PacketRecord* r) {
  const size_t alen = e.family == AF_INET6 ? 16 : 4;
  r->protocol = e.protocol == IPPROTO_TCP ? v1::PROTOCOL_TCP : v1::PROTOCOL_UDP;
  r->ip_version = e.family == AF_INET6 ? 6 : 4;
  r->src_ip = IpString(e.family, e.saddr);
  r->dst_ip = IpString(e.family, e.daddr);
  r->src_addr.assign(e.saddr, e.saddr + alen);
  r->dst_addr.assign(e.daddr, e.daddr + alen);
  r->src_port = e.sport;
  r->dst_port = e.dport;
  r->ifindex = e.ifindex;
  r->cookie = e.sock_cookie;
  r->tcp_flags = e.tcp_flags;
}

}  // namespace

absl::StatusOr<PacketRecord> Decoder::DecodePacket(absl::Span<const uint8_t> rec) {
  if (rec.size() < sizeof(sw_header)) return absl::InvalidArgumentError("short packet record");
  sw_header h;
  std::memcpy(&h, rec.data(), sizeof(h));
  PacketRecord r;
  r.boot_ns = h.ts_ns;
  if (h.kind == SW_KIND_PAYLOAD) {
    auto e = Read<sw_payload>(rec, "payload");
    if (!e.ok()) return e.status();
    if (e->len > SW_SAMPLE_MAX)
      return absl::InvalidArgumentError(absl::StrCat("payload record says ", e->len, " bytes"));
    if (e->family != AF_INET && e->family != AF_INET6)
      return absl::InvalidArgumentError(absl::StrCat("payload record with address family ", e->family));
    r.kind = PacketRecord::kPayload;
    FillTuple(*e, &r);
    r.ingress = e->direction == SW_DIR_INBOUND;
    r.owner_tgid = e->task.tgid;
    r.owner_start_ns = e->task.start_ns;
    r.from_client = e->from_client;
    r.offset = e->offset;
    r.wire_len = e->wire_len;
    r.segment = e->segment;
    r.data.assign(reinterpret_cast<const char*>(e->data), e->len);
    return r;
  }
  if (h.kind == SW_KIND_ORPHAN) {
    auto e = Read<sw_orphan>(rec, "orphan");
    if (!e.ok()) return e.status();
    if (e->family != AF_INET && e->family != AF_INET6)
      return absl::InvalidArgumentError(absl::StrCat("orphan record with address family ", e->family));
    r.kind = PacketRecord::kOrphan;
    FillTuple(*e, &r);
    r.ingress = true;
    r.pattern = e->pattern;
    r.source_total = e->source_total;
    return r;
  }
  return absl::InvalidArgumentError(absl::StrCat("record kind ", h.kind, " is not a packet record"));
}

absl::StatusOr<bool> Decoder::DecodeNet(absl::Span<const uint8_t> rec, v1::Envelope* out) {
  auto r = Read<sw_net>(rec, "network");
  if (!r.ok()) return r.status();
  sw_net& e = *r;
  UnmapV4(&e);
  if (e.family != AF_INET && e.family != AF_INET6)
    return absl::InvalidArgumentError(absl::StrCat("network record with address family ", e.family));
  v1::NetworkEvent* n = out->mutable_network();
  n->set_kind(KindOf(e.hdr.kind));
  n->set_protocol(e.protocol == IPPROTO_TCP ? v1::PROTOCOL_TCP : v1::PROTOCOL_UDP);
  n->set_ip_version(e.family == AF_INET6 ? 6 : 4);
  n->set_local_ip(IpString(e.family, e.saddr));
  n->set_local_port(e.sport);
  if (e.hdr.kind != SW_KIND_TCP_LISTEN) {
    n->set_remote_ip(IpString(e.family, e.daddr));
    n->set_remote_port(e.dport);
    const size_t alen = e.family == AF_INET6 ? 16 : 4;
    // An unconnected UDP socket bound to the wildcard has no source address
    // yet when the hook runs: no Community ID beats a wrong one.
    const bool wildcard = std::all_of(e.saddr, e.saddr + alen, [](uint8_t b) { return b == 0; });
    if (!wildcard)
      n->set_community_id(CommunityId(e.protocol, absl::MakeConstSpan(e.saddr, alen), e.sport,
                                      absl::MakeConstSpan(e.daddr, alen), e.dport));
  }
  n->set_direction(e.direction == SW_DIR_OUTBOUND  ? v1::DIRECTION_OUTBOUND
                   : e.direction == SW_DIR_INBOUND ? v1::DIRECTION_INBOUND
                                                   : v1::DIRECTION_UNSPECIFIED);
  if (e.outcome == 0) {
    n->set_outcome(v1::OUTCOME_ESTABLISHED);
  } else {
    n->set_error_code(e.outcome);
    n->set_outcome(e.outcome == ECONNREFUSED ? v1::OUTCOME_REFUSED
                   : e.outcome == ETIMEDOUT  ? v1::OUTCOME_TIMED_OUT
                                             : v1::OUTCOME_ERROR);
  }
  n->set_socket_cookie(e.sock_cookie);
  n->set_netns(e.netns_ino);
  n->set_duration_ns(e.duration_ns);
  n->set_bytes_sent(e.bytes_sent);
  n->set_bytes_received(e.bytes_received);

  v1::Process* proc = n->mutable_process();
  const ProcInfo* p = e.task.tgid ? table_->Find(e.task.tgid, e.task.start_ns) : nullptr;
  if (p) {
    FillProcess(*p, *clock_, proc);
  } else {
    ++unattributed_;
    FillProcess(FromTask(e.task), *clock_, proc);
    proc->set_unknown(true);
  }
  proc->set_tid(e.task.pid);
  // The kernel's facts at the moment of the event win over the table's.
  if (e.task.tgid) {
    proc->set_uid(e.task.uid);
    proc->set_gid(e.task.gid);
    proc->set_cgroup_id(e.task.cgroup_id);
  }
  return true;
}

}  // namespace sockwatch
