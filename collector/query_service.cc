#include "collector/query_service.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "absl/strings/str_cat.h"
#include "agent/text.h"

namespace sockwatch {
namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

absl::Time FromProto(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

void ToProto(absl::Time t, google::protobuf::Timestamp* ts) {
  const int64_t ns = absl::ToUnixNanos(t);
  ts->set_seconds(ns / 1000000000);
  ts->set_nanos(static_cast<int32_t>(ns % 1000000000));
}

// Refusals are logged with who asked (the peer), escaped.
void LogRefusal(grpc::CallbackServerContext* ctx, const absl::Status& s) {
  fprintf(stderr, "sockwatch-collector: query from %s refused: %s\n",
          EscapeForTerminal(ctx->peer()).c_str(), EscapeForTerminal(s.ToString()).c_str());
}

}  // namespace

absl::Status AttachTriage(Store& store, std::vector<v1::Envelope>& events) {
  std::vector<std::string> ids;
  for (const v1::Envelope& e : events)
    if (e.has_alert() && !e.alert().id().empty()) ids.push_back(e.alert().id());
  if (ids.empty()) return absl::OkStatus();
  absl::StatusOr<std::vector<TriageRecord>> records = store.Triage(ids);
  if (!records.ok()) return records.status();
  absl::flat_hash_map<std::string, std::vector<const TriageRecord*>> by_id;
  for (const TriageRecord& r : *records) by_id[r.alert_id].push_back(&r);
  for (v1::Envelope& e : events) {
    if (!e.has_alert()) continue;
    v1::Triage* t = e.mutable_alert()->mutable_triage();
    t->Clear();
    t->set_status("open");
    auto it = by_id.find(e.alert().id());
    if (it == by_id.end()) continue;
    for (const TriageRecord* r : it->second) {
      v1::TriageEntry* entry = t->add_history();
      entry->set_status(r->status);
      entry->set_by(r->by);
      entry->set_note(r->note);
      ToProto(r->time, entry->mutable_time());
      t->set_status(r->status);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<EventQuery> ToEventQuery(const v1::EventsRequest& req) {
  const v1::EventFilter& f = req.filter();
  EventQuery q;
  q.host_id = f.host_id();
  q.kind = f.kind();
  q.exe = f.exe();
  q.sha256 = f.sha256();
  q.rule = f.rule();
  q.container_prefix = f.container();
  q.remote = f.remote();
  q.argv_contains = f.argv_contains();
  if (f.remote_port() > 65535)
    return absl::InvalidArgumentError(absl::StrCat("remote_port ", f.remote_port(), " is not a port"));
  q.remote_port = f.remote_port();
  q.alert_id = f.alert_id();
  q.alert_status = f.alert_status();
  if (absl::Status s = CheckAlertStatus(q.alert_status); !s.ok()) return s;
  if (!q.alert_id.empty() || !q.alert_status.empty()) {
    if (!q.kind.empty() && q.kind != "alert")
      return absl::InvalidArgumentError(
          absl::StrCat("alert_id and alert_status filter alerts, not events of kind ", q.kind));
    q.kind = "alert";
  }
  q.protocol = f.protocol();
  q.direction = f.direction();
  if (absl::Status s = CheckRemoteFilter(q.remote); !s.ok()) return s;
  if (f.has_since()) q.since = FromProto(f.since());
  if (f.has_until()) q.until = FromProto(f.until());
  if (q.since >= q.until) return absl::InvalidArgumentError("since is not before until");
  const uint32_t page = req.page_size() ? req.page_size() : kDefaultPageSize;
  if (page > kMaxPageSize)
    return absl::InvalidArgumentError(absl::StrCat("page_size ", page, " (max ", kMaxPageSize, ")"));
  q.limit = page + 1;  // one more tells whether there is a next page
  if (!req.page_token().empty() && !absl::SimpleAtoi(req.page_token(), &q.offset))
    return absl::InvalidArgumentError("page_token is not one this collector gave");
  q.newest_first = req.newest_first();
  return q;
}

QueryService::QueryService(Store* store, const TokenAuth* auth, int threads)
    : store_(store), auth_(auth) {
  for (int i = 0; i < std::max(1, threads); ++i) workers_.emplace_back([this] { Work(); });
}

QueryService::~QueryService() {
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
  }
  for (std::thread& t : workers_) t.join();
}

void QueryService::Work() {
  for (;;) {
    std::function<void()> job;
    {
      absl::MutexLock l(&mu_);
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stop_ || !jobs_.empty(); };
      mu_.Await(absl::Condition(&ready));
      if (jobs_.empty()) return;  // stopping, nothing left
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
  }
}

grpc::ServerUnaryReactor* QueryService::Serve(grpc::CallbackServerContext* ctx, Role need,
                                              std::function<absl::Status(const Principal&)> body) {
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  // The context and the reactor live until Finish: the worker may use them.
  auto job = [this, ctx, r, need, body = std::move(body)] {
    absl::StatusOr<Principal> who = auth_->Check(*ctx, need);
    absl::Status s = who.ok() ? body(*who) : who.status();
    if (!s.ok()) LogRefusal(ctx, s);
    r->Finish(s.ok() ? grpc::Status::OK : ToGrpc(s));
  };
  absl::MutexLock l(&mu_);
  jobs_.push_back(std::move(job));
  return r;
}

grpc::ServerUnaryReactor* QueryService::Events(grpc::CallbackServerContext* ctx,
                                               const v1::EventsRequest* req,
                                               v1::EventsResponse* resp) {
  return Serve(ctx, Role::kReader, [this, req, resp](const Principal&) -> absl::Status {
    absl::StatusOr<EventQuery> q = ToEventQuery(*req);
    if (!q.ok()) return q.status();
    absl::StatusOr<std::vector<v1::Envelope>> events = store_->Events(*q);
    if (!events.ok()) return events.status();
    const size_t page = q->limit - 1;
    if (events->size() > page) {
      events->resize(page);
      resp->set_next_page_token(absl::StrCat(q->offset + page));
    }
    if (absl::Status s = AttachTriage(*store_, *events); !s.ok()) return s;
    for (v1::Envelope& e : *events) resp->add_events()->Swap(&e);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* QueryService::Hosts(grpc::CallbackServerContext* ctx,
                                              const v1::HostsRequest*, v1::HostsResponse* resp) {
  return Serve(ctx, Role::kReader, [this, resp](const Principal&) -> absl::Status {
    absl::StatusOr<std::vector<HostRecord>> hosts = store_->Hosts();
    if (!hosts.ok()) return hosts.status();
    // Loss records are rare: one query for the fleet, summed per host.
    EventQuery lost;
    lost.kind = "loss";
    lost.limit = 0;
    absl::StatusOr<std::vector<v1::Envelope>> losses = store_->Events(lost);
    if (!losses.ok()) return losses.status();
    absl::flat_hash_map<std::string, uint64_t> lost_by_host;
    for (const v1::Envelope& e : *losses) lost_by_host[e.host_id()] += e.loss().count();
    for (HostRecord& h : *hosts) {
      v1::HostInfo* info = resp->add_hosts();
      auto it = lost_by_host.find(h.hello.host_id());
      info->set_events_lost(it == lost_by_host.end() ? 0 : it->second);
      *info->mutable_hello() = std::move(h.hello);
      ToProto(h.first_seen, info->mutable_first_seen());
      ToProto(h.last_seen, info->mutable_last_seen());
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* QueryService::Triage(grpc::CallbackServerContext* ctx,
                                               const v1::TriageRequest* req,
                                               v1::TriageResponse* resp) {
  return Serve(ctx, Role::kResponder, [this, req, resp](const Principal& who) -> absl::Status {
    if (req->alert_id().empty()) return absl::InvalidArgumentError("alert_id is empty");
    if (req->status().empty() || !CheckAlertStatus(req->status()).ok())
      return absl::InvalidArgumentError(
          absl::StrCat("status \"", req->status(), "\": expected acked, closed or open"));
    if (req->note().size() > kMaxTriageNote)
      return absl::InvalidArgumentError(
          absl::StrCat("note of ", req->note().size(), " bytes (max ", kMaxTriageNote, ")"));
    EventQuery q;
    q.kind = "alert";
    q.alert_id = req->alert_id();
    q.limit = 1;
    absl::StatusOr<std::vector<v1::Envelope>> alert = store_->Events(q);
    if (!alert.ok()) return alert.status();
    if (alert->empty()) return absl::NotFoundError(absl::StrCat("no alert with id ", req->alert_id()));
    TriageRecord record;
    record.alert_id = req->alert_id();
    record.status = req->status();
    record.by = who.name;
    record.note = req->note();
    record.time = absl::Now();
    if (absl::Status s = store_->AddTriage(record); !s.ok()) return s;
    fprintf(stderr, "sockwatch-collector: alert %s set to %s by %s\n",
            EscapeForTerminal(record.alert_id).c_str(), record.status.c_str(),
            EscapeForTerminal(record.by).c_str());
    if (absl::Status s = AttachTriage(*store_, *alert); !s.ok()) return s;
    resp->mutable_alert()->Swap(&alert->front());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* QueryService::Prevalence(grpc::CallbackServerContext* ctx,
                                                   const v1::PrevalenceRequest* req,
                                                   v1::PrevalenceResponse* resp) {
  return Serve(ctx, Role::kReader, [this, req, resp](const Principal&) -> absl::Status {
    const uint32_t limit = req->limit() ? req->limit() : kDefaultPrevalenceRows;
    if (limit > kMaxPageSize)
      return absl::InvalidArgumentError(absl::StrCat("limit ", limit, " (max ", kMaxPageSize, ")"));
    if (absl::Status s = CheckRemoteFilter(req->remote()); !s.ok()) return s;
    if (!req->remote().empty() && req->exe().empty() && req->sha256().empty())
      return absl::InvalidArgumentError("remote needs an image: exe or sha256");
    PrevalenceQuery q;
    q.exe = req->exe();
    q.sha256 = req->sha256();
    absl::StatusOr<uint64_t> hosts = store_->CountHosts();
    if (!hosts.ok()) return hosts.status();
    resp->set_fleet_hosts(*hosts);
    absl::StatusOr<std::vector<ImageCount>> images = store_->RarestImages(q, limit);
    if (!images.ok()) return images.status();
    for (const ImageCount& c : *images) {
      v1::ImagePrevalence* p = resp->add_images();
      p->set_exe(c.exe);
      p->set_sha256(c.sha256);
      p->set_sha256_count(c.sha256_count);
      p->set_hosts(c.hosts);
      ToProto(c.first_seen, p->mutable_first_seen());
      ToProto(c.last_seen, p->mutable_last_seen());
    }
    absl::StatusOr<std::vector<PairCount>> pairs = store_->RarestPairs(q, limit);
    if (!pairs.ok()) return pairs.status();
    for (const PairCount& c : *pairs) {
      v1::PairPrevalence* p = resp->add_pairs();
      p->set_exe(c.exe);
      p->set_direction(static_cast<v1::Direction>(c.direction));
      p->set_protocol(static_cast<v1::Protocol>(c.protocol));
      p->set_port(c.port);
      p->set_hosts(c.hosts);
      ToProto(c.first_seen, p->mutable_first_seen());
      ToProto(c.last_seen, p->mutable_last_seen());
    }
    if (!req->remote().empty()) {
      q.remote = req->remote();
      absl::StatusOr<std::vector<std::string>> talked = store_->FactHosts(q, kMaxPageSize);
      if (!talked.ok()) return talked.status();
      for (std::string& h : *talked) resp->add_hosts(std::move(h));
    }
    return absl::OkStatus();
  });
}

}  // namespace sockwatch
