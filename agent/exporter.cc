#include "agent/exporter.h"

#include <cstdio>
#include <deque>
#include <random>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace sockwatch {

// The reactions of one stream. The exporter thread starts the writes (one in
// flight) and waits on mu_; gRPC's threads run the reactions.
class Exporter::StreamReactor final
    : public grpc::ClientBidiReactor<v1::AgentMessage, v1::CollectorMessage> {
 public:
  explicit StreamReactor(Exporter* exporter) : exporter_(exporter) {}

  void OnWriteDone(bool ok) override {
    absl::MutexLock l(&mu);
    writing = false;
    if (!ok) write_failed = true;
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      absl::MutexLock l(&mu);
      read_closed = true;
      return;
    }
    const uint64_t seq = in.ack().spool_seq();
    std::vector<absl::Duration> latencies;
    {
      absl::MutexLock l(&mu);
      const absl::Time now = absl::Now();
      while (!sent.empty() && sent.front().first <= seq) {
        latencies.push_back(now - sent.front().second);
        sent.pop_front();
      }
      got_ack = true;
    }
    exporter_->OnAck(seq, latencies);
    StartRead(&in);
  }

  void OnDone(const grpc::Status& s) override {
    absl::MutexLock l(&mu);
    status = s;
    done = true;
  }

  absl::Mutex mu;
  v1::AgentMessage out;     // the write in flight
  v1::CollectorMessage in;  // the read in flight
  bool writing ABSL_GUARDED_BY(mu) = false;
  bool write_failed ABSL_GUARDED_BY(mu) = false;
  bool read_closed ABSL_GUARDED_BY(mu) = false;
  bool done ABSL_GUARDED_BY(mu) = false;
  bool got_ack ABSL_GUARDED_BY(mu) = false;
  // Sent batches not yet acknowledged: (spool_seq, when sent).
  std::deque<std::pair<uint64_t, absl::Time>> sent ABSL_GUARDED_BY(mu);
  grpc::Status status ABSL_GUARDED_BY(mu);

 private:
  Exporter* const exporter_;
};

absl::StatusOr<std::unique_ptr<Exporter>> Exporter::Create(const ExporterOptions& opts,
                                                           Spool* spool, v1::Hello hello) {
  auto host = HostOfAddress(opts.address);
  if (!host.ok())
    return absl::InvalidArgumentError(absl::StrCat("--collector: ", host.status().message()));
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (opts.insecure) {
    if (!IsLoopbackHost(*host))
      return absl::InvalidArgumentError(absl::StrCat(
          "--insecure: plaintext is allowed only to a collector on loopback, not '", *host,
          "' (use mTLS: --tls_ca, --tls_cert, --tls_key)"));
    creds = grpc::InsecureChannelCredentials();
  } else {
    auto tls = ClientTls(opts.tls);
    if (!tls.ok()) return tls.status();
    creds = *std::move(tls);
  }
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetCompressionAlgorithm(GRPC_COMPRESS_GZIP);
  // Our own backoff paces new streams; keep the channel's reconnects close to
  // it. (Not GRPC_ARG_MIN_RECONNECT_BACKOFF_MS: that is also the connect
  // timeout, and TLS handshakes to a busy collector need more than 250 ms.)
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(opts.backoff_initial)));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(opts.backoff_max)));
  // A collector that vanished without closing the connection is noticed.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  if (!opts.tls_server_name.empty())
    args.SetSslTargetNameOverride(opts.tls_server_name);
  auto channel = grpc::CreateCustomChannel(opts.address, creds, args);
  return std::unique_ptr<Exporter>(new Exporter(opts, spool, std::move(hello), std::move(channel)));
}

Exporter::Exporter(const ExporterOptions& opts, Spool* spool, v1::Hello hello,
                   std::shared_ptr<grpc::Channel> channel)
    : opts_(opts),
      spool_(spool),
      hello_(std::move(hello)),
      channel_(std::move(channel)),
      stub_(v1::Ingest::NewStub(channel_)) {}

Exporter::~Exporter() { Stop(absl::ZeroDuration()); }

void Exporter::Start() {
  if (!thread_.joinable()) thread_ = std::thread([this] { Loop(); });
}

void Exporter::Stop(absl::Duration drain) {
  {
    absl::MutexLock l(&mu_);
    if (!stopping_) {
      stopping_ = true;
      drain_deadline_ = absl::Now() + drain;
    }
  }
  if (thread_.joinable()) thread_.join();
}

ExporterStats Exporter::stats() const {
  absl::MutexLock l(&mu_);
  return stats_;
}

std::vector<absl::Duration> Exporter::TakeAckLatencies() {
  absl::MutexLock l(&mu_);
  return std::exchange(latencies_, {});
}

void Exporter::OnAck(uint64_t seq, const std::vector<absl::Duration>& latencies) {
  const absl::Status s = spool_->Ack(seq);
  absl::MutexLock l(&mu_);
  if (!s.ok()) stats_.last_error = absl::StrCat("spool: ", s.ToString());
  stats_.acked_seq = std::max(stats_.acked_seq, seq);
  stats_.batches_acked += latencies.size();
  // Bounded: a caller that never takes them keeps the newest 100k.
  if (latencies_.size() < 100000) latencies_.insert(latencies_.end(), latencies.begin(), latencies.end());
}

void Exporter::Loop() {
  std::mt19937_64 rng(std::random_device{}());
  absl::Duration backoff = opts_.backoff_initial;
  for (;;) {
    const bool acked = RunStream();
    absl::MutexLock l(&mu_);
    if (stopping_) return;
    if (acked) backoff = opts_.backoff_initial;
    // Full jitter between half and all of the backoff, so a fleet that lost
    // its collector at once does not come back at once.
    std::uniform_real_distribution<double> jitter(0.5, 1.0);
    const absl::Duration wait = backoff * jitter(rng);
    if (opts_.log)
      fprintf(stderr, "%s: collector %s: %s; retrying in %s\n", opts_.log_prefix.c_str(),
              opts_.address.c_str(), stats_.last_error.c_str(), absl::FormatDuration(wait).c_str());
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), wait);
    if (stopping_) return;
    backoff = std::min(backoff * 2, opts_.backoff_max);
  }
}

bool Exporter::RunStream() {
  StreamReactor r(this);
  grpc::ClientContext ctx;
  ctx.set_compression_algorithm(GRPC_COMPRESS_GZIP);
  stub_->async()->Stream(&ctx, &r);
  // Writes are started from this thread, outside reactions: the hold keeps
  // the stream from completing under us until we are done with it.
  r.AddHold();
  *r.out.mutable_hello() = hello_;
  {
    absl::MutexLock l(&r.mu);
    r.writing = true;
  }
  r.StartWrite(&r.out);
  r.StartRead(&r.in);
  r.StartCall();
  {
    absl::MutexLock l(&mu_);
    ++stats_.streams;
  }

  uint64_t last_sent = spool_->stats().acked_seq;  // replay from what is acknowledged
  std::vector<SpoolRecord> records;
  bool graceful = false;
  for (;;) {
    bool can_write = false;
    {
      absl::MutexLock l(&r.mu);
      auto ready = [&r, this]() ABSL_SHARED_LOCKS_REQUIRED(r.mu) {
        return r.read_closed || r.write_failed || (!r.writing && r.sent.size() < opts_.window);
      };
      r.mu.AwaitWithTimeout(absl::Condition(&ready), absl::Milliseconds(100));
      if (r.read_closed || r.write_failed) break;
      can_write = !r.writing && r.sent.size() < opts_.window;
    }
    {
      absl::MutexLock l(&mu_);
      if (stopping_) {
        const SpoolStats s = spool_->stats();
        if (s.acked_seq >= s.last_seq || absl::Now() >= drain_deadline_) {
          graceful = true;
          break;
        }
      }
    }
    if (!can_write) continue;
    records.clear();
    if (absl::Status s = spool_->Read(last_sent, opts_.batch_envelopes, opts_.batch_bytes, &records);
        !s.ok()) {
      absl::MutexLock l(&mu_);
      stats_.last_error = absl::StrCat("spool: ", s.ToString());
      break;
    }
    if (records.empty()) {
      spool_->WaitFor(last_sent, absl::Milliseconds(100));
      continue;
    }
    r.out.Clear();
    v1::Batch* batch = r.out.mutable_batch();
    uint64_t unreadable = 0;
    for (const SpoolRecord& rec : records)
      if (!batch->add_envelopes()->ParseFromString(rec.payload)) {
        batch->mutable_envelopes()->RemoveLast();
        ++unreadable;
      }
    last_sent = records.back().seq;
    batch->set_spool_seq(last_sent);
    {
      absl::MutexLock l(&mu_);
      stats_.unreadable += unreadable;
      if (batch->envelopes_size() == 0) continue;
      ++stats_.batches_sent;
      stats_.envelopes_sent += batch->envelopes_size();
    }
    {
      absl::MutexLock l(&r.mu);
      r.writing = true;
      r.sent.emplace_back(last_sent, absl::Now());
    }
    r.StartWrite(&r.out);
  }

  if (graceful) {
    // Half-close once the last write is out; the collector finishes after
    // acknowledging what it has.
    {
      absl::MutexLock l(&r.mu);
      auto idle = [&r]() ABSL_SHARED_LOCKS_REQUIRED(r.mu) { return !r.writing || r.read_closed; };
      r.mu.AwaitWithTimeout(absl::Condition(&idle), absl::Seconds(2));
    }
    r.StartWritesDone();
    absl::MutexLock l(&r.mu);
    if (!r.mu.AwaitWithTimeout(absl::Condition(&r.read_closed), absl::Seconds(2))) ctx.TryCancel();
  } else {
    ctx.TryCancel();
  }
  r.RemoveHold();
  absl::MutexLock l(&r.mu);
  r.mu.Await(absl::Condition(&r.done));
  if (!r.status.ok() && !graceful) {
    absl::MutexLock l2(&mu_);
    stats_.last_error = absl::StrCat(
        absl::StatusCodeToString(static_cast<absl::StatusCode>(r.status.error_code())), ": ", r.status.error_message());
  }
  return r.got_ack;
}

}  // namespace sockwatch
