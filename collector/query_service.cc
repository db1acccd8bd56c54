#include "collector/query_service.h"

#include <cstdio>

#include "absl/strings/numbers.h"
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
grpc::ServerUnaryReactor* Refuse(grpc::CallbackServerContext* ctx, const absl::Status& s) {
  fprintf(stderr, "sockwatch-collector: query from %s refused: %s\n",
          EscapeForTerminal(ctx->peer()).c_str(), EscapeForTerminal(s.ToString()).c_str());
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  r->Finish(ToGrpc(s));
  return r;
}

}  // namespace

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

grpc::ServerUnaryReactor* QueryService::Events(grpc::CallbackServerContext* ctx,
                                               const v1::EventsRequest* req,
                                               v1::EventsResponse* resp) {
  if (auto who = auth_->Check(*ctx, Role::kReader); !who.ok()) return Refuse(ctx, who.status());
  absl::StatusOr<EventQuery> q = ToEventQuery(*req);
  if (!q.ok()) return Refuse(ctx, q.status());
  absl::StatusOr<std::vector<v1::Envelope>> events = store_->Events(*q);
  if (!events.ok()) return Refuse(ctx, events.status());
  const size_t page = q->limit - 1;
  if (events->size() > page) {
    events->resize(page);
    resp->set_next_page_token(absl::StrCat(q->offset + page));
  }
  for (v1::Envelope& e : *events) resp->add_events()->Swap(&e);
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  r->Finish(grpc::Status::OK);
  return r;
}

grpc::ServerUnaryReactor* QueryService::Hosts(grpc::CallbackServerContext* ctx,
                                              const v1::HostsRequest*, v1::HostsResponse* resp) {
  if (auto who = auth_->Check(*ctx, Role::kReader); !who.ok()) return Refuse(ctx, who.status());
  absl::StatusOr<std::vector<HostRecord>> hosts = store_->Hosts();
  if (!hosts.ok()) return Refuse(ctx, hosts.status());
  for (HostRecord& h : *hosts) {
    v1::HostInfo* info = resp->add_hosts();
    EventQuery lost;
    lost.host_id = h.hello.host_id();
    lost.kind = "loss";
    lost.limit = 0;
    absl::StatusOr<std::vector<v1::Envelope>> losses = store_->Events(lost);
    if (!losses.ok()) return Refuse(ctx, losses.status());
    uint64_t sum = 0;
    for (const v1::Envelope& e : *losses) sum += e.loss().count();
    info->set_events_lost(sum);
    *info->mutable_hello() = std::move(h.hello);
    ToProto(h.first_seen, info->mutable_first_seen());
    ToProto(h.last_seen, info->mutable_last_seen());
  }
  grpc::ServerUnaryReactor* r = ctx->DefaultReactor();
  r->Finish(grpc::Status::OK);
  return r;
}

}  // namespace sockwatch
