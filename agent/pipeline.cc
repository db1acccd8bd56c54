#include "agent/pipeline.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>

#include "absl/strings/str_cat.h"

namespace sockwatch {
namespace {

constexpr size_t kMaxIdentities = 65536;
constexpr size_t kHistoryBatch = 1000;
constexpr size_t kMaxHistoryBacklog = 100'000;

void SetTime(absl::Time t, google::protobuf::Timestamp* ts) {
  const int64_t ns = absl::ToUnixNanos(t);
  ts->set_seconds(ns / 1'000'000'000);
  ts->set_nanos(ns % 1'000'000'000);
}

void Warn(absl::string_view what, const absl::Status& s) {
  fprintf(stderr, "sockwatch-agent: %.*s: %s\n", static_cast<int>(what.size()), what.data(),
          s.ToString().c_str());
}

absl::Status MakeDirs(const std::string& dir) {
  std::string path;
  for (size_t i = 0; i <= dir.size(); ++i) {
    if (i == dir.size() || (dir[i] == '/' && i > 0)) {
      path = dir.substr(0, i);
      if (mkdir(path.c_str(), 0700) != 0 && errno != EEXIST)
        return absl::ErrnoToStatus(errno, absl::StrCat("create state directory ", path));
    }
  }
  return absl::OkStatus();
}

}  // namespace

Pipeline::Pipeline(const PipelineOptions& opts, const ProcessTable* table, const BootClock* clock)
    : opts_(opts), table_(table), clock_(clock), cgroups_(opts.cgroup2_path) {}

Pipeline::~Pipeline() = default;

absl::StatusOr<std::unique_ptr<Pipeline>> Pipeline::Open(const PipelineOptions& opts,
                                                         const ProcessTable* table,
                                                         const BootClock* clock) {
  if (absl::Status s = MakeDirs(opts.state_dir); !s.ok()) return s;
  std::unique_ptr<Pipeline> p(new Pipeline(opts, table, clock));
  BaselineOptions bo;
  bo.path = opts.state_dir + "/baseline.db";
  bo.learning_period = opts.learning_period;
  bo.max_images = opts.max_images;
  bo.max_behaviors = opts.max_behaviors;
  auto baseline = Baseline::Open(bo);
  if (!baseline.ok()) return baseline.status();
  p->baseline_ = std::move(*baseline);
  if (opts.history) {
    HistoryOptions ho;
    ho.path = opts.state_dir + "/history.db";
    ho.max_age = opts.history_max_age;
    ho.max_bytes = opts.history_max_bytes;
    auto h = HistoryStore::Open(ho);
    if (!h.ok()) return h.status();
    p->history_ = std::move(*h);
  }
  auto usage = ExceptionUsage::Open(opts.state_dir);
  if (!usage.ok()) return usage.status();
  p->usage_ = std::move(*usage);
  if (!opts.exceptions_path.empty()) {
    auto set = ExceptionSet::Load(opts.exceptions_path);
    if (!set.ok()) return set.status();  // at start, a bad file is a bad config: refuse
    p->exceptions_ = std::move(*set);
    p->usage_->RecordLoaded(p->exceptions_, absl::Now());
  }
  DetectorOptions d;
  d.dedup_window = opts.dedup_window;
  d.id_prefix = opts.id_prefix;
  Pipeline* raw = p.get();
  p->detector_ = std::make_unique<Detector>(
      p->baseline_.get(), table, clock, [raw](const v1::Process& proc) { return raw->Identify(proc); },
      LocalSubnets(), d);
  p->detector_->set_exception_hook([raw](const v1::Alert& a) { return raw->Excepted(a); });
  if (opts.protocols_path.empty()) {
    p->protocols_ = ProtocolTable::Default();
  } else {
    auto table = ProtocolTable::Load(opts.protocols_path);
    if (!table.ok()) return table.status();  // a bad table is a bad config: refuse to start
    p->protocols_ = std::move(*table);
  }
  p->inspector_ = std::make_unique<Inspector>(
      p->detector_.get(), p->baseline_.get(), table, clock,
      [raw](const v1::Process& proc) { return raw->Identify(proc); }, &p->protocols_, opts.inspect);
  const absl::Time now = absl::Now();
  p->was_learning_ = p->baseline_->Learning(now);
  p->next_baseline_flush_ = now + absl::Seconds(5);
  p->next_retention_ = now + absl::Minutes(1);
  p->next_status_ = now;  // at once
  return p;
}

const v1::ImageIdentity& Pipeline::Identified(const v1::Process& p) {
  const auto key = std::make_pair(p.pid(), p.start_boottime_ns() / ProcessTable::kTickNs);
  auto it = identities_.find(key);
  if (it != identities_.end() && !it->second.sha256().empty()) return it->second;
  if (it == identities_.end()) {
    // cwd makes a relative script path absolute; it is read while the process
    // lives (identity enrichment, not a field of the event itself).
    char cwd[PATH_MAX] = {};
    const std::string link = absl::StrCat("/proc/", p.pid(), "/cwd");
    const ssize_t n = readlink(link.c_str(), cwd, sizeof(cwd) - 1);
    std::vector<std::string> argv(p.argv().begin(), p.argv().end());
    v1::ImageIdentity id = ClassifyImage(p.exe(), argv, n > 0 ? absl::string_view(cwd, n) : "");
    if (p.cgroup_id()) {
      id.set_cgroup_path(cgroups_.Resolve(p.cgroup_id()));
      id.set_container_id(p.container_id().empty() ? ContainerIdFromCgroupPath(id.cgroup_path())
                                                   : p.container_id());
    }
    for (std::string& m : SuspiciousMarks(p.exe(), p.exe_deleted(), stat_)) id.add_suspicious(std::move(m));
    if (identities_.size() >= kMaxIdentities) identities_.clear();
    it = identities_.emplace(key, std::move(id)).first;
  }
  // Hashing runs on a worker: the first events of a new binary may go without.
  if (auto sha = sha_.Lookup(p.pid(), p.exe())) it->second.set_sha256(*sha);
  return it->second;
}

void Pipeline::StampSha256(v1::Process& p) {
  if (p.unknown() || p.exe().empty()) return;
  const v1::ImageIdentity& id = Identified(p);  // no copy: one per network event
  if (!id.sha256().empty()) p.set_sha256(id.sha256());
}

bool Pipeline::Excepted(const v1::Alert& a) {
  if (exceptions_.size() == 0) return false;
  ExceptionFacts f;
  f.rule = a.rule();
  f.exe = a.process().exe();
  f.sha256 = a.image().sha256();
  f.argv.assign(a.process().argv().begin(), a.process().argv().end());
  if (a.ancestors_size() > 0) f.parent_exe = a.ancestors(0).exe();
  f.container_id = a.image().container_id();
  f.direction = a.network().direction();
  f.protocol = a.network().protocol();
  f.port = a.network().kind() == v1::NETWORK_KIND_LISTEN || a.network().direction() == v1::DIRECTION_INBOUND
               ? a.network().local_port()
               : a.network().remote_port();
  f.remote_ip = a.network().remote_ip();
  const absl::Time now = absl::Now();
  const ExceptionEntry* e = exceptions_.Match(f, now);
  if (!e) return false;
  usage_->RecordMatch(e->id, now);
  return true;
}

void Pipeline::OnEnvelope(const v1::Envelope& env, const EmitFn& emit) {
  if (env.has_exec() || env.has_exit()) {
    const v1::Process& p = env.has_exec() ? env.exec().process() : env.exit().process();
    identities_.erase(std::make_pair(p.pid(), p.start_boottime_ns() / ProcessTable::kTickNs));
  }
  if (env.has_network() || env.has_alert()) {
    if (history_) {
      // Reported in Tick (a loss event); Add fails only for an envelope
      // too large to serialize.
      if (history_batch_.size() >= kMaxHistoryBacklog || !history_batch_.Add(env).ok())
        ++history_dropped_;
    }
  }
  if (env.has_loss()) {
    auto t = [](const google::protobuf::Timestamp& ts) {
      return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
    };
    detector_->NoteLoss(t(env.loss().first_time()), t(env.loss().last_time()));
  }
  if (!env.has_exec() && !env.has_network()) return;
  if (inspecting_) inspector_->OnEnvelope(env);
  std::vector<v1::Alert> alerts;
  detector_->Observe(env, &alerts);
  EmitAlerts(alerts, emit);
  if (history_batch_.size() >= kHistoryBatch) FlushHistory();
}

void Pipeline::OnPacket(const PacketRecord& rec, const EmitFn& emit) {
  std::vector<v1::Alert> alerts;
  inspector_->OnPacket(rec, absl::Now(), &alerts);
  EmitAlerts(alerts, emit);
}

void Pipeline::InspectTick(absl::Time now, const std::vector<OrphanSource>& orphans, const EmitFn& emit) {
  std::vector<v1::Alert> alerts;
  inspector_->Tick(now, orphans, &alerts);
  EmitAlerts(alerts, emit);
  if (const uint64_t d = inspector_->flows_dropped(); d > reported_inspect_dropped_) {
    v1::Envelope loss;
    loss.mutable_loss()->set_reason("inspect_flows_full");
    loss.mutable_loss()->set_count(d - reported_inspect_dropped_);
    SetTime(now, loss.mutable_loss()->mutable_first_time());
    SetTime(now, loss.mutable_loss()->mutable_last_time());
    reported_inspect_dropped_ = d;
    emit(loss);
  }
}

void Pipeline::EmitAlerts(std::vector<v1::Alert>& alerts, const EmitFn& emit) {
  for (v1::Alert& a : alerts) {
    v1::Envelope out;
    *out.mutable_alert() = std::move(a);
    emit(out);
  }
}

void Pipeline::FlushHistory() {
  if (!history_ || history_batch_.empty()) return;
  if (absl::Status s = history_->Append(history_batch_); !s.ok()) {
    Warn("history write failed (kept for the next try)", s);
    return;
  }
  history_batch_.clear();
}

v1::LearningStatus Pipeline::Learning(absl::Time now) const {
  v1::LearningStatus l;
  SetTime(baseline_->learning_started(), l.mutable_started());
  SetTime(baseline_->learning_ends(), l.mutable_ends());
  l.set_learning(baseline_->Learning(now));
  l.set_images(baseline_->images());
  l.set_behaviors(baseline_->behaviors());
  l.set_evicted(baseline_->evicted_images());
  return l;
}

void Pipeline::Tick(absl::Time now, const EmitFn& emit) {
  std::vector<v1::Alert> alerts;
  detector_->Tick(now, &alerts);
  EmitAlerts(alerts, emit);
  FlushHistory();
  if (history_dropped_) {
    v1::Envelope loss;
    loss.mutable_loss()->set_reason("history_backlog_full");
    loss.mutable_loss()->set_count(history_dropped_);
    SetTime(now, loss.mutable_loss()->mutable_first_time());
    SetTime(now, loss.mutable_loss()->mutable_last_time());
    history_dropped_ = 0;
    emit(loss);
  }
  const bool learning = baseline_->Learning(now);
  if (now >= next_status_ || learning != was_learning_) {
    v1::Envelope st;
    *st.mutable_learning() = Learning(now);
    emit(st);
    was_learning_ = learning;
    next_status_ = now + absl::Hours(1);
  }
  if (now >= next_baseline_flush_) {
    if (absl::Status s = baseline_->Flush(); !s.ok()) Warn("baseline write failed (retried)", s);
    if (absl::Status s = usage_->Flush(); !s.ok()) Warn("exception usage write failed", s);
    next_baseline_flush_ = now + absl::Seconds(5);
  }
  if (history_ && now >= next_retention_) {
    auto r = history_->Enforce(now);
    if (!r.ok()) Warn("history retention failed", r.status());
    next_retention_ = now + absl::Minutes(1);
  }
}

void Pipeline::ReloadExceptions() {
  if (opts_.exceptions_path.empty()) return;
  auto next = ExceptionSet::Load(opts_.exceptions_path);
  if (!next.ok()) {
    Warn("exceptions not reloaded, the previous set stays in force", next.status());
    return;
  }
  exceptions_ = std::move(*next);
  usage_->RecordLoaded(exceptions_, absl::Now());
  fprintf(stderr, "sockwatch-agent: exceptions reloaded: %zu entries\n", exceptions_.size());
}

absl::Status Pipeline::Close(const EmitFn& emit) {
  Tick(absl::Now(), emit);
  FlushHistory();
  absl::Status s = baseline_->Flush();
  if (absl::Status u = usage_->Flush(); s.ok()) s = u;
  return s;
}

}  // namespace sockwatch
