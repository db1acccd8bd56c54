// The collector's Ingest service (gRPC callback API): one reactor per agent
// stream, no thread per stream. A stream is a Hello and then batches; each
// batch is validated, queued to the group-commit writer, and acknowledged
// once committed, in order, with one write in flight.
#ifndef SOCKWATCH_COLLECTOR_INGEST_SERVICE_H_
#define SOCKWATCH_COLLECTOR_INGEST_SERVICE_H_

#include <atomic>
#include <cstdint>

#include "collector/writer.h"
#include "sockwatch/v1/ingest.grpc.pb.h"

namespace sockwatch {

struct IngestOptions {
  // mTLS: the hello must name the host in the client certificate; a stream
  // without a verified certificate is refused. Off only with --insecure.
  bool require_certificate = true;
  // Batches of one stream queued and not yet committed; past this the
  // stream's reads pause, and HTTP/2 flow control slows the agent.
  int max_in_flight = 4;
  // Log each stream's start and end (refusals are always logged).
  bool log_streams = true;
};

struct IngestCounters {
  std::atomic<uint64_t> streams{0};
  std::atomic<uint64_t> refused{0};
  std::atomic<uint64_t> batches{0};
  std::atomic<uint64_t> envelopes{0};
  // Envelopes stored as losses: a sound key, content this collector cannot
  // store (validate.h ReplaceUnstorable).
  std::atomic<uint64_t> replaced{0};
};

class IngestService final : public v1::Ingest::CallbackService {
 public:
  IngestService(StoreWriter* writer, IngestOptions opts) : writer_(writer), opts_(opts) {}

  grpc::ServerBidiReactor<v1::AgentMessage, v1::CollectorMessage>* Stream(
      grpc::CallbackServerContext* ctx) override;

  const IngestCounters& counters() const { return counters_; }

 private:
  StoreWriter* const writer_;
  const IngestOptions opts_;
  IngestCounters counters_;
};

}  // namespace sockwatch

#endif  // SOCKWATCH_COLLECTOR_INGEST_SERVICE_H_
