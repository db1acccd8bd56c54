#include "agent/agent.h"

#include <arpa/inet.h>
#include <bpf/libbpf.h>
#include <google/protobuf/arena.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "agent/community_id.h"
#include "agent/host.h"
#include "agent/snapshot.h"

namespace sockwatch {
namespace {

std::string RandomInstanceId() {
  std::random_device rd;
  return absl::StrFormat("%08x%08x%08x%08x", rd(), rd(), rd(), rd());
}

const char* TcpStateName(uint8_t s) {
  static constexpr const char* kNames[] = {"",          "ESTABLISHED", "SYN_SENT",   "SYN_RECV",
                                           "FIN_WAIT1", "FIN_WAIT2",   "TIME_WAIT",  "CLOSE",
                                           "CLOSE_WAIT", "LAST_ACK",   "LISTEN",     "CLOSING"};
  return s < sizeof(kNames) / sizeof(kNames[0]) ? kNames[s] : "UNKNOWN";
}

std::string IpText(uint16_t family, const std::array<uint8_t, 16>& a) {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(family, a.data(), buf, sizeof(buf));
  return buf;
}

}  // namespace

Agent::Agent(AgentOptions opts, Sink sink)
    : opts_(std::move(opts)),
      sink_(std::move(sink)),
      table_(opts_.max_processes),
      decoder_(&table_, &clock_),
      instance_(RandomInstanceId()),
      hostname_(Hostname()) {
  if (opts_.host_id.empty()) opts_.host_id = HostId();
}

Agent::~Agent() {
  ring_buffer__free(ring_);
  if (record_) fclose(record_);
}

const std::string& Agent::ContainerOf(uint64_t cgroup_id) {
  auto it = containers_.find(cgroup_id);
  if (it != containers_.end()) return it->second;
  if (containers_.size() >= 65536) containers_.clear();  // bounded; refilled on demand
  std::string id = cgroups_ ? ContainerIdFromCgroupPath(cgroups_->Resolve(cgroup_id)) : "";
  return containers_.emplace(cgroup_id, std::move(id)).first->second;
}

void Agent::Emit(v1::Envelope& env) {
  // Every event says which container (if any) its process runs in.
  v1::Process* proc = env.has_network() ? env.mutable_network()->mutable_process()
                      : env.has_exec()  ? env.mutable_exec()->mutable_process()
                      : env.has_fork()  ? env.mutable_fork()->mutable_process()
                      : env.has_exit()  ? env.mutable_exit()->mutable_process()
                                        : nullptr;
  if (proc && proc->cgroup_id()) proc->set_container_id(ContainerOf(proc->cgroup_id()));
  if (pipeline_ && env.has_network()) pipeline_->StampSha256(*proc);
  env.set_host_id(opts_.host_id);
  env.set_agent_instance(instance_);
  env.set_hostname(hostname_);
  env.set_seq(++seq_);
  if (!env.has_time()) {
    const uint64_t now = BootClock::NowBootNs();
    env.set_boottime_ns(now);
    clock_.ToTimestamp(now, env.mutable_time());
  }
  sink_(env);
  if (pipeline_) pipeline_->OnEnvelope(env, [this](v1::Envelope& out) { Emit(out); });
}

int Agent::OnRecord(void* ctx, void* data, size_t size) {
  auto* self = static_cast<Agent*>(ctx);
  if (self->record_) {
    const uint32_t len = size;
    fwrite(&len, sizeof(len), 1, self->record_);
    fwrite(data, 1, size, self->record_);
  }
  // An arena on the stack: the envelope's strings and sub-messages are bump
  // allocated and freed at once, instead of a malloc/free each (the largest
  // cost of decoding before).
  alignas(16) char block[16384];
  google::protobuf::ArenaOptions arena_opts;
  arena_opts.initial_block = block;
  arena_opts.initial_block_size = sizeof(block);
  google::protobuf::Arena arena(arena_opts);
  v1::Envelope* env = google::protobuf::Arena::CreateMessage<v1::Envelope>(&arena);
  const auto rec = absl::MakeConstSpan(static_cast<const uint8_t*>(data), size);
  if (Decoder::IsPacket(rec)) {
    auto pkt = Decoder::DecodePacket(rec);
    if (!pkt.ok()) {
      ++self->decode_errors_;
      fprintf(stderr, "sockwatch-agent: dropped a malformed packet record: %s\n",
              std::string(pkt.status().message()).c_str());
    } else if (self->pipeline_) {
      self->pipeline_->OnPacket(*pkt, [self](v1::Envelope& out) { self->Emit(out); });
    }
    return 0;
  }
  auto ok = self->decoder_.Decode(rec, env);
  if (!ok.ok()) {
    ++self->decode_errors_;
    fprintf(stderr, "sockwatch-agent: dropped a malformed record: %s\n",
            std::string(ok.status().message()).c_str());
    return 0;
  }
  if (*ok) self->Emit(*env);
  return 0;
}

absl::Status Agent::Start() {
  if (!opts_.probes.cgroup2_path.empty())
    cgroups_ = std::make_unique<CgroupPaths>(opts_.probes.cgroup2_path);
  if (!opts_.record_path.empty()) {
    record_ = fopen(opts_.record_path.c_str(), "we");
    if (!record_) return absl::ErrnoToStatus(errno, absl::StrCat("open --record file ", opts_.record_path));
  }
  if (opts_.detect) {
    opts_.pipeline.cgroup2_path = opts_.probes.cgroup2_path;
    opts_.pipeline.id_prefix = instance_.substr(0, 12);
    auto p = Pipeline::Open(opts_.pipeline, &table_, &clock_);
    if (!p.ok()) return p.status();
    pipeline_ = std::move(*p);
  }
  auto probes = Probes::Load(opts_.probes);
  if (!probes.ok()) return probes.status();
  probes_ = std::move(*probes);
  if (pipeline_) pipeline_->set_inspecting(probes_->packet() != nullptr);
  ring_ = ring_buffer__new(probes_->ring_fd(), &Agent::OnRecord, this, nullptr);
  if (!ring_) return absl::ErrnoToStatus(errno, "open ring buffer");
  loss_window_start_ns_ = BootClock::NowBootNs();

  v1::Envelope cov;
  *cov.mutable_coverage() = probes_->coverage();
  Emit(cov);
  // After attach, so nothing falls between the snapshot and the live stream:
  // the live records queued meanwhile are newer and win in the table.
  if (opts_.snapshot) EmitSnapshot();
  return absl::OkStatus();
}

void Agent::EmitSnapshot() {
  auto procs = SnapshotProcesses(opts_.probes.cgroup2_path);
  if (!procs.ok()) {
    fprintf(stderr, "sockwatch-agent: process snapshot failed: %s\n",
            std::string(procs.status().message()).c_str());
  } else {
    for (SnapshotProcess& sp : *procs) {
      ProcInfo p;
      p.pid = sp.pid;
      p.ppid = sp.ppid;
      p.uid = sp.uid;
      p.gid = sp.gid;
      p.start_ns = sp.start_boottime_ns;
      p.parent_start_ns = sp.parent_start_boottime_ns;
      p.cgroup_id = sp.cgroup_id;
      p.exe = std::move(sp.exe);
      p.exe_deleted = sp.exe_deleted;
      p.comm = std::move(sp.comm);
      p.argv = std::move(sp.argv);
      p.from_snapshot = true;
      v1::Envelope env;
      FillProcess(p, clock_, env.mutable_exec()->mutable_process());
      table_.Upsert(std::move(p));
      Emit(env);
    }
  }
  auto socks = SnapshotSockets();
  if (!socks.ok()) {
    fprintf(stderr, "sockwatch-agent: socket snapshot failed: %s\n",
            std::string(socks.status().message()).c_str());
    return;
  }
  for (const SnapshotSocket& s : *socks) {
    v1::Envelope env;
    v1::NetworkEvent* n = env.mutable_network();
    n->set_kind(v1::NETWORK_KIND_EXISTING);
    n->set_snapshot(true);
    n->set_protocol(s.protocol == IPPROTO_TCP ? v1::PROTOCOL_TCP : v1::PROTOCOL_UDP);
    n->set_ip_version(s.family == AF_INET6 ? 6 : 4);
    n->set_local_ip(IpText(s.family, s.local_ip));
    n->set_local_port(s.local_port);
    const bool listening = s.protocol == IPPROTO_TCP ? s.state == 10 : s.remote_port == 0;
    n->set_socket_state(s.protocol == IPPROTO_TCP ? TcpStateName(s.state)
                                                  : (listening ? "UNCONNECTED" : "CONNECTED"));
    if (!listening) {
      n->set_remote_ip(IpText(s.family, s.remote_ip));
      n->set_remote_port(s.remote_port);
      const size_t alen = s.family == AF_INET6 ? 16 : 4;
      n->set_community_id(CommunityId(s.protocol, absl::MakeConstSpan(s.local_ip.data(), alen),
                                      s.local_port, absl::MakeConstSpan(s.remote_ip.data(), alen),
                                      s.remote_port));
    }
    n->set_socket_cookie(s.cookie);
    n->set_netns(s.netns_ino);
    // Who opened it is not recorded by the kernel for old sockets; a socket
    // on a local listening port was accepted, anything else was connected.
    bool inbound = listening;
    if (!listening && s.protocol == IPPROTO_TCP) {
      for (const SnapshotSocket& l : *socks)
        if (l.protocol == IPPROTO_TCP && l.state == 10 && l.local_port == s.local_port) inbound = true;
    }
    n->set_direction(inbound ? v1::DIRECTION_INBOUND : v1::DIRECTION_OUTBOUND);
    n->set_outcome(v1::OUTCOME_ESTABLISHED);
    const ProcInfo* p = s.pids.empty() ? nullptr : table_.Find(s.pids.front(), 0);
    if (p && s.protocol == IPPROTO_TCP && s.state != 10 && s.cookie) {
      // So the kernel attributes this socket's close, which it did not see open.
      sw_sk_owner owner{};
      owner.task.tgid = owner.task.pid = p->pid;
      owner.task.start_ns = p->start_ns;
      owner.task.uid = p->uid;
      owner.task.gid = p->gid;
      owner.task.cgroup_id = p->cgroup_id;
      std::memcpy(owner.task.comm, p->comm.data(), std::min(p->comm.size(), sizeof(owner.task.comm) - 1));
      owner.direction = inbound ? SW_DIR_INBOUND : SW_DIR_OUTBOUND;
      if (absl::Status st = probes_->SeedSocketOwner(s.cookie, owner); !st.ok())
        fprintf(stderr, "sockwatch-agent: %s\n", st.ToString().c_str());
    }
    if (p) {
      FillProcess(*p, clock_, n->mutable_process());
    } else {
      n->mutable_process()->set_unknown(true);
      n->mutable_process()->set_uid(s.uid);
    }
    Emit(env);
  }
}

void Agent::ReportLoss() {
  const uint64_t now = BootClock::NowBootNs();
  auto emit = [&](const char* reason, uint64_t count) {
    v1::Envelope env;
    v1::Loss* l = env.mutable_loss();
    l->set_reason(reason);
    l->set_count(count);
    clock_.ToTimestamp(loss_window_start_ns_, l->mutable_first_time());
    clock_.ToTimestamp(now, l->mutable_last_time());
    fprintf(stderr, "sockwatch-agent: lost %llu (%s)\n", static_cast<unsigned long long>(count), reason);
    Emit(env);
  };
  auto counters = probes_->ReadCounters();
  if (counters.ok()) {
    for (int i = 0; i < SW_CNT_MAX; ++i) {
      const uint64_t delta = (*counters)[i] - reported_[i];
      if (delta && CounterIsLoss(i)) emit(CounterName(i), delta);
    }
    reported_ = *counters;
  }
  if (decode_errors_ > reported_decode_errors_) {
    emit("decode_error", decode_errors_ - reported_decode_errors_);
    reported_decode_errors_ = decode_errors_;
  }
  if (table_.evicted() > reported_evictions_) {
    emit("process_table_full", table_.evicted() - reported_evictions_);
    reported_evictions_ = table_.evicted();
  }
  if (opts_.unspooled && *opts_.unspooled > reported_unspooled_) {
    const uint64_t n = *opts_.unspooled - reported_unspooled_;
    reported_unspooled_ = *opts_.unspooled;
    emit("spool_write_error", n);
  }
  if (opts_.spool) {
    if (std::optional<SpoolLoss> lost = opts_.spool->TakeLoss()) {
      v1::Envelope env;
      v1::Loss* l = env.mutable_loss();
      l->set_reason(kSpoolLossReason);
      l->set_count(lost->count);
      auto set = [](absl::Time t, google::protobuf::Timestamp* ts) {
        if (t == absl::InfinitePast()) t = absl::Now();  // no event time was known
        const int64_t ns = absl::ToUnixNanos(t);
        ts->set_seconds(ns / 1000000000);
        ts->set_nanos(static_cast<int32_t>(ns % 1000000000));
      };
      set(lost->first, l->mutable_first_time());
      set(lost->last, l->mutable_last_time());
      fprintf(stderr, "sockwatch-agent: lost %llu (%s)\n", static_cast<unsigned long long>(lost->count), kSpoolLossReason);
      Emit(env);
    }
  }
  loss_window_start_ns_ = now;
}

void Agent::InspectTick(PacketProbe* pk, bool read_orphans) {
  if (!pipeline_) return;
  // The orphan map costs two syscalls per source to read: once a second is
  // plenty against a window of seconds; waiting flows are judged every tick.
  absl::StatusOr<std::vector<OrphanSource>> orphans = std::vector<OrphanSource>{};
  if (read_orphans) orphans = pk->ReadOrphans();
  if (!orphans.ok()) {
    fprintf(stderr, "sockwatch-agent: read orphan counters: %s\n", std::string(orphans.status().message()).c_str());
    orphans = std::vector<OrphanSource>{};
  }
  pipeline_->InspectTick(absl::Now(), *orphans, [this](v1::Envelope& out) { Emit(out); });
}

// New interfaces are inspected as they come up; the coverage says so.
void Agent::RefreshInterfaces(PacketProbe* pk) {
  auto changed = pk->Refresh();
  if (!changed.ok()) {
    fprintf(stderr, "sockwatch-agent: refresh inspected interfaces: %s\n",
            std::string(changed.status().message()).c_str());
    return;
  }
  if (!*changed) return;
  probes_->UpdatePacketCoverage();
  v1::Envelope cov;
  *cov.mutable_coverage() = probes_->coverage();
  Emit(cov);
}

absl::Status Agent::Run() {
  const absl::Time deadline = absl::Now() + opts_.run_for;
  absl::Time next_loss = absl::Now() + opts_.loss_interval;
  absl::Time next_inspect = absl::Now() + kInspectInterval;
  absl::Time next_refresh = absl::Now() + kInterfaceRefresh;
  absl::Time next_orphans = absl::Now() + kOrphanReadInterval;
  const int poll_ms = std::max<int64_t>(1, absl::ToInt64Milliseconds(opts_.drain_interval));
  while (!stop_.load() && absl::Now() < deadline) {
    // Records are submitted without wakeups (batching); poll wakes on the
    // fill threshold or times out, and consume drains what is there.
    int n = ring_buffer__poll(ring_, poll_ms);
    if (n < 0 && n != -EINTR) return absl::ErrnoToStatus(-n, "poll ring buffer");
    n = ring_buffer__consume(ring_);
    if (n < 0 && n != -EINTR) return absl::ErrnoToStatus(-n, "consume ring buffer");
    if (opts_.after_drain) opts_.after_drain();
    if (reload_.exchange(false) && pipeline_) pipeline_->ReloadExceptions();
    if (absl::Now() >= next_loss) {
      ReportLoss();
      if (pipeline_) pipeline_->Tick(absl::Now(), [this](v1::Envelope& out) { Emit(out); });
      table_.Expire(BootClock::NowBootNs());
      next_loss = absl::Now() + opts_.loss_interval;
    }
    if (PacketProbe* pk = probes_->packet(); pk && absl::Now() >= next_inspect) {
      const bool read_orphans = absl::Now() >= next_orphans;
      InspectTick(pk, read_orphans);
      if (read_orphans) next_orphans = absl::Now() + kOrphanReadInterval;
      next_inspect = absl::Now() + kInspectInterval;
      if (absl::Now() >= next_refresh) {
        RefreshInterfaces(pk);
        next_refresh = absl::Now() + kInterfaceRefresh;
      }
    }
  }
  // Detach first, then drain fully: nothing the kernel recorded is left behind.
  probes_->Detach();
  while (ring_buffer__consume(ring_) > 0) {
  }
  ReportLoss();
  if (opts_.after_drain) opts_.after_drain();
  if (pipeline_) {
    if (absl::Status s = pipeline_->Close([this](v1::Envelope& out) { Emit(out); }); !s.ok())
      fprintf(stderr, "sockwatch-agent: final baseline write failed: %s\n", s.ToString().c_str());
  }
  if (opts_.after_drain) opts_.after_drain();
  return absl::OkStatus();
}

}  // namespace sockwatch
