// Sends the spool to the collector: one gRPC stream at a time (a bidi
// reactor, one write in flight, a window of unacknowledged batches), replayed
// from the last acknowledged position on every new stream, reconnecting with
// exponential backoff and jitter. Capture never waits for it: the agent only
// appends to the spool.
#ifndef SOCKWATCH_AGENT_EXPORTER_H_
#define SOCKWATCH_AGENT_EXPORTER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/spool.h"
#include "agent/transport.h"
#include "sockwatch/v1/ingest.grpc.pb.h"

namespace sockwatch {

struct ExporterOptions {
  std::string address;  // collector HOST:PORT
  // Plaintext; allowed only when the collector is on loopback.
  bool insecure = false;
  TlsFiles tls;
  // Name to check the collector's certificate against, when it differs from
  // the host in address.
  std::string tls_server_name;
  size_t batch_envelopes = 1000;
  size_t batch_bytes = 1 << 20;
  // Batches sent and not yet acknowledged.
  size_t window = 8;
  absl::Duration backoff_initial = absl::Milliseconds(250);
  absl::Duration backoff_max = absl::Seconds(30);
  // Log stream errors and reconnects to stderr.
  bool log = true;
  std::string log_prefix = "sockwatch-agent";
};

struct ExporterStats {
  uint64_t streams = 0;           // streams opened
  uint64_t batches_sent = 0;
  uint64_t envelopes_sent = 0;    // including replays
  uint64_t batches_acked = 0;
  uint64_t acked_seq = 0;         // highest spool position acknowledged
  uint64_t unreadable = 0;        // spool records that did not parse (skipped)
  std::string last_error;         // of the last stream that failed
};

class Exporter {
 public:
  // Checks the address and loads TLS material (clear errors); does not connect.
  static absl::StatusOr<std::unique_ptr<Exporter>> Create(const ExporterOptions& opts,
                                                           Spool* spool, v1::Hello hello);
  ~Exporter();

  // Starts the sending thread.
  void Start();
  // Stops: waits up to drain for the collector to acknowledge everything
  // appended so far, then ends the stream. The spool keeps what is left.
  void Stop(absl::Duration drain);

  ExporterStats stats() const;
  // Time from sending a batch to its acknowledgement, one per acked batch
  // since the last call.
  std::vector<absl::Duration> TakeAckLatencies();

 private:
  class StreamReactor;
  Exporter(const ExporterOptions& opts, Spool* spool, v1::Hello hello,
           std::shared_ptr<grpc::Channel> channel);
  void Loop();
  // One stream, until it fails or we stop; true if the collector acked anything.
  bool RunStream();
  // A stream's acknowledgement: the spool may let go of everything up to seq.
  void OnAck(uint64_t seq, const std::vector<absl::Duration>& latencies);

  const ExporterOptions opts_;
  Spool* const spool_;
  const v1::Hello hello_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Ingest::Stub> stub_;
  std::thread thread_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time drain_deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  ExporterStats stats_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::Duration> latencies_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_EXPORTER_H_
