// The collector's Query service (gRPC callback API): event search and the
// fleet's hosts, for the `sockwatch` CLI. Every call needs a bearer token
// (collector/auth.h).
#ifndef SOCKWATCH_COLLECTOR_QUERY_SERVICE_H_
#define SOCKWATCH_COLLECTOR_QUERY_SERVICE_H_

#include "collector/auth.h"
#include "collector/store.h"
#include "sockwatch/v1/query.grpc.pb.h"

namespace sockwatch {

inline constexpr uint32_t kDefaultPageSize = 100;
inline constexpr uint32_t kMaxPageSize = 10000;

// EventsRequest -> store query (validated; clear errors).
absl::StatusOr<EventQuery> ToEventQuery(const v1::EventsRequest& req);

class QueryService final : public v1::Query::CallbackService {
 public:
  QueryService(Store* store, const TokenAuth* auth) : store_(store), auth_(auth) {}

  grpc::ServerUnaryReactor* Events(grpc::CallbackServerContext* ctx, const v1::EventsRequest* req,
                                   v1::EventsResponse* resp) override;
  grpc::ServerUnaryReactor* Hosts(grpc::CallbackServerContext* ctx, const v1::HostsRequest* req,
                                  v1::HostsResponse* resp) override;

 private:
  Store* const store_;
  const TokenAuth* const auth_;
};

}  // namespace sockwatch

#endif  // SOCKWATCH_COLLECTOR_QUERY_SERVICE_H_
