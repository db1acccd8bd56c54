// The collector's Query service (gRPC callback API): event search and the
// fleet's hosts, alert triage and fleet prevalence, for the `sockwatch` CLI. Every call needs a bearer token
// (collector/auth.h).
#ifndef SOCKWATCH_COLLECTOR_QUERY_SERVICE_H_
#define SOCKWATCH_COLLECTOR_QUERY_SERVICE_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "collector/auth.h"
#include "collector/store.h"
#include "sockwatch/v1/query.grpc.pb.h"

namespace sockwatch {

inline constexpr uint32_t kDefaultPageSize = 100;
inline constexpr uint32_t kMaxPageSize = 10000;

inline constexpr uint32_t kDefaultPrevalenceRows = 50;
inline constexpr size_t kMaxTriageNote = 4096;

// Sets Alert.triage of every alert in events from the store.
absl::Status AttachTriage(Store& store, std::vector<v1::Envelope>& events);

// EventsRequest -> store query (validated; clear errors).
absl::StatusOr<EventQuery> ToEventQuery(const v1::EventsRequest& req);

// Store calls may take long (a scan of a large store), and gRPC's callback
// threads must not block: those threads serve the agents' streams too. So
// each call runs on one of `threads` workers of this service.
class QueryService final : public v1::Query::CallbackService {
 public:
  QueryService(Store* store, const TokenAuth* auth, int threads = 4);
  // Runs what is queued, then joins the workers. Destroy after the server
  // has shut down.
  ~QueryService() override;

  grpc::ServerUnaryReactor* Events(grpc::CallbackServerContext* ctx, const v1::EventsRequest* req,
                                   v1::EventsResponse* resp) override;
  grpc::ServerUnaryReactor* Hosts(grpc::CallbackServerContext* ctx, const v1::HostsRequest* req,
                                  v1::HostsResponse* resp) override;
  grpc::ServerUnaryReactor* Triage(grpc::CallbackServerContext* ctx, const v1::TriageRequest* req,
                                   v1::TriageResponse* resp) override;
  grpc::ServerUnaryReactor* Prevalence(grpc::CallbackServerContext* ctx,
                                       const v1::PrevalenceRequest* req,
                                       v1::PrevalenceResponse* resp) override;

 private:
  // Checks the caller's role, runs body on a worker and finishes the call
  // with its status (a refusal is logged).
  grpc::ServerUnaryReactor* Serve(grpc::CallbackServerContext* ctx, Role need,
                                  std::function<absl::Status(const Principal&)> body);
  void Work();

  Store* const store_;
  const TokenAuth* const auth_;
  absl::Mutex mu_;
  std::deque<std::function<void()>> jobs_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

}  // namespace sockwatch

#endif  // SOCKWATCH_COLLECTOR_QUERY_SERVICE_H_
