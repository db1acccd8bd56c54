#include "agent/inspector.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "agent/community_id.h"
#include "agent/protocols.h"

namespace sockwatch {
namespace {

constexpr size_t kMaxPorts = 32;
constexpr absl::Duration kSocketLinger = absl::Seconds(30);  // after close: late samples still join

std::string Endpoint(const std::string& ip, uint16_t port) {
  return ip.find(':') != std::string::npos ? absl::StrCat("[", ip, "]:", port) : absl::StrCat(ip, ":", port);
}

// Both directions of a flow map to one key: the lower endpoint first.
std::string FlowKey(const PacketRecord& r) {
  std::string a = absl::StrCat(absl::string_view(reinterpret_cast<const char*>(r.src_addr.data()), r.src_addr.size()),
                               "/", r.src_port);
  std::string b = absl::StrCat(absl::string_view(reinterpret_cast<const char*>(r.dst_addr.data()), r.dst_addr.size()),
                               "/", r.dst_port);
  if (b < a) std::swap(a, b);
  return absl::StrCat(static_cast<int>(r.protocol), "|", a, "|", b);
}

std::string Addr16(const std::vector<uint8_t>& a) {
  std::string k(16, '\0');
  std::copy(a.begin(), a.begin() + std::min<size_t>(a.size(), 16), k.begin());
  return k;
}

Transport TransportOf(v1::Protocol p) { return p == v1::PROTOCOL_UDP ? Transport::kUdp : Transport::kTcp; }

const char* TransportName(v1::Protocol p) { return p == v1::PROTOCOL_UDP ? "udp" : "tcp"; }

std::string Expected(const PortRule* rule) {
  std::vector<std::string> names;
  if (rule)
    for (Proto p : rule->expect) names.push_back(ProtoName(p));
  return absl::StrJoin(names, "|");
}

std::string ImageName(const v1::ImageIdentity& id, const v1::Process& p) {
  if (!id.exe().empty()) return id.script().empty() ? id.exe() : absl::StrCat(id.exe(), " running ", id.script());
  return p.exe().empty() ? "an unknown process" : p.exe();
}

}  // namespace

std::string SampleHead(absl::string_view bytes, size_t max_bytes) {
  std::string out;
  for (size_t i = 0; i < bytes.size() && i < max_bytes; ++i) {
    const unsigned char c = bytes[i];
    if (c >= 0x20 && c < 0x7f && c != '\\')
      out.push_back(static_cast<char>(c));
    else
      absl::StrAppendFormat(&out, "\\x%02x", c);
  }
  return out;
}

Inspector::Inspector(Detector* detector, Baseline* baseline, const ProcessTable* table, const BootClock* clock,
                     Detector::Identify identify, const ProtocolTable* protocols, InspectorOptions opts)
    : detector_(detector),
      baseline_(baseline),
      table_(table),
      clock_(clock),
      identify_(std::move(identify)),
      protocols_(protocols),
      opts_(opts) {}

void Inspector::OnEnvelope(const v1::Envelope& env) {
  if (!env.has_network()) return;
  const v1::NetworkEvent& n = env.network();
  if (n.kind() == v1::NETWORK_KIND_FLOW_END) {
    if (auto it = sockets_.find(n.socket_cookie()); it != sockets_.end())
      it->second.closed = absl::FromUnixSeconds(env.time().seconds());
    return;
  }
  if (n.process().unknown()) return;
  const bool bound = n.kind() == v1::NETWORK_KIND_LISTEN || n.kind() == v1::NETWORK_KIND_UDP_RECV ||
                     n.kind() == v1::NETWORK_KIND_UDP_SEND ||
                     (n.kind() == v1::NETWORK_KIND_EXISTING &&
                      (n.socket_state() == "LISTEN" || n.socket_state() == "UNCONNECTED"));
  const bool port_owner = bound && n.local_port();
  if (!port_owner && !n.socket_cookie()) return;  // nothing to remember
  SharedProcess process = Share(n.process());
  if (port_owner) {
    if (ports_.size() >= opts_.max_sockets) ports_.clear();
    ports_[{n.protocol(), n.local_port()}] = process;
  }
  if (!n.socket_cookie()) return;
  if (sockets_.size() >= opts_.max_sockets && !sockets_.contains(n.socket_cookie())) {
    absl::erase_if(sockets_, [](const auto& kv) { return kv.second.closed != absl::InfiniteFuture(); });
    if (sockets_.size() >= opts_.max_sockets) sockets_.clear();  // bounded, at the price of attribution
  }
  Socket& s = sockets_[n.socket_cookie()];
  s.process = std::move(process);
  s.closed = absl::InfiniteFuture();
}

Inspector::SharedProcess Inspector::Share(const v1::Process& p) {
  if (procs_.size() >= opts_.max_sockets) procs_.clear();  // sockets keep theirs
  SharedProcess& slot = procs_[{p.pid(), p.start_boottime_ns()}];
  // Another thread, an exec (same pid and start), a setuid, a rename...:
  // a new copy. The raw forms and start_time follow from what is compared.
  const bool same =
      slot && slot->tid() == p.tid() && slot->ppid() == p.ppid() && slot->uid() == p.uid() &&
      slot->gid() == p.gid() && slot->cgroup_id() == p.cgroup_id() &&
      slot->from_snapshot() == p.from_snapshot() && slot->exe_deleted() == p.exe_deleted() &&
      slot->comm() == p.comm() && slot->exe() == p.exe() &&
      std::equal(slot->argv().begin(), slot->argv().end(), p.argv().begin(), p.argv().end());
  if (!same) slot = std::make_shared<const v1::Process>(p);
  return slot;
}

bool Inspector::ProcessOf(uint64_t cookie, uint32_t tgid, uint64_t start_ns, v1::Process* out) const {
  if (cookie) {
    if (auto it = sockets_.find(cookie); it != sockets_.end()) {
      *out = *it->second.process;
      return true;
    }
  }
  if (tgid) {
    if (const ProcInfo* p = table_->Find(tgid, start_ns)) {
      FillProcess(*p, *clock_, out);
      return true;
    }
  }
  return false;
}

bool Inspector::PortOwner(v1::Protocol protocol, uint32_t port, v1::Process* out) const {
  auto it = ports_.find({protocol, port});
  if (it == ports_.end()) return false;
  *out = *it->second;
  return true;
}

bool Inspector::Complete(const Side& s) const {
  return s.segments >= opts_.sample_segments || s.bytes.size() >= opts_.sample_bytes;
}

void Inspector::OnPacket(const PacketRecord& r, absl::Time now, std::vector<v1::Alert>* out) {
  if (r.kind == PacketRecord::kOrphan) {
    Source& src = sources_[Addr16(r.src_addr)];
    src.ip = r.src_ip;
    src.protocol = r.protocol;
    if (src.ports.size() < kMaxPorts && std::find(src.ports.begin(), src.ports.end(), r.dst_port) == src.ports.end())
      src.ports.push_back(r.dst_port);
    if (r.cookie || ports_.contains({r.protocol, r.dst_port})) {
      src.listener_cookie = r.cookie;
      src.listener_protocol = r.protocol;
      src.listener_port = r.dst_port;
    }
    if ((r.pattern == SW_ORPHAN_TCP_SYNACK || r.pattern == SW_ORPHAN_DNS_ANSWER) && pending_.size() < opts_.max_flows)
      pending_.push_back({r, now});
    return;
  }
  const std::string key = FlowKey(r);
  auto it = flows_.find(key);
  if (it == flows_.end()) {
    if (flows_.size() >= opts_.max_flows) {
      ++flows_dropped_;
      return;
    }
    Flow f;
    f.transport = r.protocol;
    const bool src_is_client = r.from_client;
    f.client_ip = src_is_client ? r.src_ip : r.dst_ip;
    f.server_ip = src_is_client ? r.dst_ip : r.src_ip;
    f.client_addr = src_is_client ? r.src_addr : r.dst_addr;
    f.server_addr = src_is_client ? r.dst_addr : r.src_addr;
    f.client_port = src_is_client ? r.src_port : r.dst_port;
    f.server_port = src_is_client ? r.dst_port : r.src_port;
    // The local side sends on egress.
    f.local_is_client = src_is_client != r.ingress;
    f.first = now;
    it = flows_.emplace(key, std::move(f)).first;
  }
  Flow& f = it->second;
  if (!f.cookie) f.cookie = r.cookie;
  if (!f.owner_tgid && r.owner_tgid) {
    f.owner_tgid = r.owner_tgid;
    f.owner_start_ns = r.owner_start_ns;
  }
  const bool from_client = r.src_port == f.client_port && r.src_ip == f.client_ip;
  Side& side = from_client ? f.client : f.server;
  if (r.offset == side.bytes.size()) side.bytes += r.data;  // in order (the kernel sends in order)
  side.segments++;
  if (Complete(f.client) && Complete(f.server)) {
    Judge(f, now, out);
    flows_.erase(it);
  }
}

v1::Alert Inspector::Base(const Flow& f, const char* rule, v1::Severity severity, bool* has_process) {
  v1::Alert a;
  a.set_rule(rule);
  a.set_severity(severity);
  v1::Process proc;
  *has_process = ProcessOf(f.cookie, f.owner_tgid, f.owner_start_ns, &proc);
  if (*has_process) {
    *a.mutable_image() = identify_(proc);
    *a.mutable_process() = std::move(proc);
  }
  v1::NetworkEvent* n = a.mutable_network();
  const bool tcp = f.transport == v1::PROTOCOL_TCP;
  n->set_kind(f.local_is_client ? (tcp ? v1::NETWORK_KIND_CONNECT : v1::NETWORK_KIND_UDP_SEND)
                                : (tcp ? v1::NETWORK_KIND_ACCEPT : v1::NETWORK_KIND_UDP_RECV));
  n->set_protocol(f.transport);
  n->set_ip_version(f.client_addr.size() == 16 ? 6 : 4);
  n->set_direction(f.local_is_client ? v1::DIRECTION_OUTBOUND : v1::DIRECTION_INBOUND);
  n->set_local_ip(f.local_is_client ? f.client_ip : f.server_ip);
  n->set_local_port(f.local_is_client ? f.client_port : f.server_port);
  n->set_remote_ip(f.local_is_client ? f.server_ip : f.client_ip);
  n->set_remote_port(f.local_is_client ? f.server_port : f.client_port);
  n->set_socket_cookie(f.cookie);
  n->set_community_id(CommunityId(tcp ? 6 : 17, f.client_addr, f.client_port, f.server_addr, f.server_port));
  return a;
}

void Inspector::Judge(const Flow& flow, absl::Time now, std::vector<v1::Alert>* out) {
  ++flows_judged_;
  Flow f = flow;
  const Transport t = TransportOf(f.transport);
  const PortRule* rule = protocols_->Find(f.server_port, t);
  if (!rule && protocols_->Find(f.client_port, t)) {
    // The first packet we saw came from the server (a flow older than its
    // first sample): the table's port tells who serves.
    rule = protocols_->Find(f.client_port, t);
    std::swap(f.client, f.server);
    std::swap(f.client_ip, f.server_ip);
    std::swap(f.client_addr, f.server_addr);
    std::swap(f.client_port, f.server_port);
    f.local_is_client = !f.local_is_client;
  }
  // Always "truncated": a sample ends at the capture limit, at the segment
  // limit, or when the judging time came — never known to be the whole
  // stream, so a line not ended yet is not a fault (a slow client is not
  // malformed).
  const auto classify = [&](const Side& s) {
    if (s.bytes.empty()) return Verdict{};
    return Classify(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.bytes.data()), s.bytes.size()), t,
                    /*truncated=*/true);
  };
  const Verdict vc = classify(f.client), vs = classify(f.server);
  const Proto observed = vc.protocol != Proto::kUnknown ? vc.protocol : vs.protocol;

  v1::InspectionEvidence ev;
  ev.set_expected(Expected(rule));
  ev.set_observed(observed == Proto::kUnknown ? "none" : ProtoName(observed));
  ev.set_service_port(f.server_port);
  for (const auto& [side, v, from_client] : {std::tuple{&f.client, &vc, true}, std::tuple{&f.server, &vs, false}}) {
    if (side->bytes.empty()) continue;
    v1::ProtocolSample* s = ev.add_samples();
    s->set_from_client(from_client);
    s->set_protocol(ProtoName(v->protocol));
    s->set_malformed(v->malformed);
    s->set_reason(v->reason);
    s->set_bytes(side->bytes.size());
    s->set_head(SampleHead(side->bytes));
  }
  const char* tname = TransportName(f.transport);
  const std::string server = Endpoint(f.server_ip, f.server_port);
  bool has_process = false;

  // malformed_protocol, per side that broke its protocol's syntax.
  for (const auto& [v, from_client] : {std::pair{&vc, true}, std::pair{&vs, false}}) {
    if (!v->malformed) continue;
    const std::string key = absl::StrCat("malformed_protocol|", f.cookie ? "" : f.client_ip, "|", f.server_port, "|",
                                         ProtoName(v->protocol), "|", from_client, "|", f.owner_tgid);
    if (detector_->Repeat(key, now)) continue;
    v1::Alert a = Base(f, "malformed_protocol", v1::SEVERITY_MEDIUM, &has_process);
    const bool local_sent = from_client == f.local_is_client;
    a.set_summary(absl::StrCat(ImageName(a.image(), a.process()), local_sent ? " sent malformed " : " received malformed ",
                               ProtoName(v->protocol), local_sent ? " to " : " from ",
                               local_sent ? server : Endpoint(f.client_ip, f.client_port), " (", tname, " port ",
                               f.server_port, "): ", v->reason));
    *a.mutable_inspection() = ev;
    detector_->RaiseFrom(std::move(a), key, now, out);
  }

  // protocol_port_mismatch: the port's protocol is not what the bytes are.
  if (rule && std::find(rule->expect.begin(), rule->expect.end(), observed) == rule->expect.end()) {
    v1::Alert a = Base(f, "protocol_port_mismatch",
                       observed == Proto::kUnknown ? v1::SEVERITY_MEDIUM : v1::SEVERITY_HIGH, &has_process);
    const std::string key = absl::StrCat("protocol_port_mismatch|", a.image().key(), "|", f.server_port, "|",
                                         ProtoName(observed), "|", has_process ? "" : f.client_ip);
    if (!detector_->Repeat(key, now)) {
      a.set_summary(absl::StrCat(observed == Proto::kUnknown ? "no known protocol" : ProtoName(observed), " on ", tname,
                                 " port ", f.server_port, " (expects ", Expected(rule), "): ",
                                 ImageName(a.image(), a.process()), f.local_is_client ? " to " : " serving ",
                                 f.local_is_client ? server : Endpoint(f.client_ip, f.client_port)));
      *a.mutable_inspection() = ev;
      detector_->RaiseFrom(std::move(a), key, now, out);
    }
  }

  // protocol_change: the baseline knows what this image spoke on this port.
  if (observed == Proto::kUnknown) return;
  v1::Alert a = Base(f, "protocol_change", v1::SEVERITY_MEDIUM, &has_process);
  if (!has_process || a.process().unknown()) return;
  Behavior b;
  b.kind = Behavior::kSpeaks;
  b.direction = f.local_is_client ? v1::DIRECTION_OUTBOUND : v1::DIRECTION_INBOUND;
  b.protocol = f.transport;
  b.port = f.server_port;
  b.app_protocol = static_cast<uint8_t>(observed);
  const std::vector<uint8_t> before = baseline_->SpokenOn(a.image().key(), b.direction, b.protocol, b.port);
  const Observation obs = baseline_->Observe(a.image().key(), a.image().sha256(), b, now);
  if (!obs.new_behavior || before.empty() || baseline_->Learning(now)) return;
  std::vector<std::string> names;
  for (uint8_t p : before) names.push_back(ProtoName(static_cast<Proto>(p)));
  ev.set_previous(absl::StrJoin(names, "|"));
  const std::string key = absl::StrCat("protocol_change|", a.image().key(), "|", b.Code());
  a.set_summary(absl::StrCat(ImageName(a.image(), a.process()), " now speaks ", ProtoName(observed), " on ", tname,
                             " port ", f.server_port, ", where it spoke ", ev.previous(), " before"));
  *a.mutable_inspection() = std::move(ev);
  v1::BaselineFacts* facts = a.mutable_baseline();
  facts->set_known_behaviors(obs.known_behaviors);
  facts->add_new_facts(b.Describe());
  detector_->RaiseFrom(std::move(a), key, now, out);
}

void Inspector::Gratuitous(const PacketRecord& r, absl::Time now, std::vector<v1::Alert>* out) {
  const bool dns = r.pattern == SW_ORPHAN_DNS_ANSWER;
  const std::string key = absl::StrCat("gratuitous_traffic|", r.src_ip, "|", r.pattern);
  if (detector_->Repeat(key, now)) return;
  v1::Alert a;
  a.set_rule("gratuitous_traffic");
  a.set_severity(v1::SEVERITY_MEDIUM);
  v1::Process proc;
  if (ProcessOf(r.cookie, 0, 0, &proc) || (dns && PortOwner(r.protocol, r.dst_port, &proc))) {
    *a.mutable_image() = identify_(proc);
    *a.mutable_process() = std::move(proc);
  }
  const std::string from = Endpoint(r.src_ip, r.src_port);
  a.set_summary(dns ? absl::StrCat("unsolicited DNS answer from ", from, " to local udp port ", r.dst_port,
                                   ": no query was sent", a.has_process() ? absl::StrCat(" (socket of ", a.process().exe(), ")") : "")
                    : absl::StrCat("unsolicited SYN-ACK from ", from, " to local tcp port ", r.dst_port,
                                   ": no connection attempt"));
  v1::NetworkEvent* n = a.mutable_network();
  n->set_protocol(r.protocol);
  n->set_ip_version(r.ip_version);
  n->set_direction(v1::DIRECTION_INBOUND);
  n->set_local_ip(r.dst_ip);
  n->set_local_port(r.dst_port);
  n->set_remote_ip(r.src_ip);
  n->set_remote_port(r.src_port);
  n->set_socket_cookie(r.cookie);
  v1::InspectionEvidence* ev = a.mutable_inspection();
  ev->set_source_ip(r.src_ip);
  v1::OrphanCount* c = ev->add_orphans();
  c->set_pattern(OrphanPatternName(r.pattern));
  c->set_packets(1);
  ev->add_ports(r.dst_port);
  detector_->RaiseFrom(std::move(a), key, now, out);
}

void Inspector::Tick(absl::Time now, const std::vector<OrphanSource>& orphans, std::vector<v1::Alert>* out) {
  for (auto it = flows_.begin(); it != flows_.end();) {
    if (now - it->second.first < opts_.judge_after) {
      ++it;
      continue;
    }
    Judge(it->second, now, out);
    flows_.erase(it++);
  }
  absl::erase_if(sockets_, [&](const auto& kv) { return kv.second.closed + kSocketLinger < now; });
  size_t done = 0;
  while (done < pending_.size() && now - pending_[done].seen >= opts_.judge_after) {
    Gratuitous(pending_[done].rec, now, out);
    ++done;
  }
  pending_.erase(pending_.begin(), pending_.begin() + done);

  for (const OrphanSource& o : orphans) {
    const std::string k(o.addr.begin(), o.addr.end());
    auto sit = sources_.find(k);
    if (sit == sources_.end()) {
      // Counted in the kernel but no sample seen yet: its window starts now.
      Source& s = sources_[k];
      s.base = o.counts;
      s.window_start = now;
      s.seen = true;
      continue;
    }
    Source& s = sit->second;
    if (!s.seen) {
      // First read since the samples: everything counted so far is this window.
      s.base = {};
      s.window_start = now;
      s.seen = true;
    }
    std::array<uint64_t, SW_ORPHAN_MAX> delta{};
    uint64_t total = 0;
    for (int i = 0; i < SW_ORPHAN_MAX; ++i) {
      if (o.counts[i] < s.base[i]) s.base[i] = 0;  // the kernel's LRU dropped and re-added the source
      delta[i] = o.counts[i] - s.base[i];
      total += delta[i];
    }
    if (total >= opts_.orphan_threshold) {
      const std::string key = absl::StrCat("orphan_packets|", s.ip);
      if (!detector_->Repeat(key, now)) {
        v1::Alert a;
        a.set_rule("orphan_packets");
        a.set_severity(v1::SEVERITY_HIGH);
        v1::Process proc;
        if (ProcessOf(s.listener_cookie, 0, 0, &proc) ||
            (s.listener_port && PortOwner(s.listener_protocol, s.listener_port, &proc))) {
          *a.mutable_image() = identify_(proc);
          *a.mutable_process() = std::move(proc);
        }
        v1::InspectionEvidence* ev = a.mutable_inspection();
        ev->set_source_ip(s.ip);
        ev->set_orphan_total(total);
        ev->set_window_seconds(absl::ToInt64Seconds(opts_.orphan_window));
        std::vector<std::string> parts;
        for (int i = 0; i < SW_ORPHAN_MAX; ++i) {
          if (!delta[i]) continue;
          v1::OrphanCount* c = ev->add_orphans();
          c->set_pattern(OrphanPatternName(i));
          c->set_packets(delta[i]);
          parts.push_back(absl::StrCat(delta[i], " ", OrphanPatternName(i)));
        }
        for (uint32_t p : s.ports) ev->add_ports(p);
        v1::NetworkEvent* n = a.mutable_network();
        n->set_direction(v1::DIRECTION_INBOUND);
        n->set_remote_ip(s.ip);
        n->set_protocol(a.has_process() ? s.listener_protocol : s.protocol);
        if (a.has_process()) n->set_local_port(s.listener_port);
        n->set_ip_version(s.ip.find(':') != std::string::npos ? 6 : 4);
        a.set_summary(absl::StrCat(total, " packets outside any established flow from ", s.ip, " (",
                                   absl::StrJoin(parts, ", "), ") to ", s.ports.size(), " local port(s)",
                                   a.has_process() ? absl::StrCat(", listener ", a.process().exe()) : ""));
        detector_->RaiseFrom(std::move(a), key, now, out);
      }
      s.base = o.counts;
      s.window_start = now;
    } else if (now - s.window_start >= opts_.orphan_window) {
      s.base = o.counts;
      s.window_start = now;
    }
  }
  // Sources the kernel no longer has, and quiet for a while: forget.
  if (!orphans.empty()) {
    absl::erase_if(sources_, [&](const auto& kv) {
      return kv.second.seen && now - kv.second.window_start > 10 * opts_.orphan_window;
    });
  }
}

}  // namespace sockwatch
