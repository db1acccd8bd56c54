#include "agent/detector.h"

#include <google/protobuf/util/time_util.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace sockwatch {
namespace {

using google::protobuf::util::TimeUtil;

absl::Time ToTime(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

void SetTime(absl::Time t, google::protobuf::Timestamp* ts) {
  const int64_t ns = absl::ToUnixNanos(t);
  ts->set_seconds(ns / 1'000'000'000);
  ts->set_nanos(ns % 1'000'000'000);
}

std::string Endpoint(const v1::NetworkEvent& n) {
  if (n.kind() == v1::NETWORK_KIND_LISTEN) return absl::StrCat("port ", n.local_port());
  const std::string& ip = n.remote_ip();
  return ip.find(':') != std::string::npos ? absl::StrCat("[", ip, "]:", n.remote_port())
                                           : absl::StrCat(ip, ":", n.remote_port());
}

std::string ImageName(const v1::ImageIdentity& id) {
  std::string s = id.exe();
  if (!id.script().empty()) absl::StrAppend(&s, " running ", id.script());
  if (!id.inline_code().empty()) absl::StrAppend(&s, " with inline code");
  return s;
}

}  // namespace

Detector::Detector(Baseline* baseline, const ProcessTable* table, const BootClock* clock,
                   Identify identify, std::vector<Subnet> subnets, DetectorOptions opts)
    : baseline_(baseline),
      table_(table),
      clock_(clock),
      identify_(std::move(identify)),
      subnets_(std::move(subnets)),
      opts_(std::move(opts)) {}

std::vector<v1::Process> Detector::Ancestors(const v1::Process& p) const {
  std::vector<v1::Process> out;
  uint32_t pid = p.ppid();
  uint64_t start = p.parent_start_boottime_ns();
  for (int depth = 0; pid != 0 && depth < 64; ++depth) {
    const ProcInfo* a = table_->Find(pid, start);
    if (!a) {
      v1::Process unknown;  // say where the chain breaks rather than stop silently
      unknown.set_pid(pid);
      unknown.set_unknown(true);
      out.push_back(std::move(unknown));
      break;
    }
    FillProcess(*a, *clock_, &out.emplace_back());
    if (a->pid == 1 || a->ppid == a->pid) break;
    pid = a->ppid;
    start = a->parent_start_ns;
  }
  return out;
}

void Detector::NoteLoss(absl::Time first, absl::Time last) {
  losses_.emplace_back(first, last);
  if (losses_.size() > 256) losses_.pop_front();
}

bool Detector::NearLoss(absl::Time t) const {
  for (const auto& [first, last] : losses_)
    if (t >= first - opts_.loss_margin && t <= last + opts_.loss_margin) return true;
  return false;
}

void Detector::Observe(const v1::Envelope& env, std::vector<v1::Alert>* out) {
  const absl::Time now = ToTime(env.time());
  if (env.has_exec()) {
    const v1::ImageIdentity id = identify_(env.exec().process());
    baseline_->SeeImage(id.key(), id.sha256(), now);
    return;
  }
  if (!env.has_network()) return;
  const v1::NetworkEvent& n = env.network();
  const std::optional<Behavior> b = Behavior::Of(n, subnets_);
  if (!b || n.process().unknown()) return;  // nothing to judge, or nobody to blame

  const v1::ImageIdentity id = identify_(n.process());
  const std::string other_key = baseline_->KeyWithSha(id.sha256(), id.key());
  const Observation obs = baseline_->Observe(id.key(), id.sha256(), *b, now);
  const bool learning = baseline_->Learning(now);

  std::string rule;
  v1::Severity severity = v1::SEVERITY_LOW;
  if (!id.suspicious().empty()) {
    rule = "suspicious_image_network";
    severity = v1::SEVERITY_HIGH;
  } else if (learning) {
    return;  // learning: the baseline grows, nothing is raised
  } else if (obs.first_network) {
    rule = "first_network_use";
    severity = v1::SEVERITY_MEDIUM;
  } else if (obs.new_behavior && b->kind == Behavior::kListen) {
    rule = "new_listener";
    severity = v1::SEVERITY_MEDIUM;
  } else if (obs.new_behavior) {
    rule = "new_behavior";
  } else {
    return;
  }
  // A repeat inside its window is only counted: check before building the
  // alert (ancestry, copies), which costs far more than the check.
  const std::string key = absl::StrCat(rule, "|", id.key(), "|", b->Code());
  if (Repeat(key, now)) return;
  const std::string what = b->Describe();
  std::string summary;
  if (rule == "suspicious_image_network") {
    summary = absl::StrCat(ImageName(id), " (", absl::StrJoin(id.suspicious(), ", "),
                           ") used the network: ", what, " ", Endpoint(n));
  } else if (rule == "first_network_use") {
    summary = absl::StrCat(ImageName(id), " used the network for the first time: ", what, " ",
                           Endpoint(n));
  } else if (rule == "new_listener") {
    summary = absl::StrCat(ImageName(id), " started ", what, ", which it never did before");
  } else {
    summary = absl::StrCat(ImageName(id), " did something new: ", what, " ", Endpoint(n), " (",
                           obs.known_behaviors, " behaviours known)");
  }

  v1::Alert a;
  a.set_rule(rule);
  a.set_severity(severity);
  a.set_summary(std::move(summary));
  *a.mutable_process() = n.process();
  *a.mutable_image() = id;
  for (v1::Process& anc : Ancestors(n.process())) *a.add_ancestors() = std::move(anc);
  *a.mutable_network() = n;
  a.mutable_network()->clear_process();  // it is in `process`
  v1::BaselineFacts* f = a.mutable_baseline();
  SetTime(obs.image_first_seen, f->mutable_image_first_seen());
  f->set_known_behaviors(obs.known_behaviors);
  if (obs.new_image) f->add_new_facts("image never seen on this host before");
  if (obs.first_network) f->add_new_facts("first network use of this image");
  if (obs.new_behavior) f->add_new_facts(what);
  f->set_same_sha256_other_path(other_key);
  if (!other_key.empty()) f->add_new_facts(absl::StrCat("same bytes known as ", other_key));
  f->set_path_known_other_sha256(obs.previous_sha256);
  if (!obs.previous_sha256.empty())
    f->add_new_facts(absl::StrCat("new bytes: this path was known with sha256 ", obs.previous_sha256));
  f->set_learning(learning);
  a.set_occurrences(1);
  a.set_maybe_incomplete(NearLoss(now));
  Raise(std::move(a), key, now, out);
}

bool Detector::Repeat(const std::string& key, absl::Time now) {
  auto w = windows_.find(key);
  if (w == windows_.end() || now >= w->second.ends) return false;
  ++deduplicated_;
  w->second.last.set_occurrences(w->second.last.occurrences() + 1);
  return true;
}

void Detector::RaiseFrom(v1::Alert alert, const std::string& key, absl::Time now, std::vector<v1::Alert>* out) {
  if (Repeat(key, now)) return;
  if (alert.has_process() && !alert.process().unknown())
    for (v1::Process& anc : Ancestors(alert.process())) *alert.add_ancestors() = std::move(anc);
  alert.set_occurrences(1);
  alert.set_maybe_incomplete(NearLoss(now));
  Raise(std::move(alert), key, now, out);
}

void Detector::Raise(v1::Alert alert, const std::string& key, absl::Time now,
                     std::vector<v1::Alert>* out) {
  if (exception_hook_ && exception_hook_(alert)) {
    ++excepted_;
    return;
  }
  if (auto old = windows_.find(key); old != windows_.end() && old->second.last.occurrences() > 1) {
    // Its window closed since the last Tick: its summary goes out first.
    v1::Alert summary = std::move(old->second.last);
    summary.set_repeat_summary(true);
    out->push_back(std::move(summary));
  }
  if (windows_.size() >= opts_.max_dedup_entries) {
    Tick(absl::InfiniteFuture(), out);  // close every window rather than grow
    ++dedup_evicted_;
  }
  alert.set_id(absl::StrCat(opts_.id_prefix, "-", ++next_id_));
  ++raised_;
  out->push_back(alert);
  windows_[key] = Window{now + opts_.dedup_window, std::move(alert)};
}

void Detector::Tick(absl::Time now, std::vector<v1::Alert>* out) {
  for (auto it = windows_.begin(); it != windows_.end();) {
    if (it->second.ends > now) {
      ++it;
      continue;
    }
    if (it->second.last.occurrences() > 1) {
      v1::Alert summary = std::move(it->second.last);
      summary.set_repeat_summary(true);
      out->push_back(std::move(summary));
    }
    windows_.erase(it++);
  }
}

}  // namespace sockwatch
