#include "collector/ingest_service.h"

#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "agent/text.h"
#include "agent/transport.h"
#include "collector/validate.h"

namespace sockwatch {
namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

// One agent stream. gRPC calls the On* reactions on its threads; the writer
// calls Committed on its thread. Decisions are made under mu_, and the gRPC
// operations they call for are started after it is released (a reaction may
// run inline).
class IngestStream final : public grpc::ServerBidiReactor<v1::AgentMessage, v1::CollectorMessage>,
                           public std::enable_shared_from_this<IngestStream> {
 public:
  static void Start(grpc::CallbackServerContext* ctx, StoreWriter* writer,
                    const IngestOptions& opts, IngestCounters* counters,
                    IngestStream** reactor) {
    auto s = std::shared_ptr<IngestStream>(new IngestStream(ctx, writer, opts, counters));
    s->self_ = s;  // released in OnDone; the writer's callbacks hold their own
    *reactor = s.get();
    s->Step();
  }

  void OnReadDone(bool ok) override {
    {
      absl::MutexLock l(&mu_);
      reading_ = false;
      if (!ok) {
        client_done_ = true;
      } else {
        HandleLocked();
      }
    }
    Step();
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock l(&mu_);
      writing_ = false;
      if (!ok && !error_) error_ = grpc::Status(grpc::StatusCode::CANCELLED, "write failed");
    }
    Step();
  }

  void OnDone() override {
    Log(absl::StrCat("stream ended: ", batches_, " batches, ", envelopes_, " envelopes",
                     replaced_ ? absl::StrCat(", ", replaced_, " of them stored as losses") : ""));
    std::shared_ptr<IngestStream> self;
    {
      absl::MutexLock l(&mu_);
      done_ = true;
      self.swap(self_);
    }
    // self goes out of scope: freed unless the writer still holds a job.
  }

 private:
  IngestStream(grpc::CallbackServerContext* ctx, StoreWriter* writer, const IngestOptions& opts,
               IngestCounters* counters)
      : writer_(writer), opts_(opts), counters_(counters), peer_(ctx->peer()) {
    counters_->streams.fetch_add(1, std::memory_order_relaxed);
    if (ctx->auth_context()) cert_host_ = CertificateHostId(*ctx->auth_context());
    if (opts_.require_certificate && cert_host_.empty())
      Refuse(absl::UnauthenticatedError("no verified client certificate naming a host (CN)"));
  }

  void Log(absl::string_view msg) {
    if (!opts_.log_streams) return;
    fprintf(stderr, "sockwatch-collector: %s host %s: %s\n", EscapeForTerminal(peer_).c_str(),
            EscapeForTerminal(hello_ ? hello_->host_id() : cert_host_).c_str(),
            EscapeForTerminal(msg).c_str());
  }

  // Ends the stream with status (after any write in flight).
  void Refuse(const absl::Status& status) {
    if (error_) return;
    counters_->refused.fetch_add(1, std::memory_order_relaxed);
    fprintf(stderr, "sockwatch-collector: refused %s (cert host '%s'): %s\n",
            EscapeForTerminal(peer_).c_str(), EscapeForTerminal(cert_host_).c_str(),
            EscapeForTerminal(status.ToString()).c_str());
    error_ = ToGrpc(status);
  }

  void HandleLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    switch (in_.msg_case()) {
      case v1::AgentMessage::kHello: {
        if (hello_) return Refuse(absl::InvalidArgumentError("second hello on one stream"));
        if (absl::Status s = ValidateHello(in_.hello(), cert_host_); !s.ok()) return Refuse(s);
        hello_ = in_.hello();
        Log(absl::StrCat("stream from agent instance ", hello_->agent_instance(), ", version ",
                         hello_->agent_version()));
        Submit(std::make_optional(*hello_), nullptr);
        return;
      }
      case v1::AgentMessage::kBatch: {
        if (!hello_) return Refuse(absl::InvalidArgumentError("batch before hello"));
        if (absl::Status s = ValidateBatch(in_.batch(), *hello_, last_spool_seq_); !s.ok())
          return Refuse(s);
        std::string first;
        if (const size_t n = ReplaceUnstorable(*in_.mutable_batch(), absl::Now(), &first); n > 0) {
          counters_->replaced.fetch_add(n, std::memory_order_relaxed);
          // Once per stream, however many follow (counted, and named at its end).
          if (replaced_ == 0)
            fprintf(stderr,
                    "sockwatch-collector: %s host %s: envelopes stored as losses "
                    "(collector_refused_*), the first: %s\n",
                    EscapeForTerminal(peer_).c_str(), EscapeForTerminal(hello_->host_id()).c_str(),
                    EscapeForTerminal(first).c_str());
          replaced_ += n;
        }
        last_spool_seq_ = in_.batch().spool_seq();
        ++batches_;
        envelopes_ += in_.batch().envelopes_size();
        counters_->batches.fetch_add(1, std::memory_order_relaxed);
        counters_->envelopes.fetch_add(in_.batch().envelopes_size(), std::memory_order_relaxed);
        auto batch = std::make_unique<v1::Batch>();
        batch->Swap(in_.mutable_batch());
        Submit(std::nullopt, std::move(batch));
        return;
      }
      default:
        return Refuse(absl::InvalidArgumentError("message with neither hello nor batch"));
    }
  }

  void Submit(std::optional<v1::Hello> hello, std::unique_ptr<v1::Batch> batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ++in_flight_;
    const uint64_t spool_seq = batch ? batch->spool_seq() : 0;
    writer_->Submit(std::move(hello), std::move(batch),
                    [self = shared_from_this(), spool_seq](const absl::Status& s) {
                      self->Committed(spool_seq, s);
                    });
  }

  void Committed(uint64_t spool_seq, const absl::Status& status) {
    {
      absl::MutexLock l(&mu_);
      --in_flight_;
      if (!status.ok()) {
        // The agent keeps the batch and replays it on its next stream.
        if (!error_) {
          fprintf(stderr, "sockwatch-collector: store: %s\n", status.ToString().c_str());
          error_ = grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                absl::StrCat("store: ", status.message()));
        }
      } else if (spool_seq > pending_ack_) {
        pending_ack_ = spool_seq;
      }
      if (done_) return;
    }
    Step();
  }

  // Starts whatever the state calls for: a read, an ack write, or Finish.
  void Step() {
    bool read = false, write = false, finish = false;
    grpc::Status finish_status;
    {
      absl::MutexLock l(&mu_);
      if (finished_ || done_) return;
      if (error_ && !writing_) {
        finish = finished_ = true;
        finish_status = *error_;
      } else if (!error_) {
        if (!writing_ && pending_ack_ > sent_ack_) {
          out_.mutable_ack()->set_spool_seq(pending_ack_);
          sent_ack_ = pending_ack_;
          write = writing_ = true;
        }
        if (!reading_ && !client_done_ && in_flight_ < opts_.max_in_flight) {
          read = reading_ = true;
        }
        if (client_done_ && !reading_ && !writing_ && in_flight_ == 0 &&
            pending_ack_ == sent_ack_) {
          finish = finished_ = true;
        }
      }
    }
    if (write) StartWrite(&out_);
    if (read) StartRead(&in_);
    if (finish) Finish(finish_status);
  }

  StoreWriter* const writer_;
  const IngestOptions opts_;
  IngestCounters* const counters_;
  const std::string peer_;
  std::string cert_host_;

  absl::Mutex mu_;
  std::shared_ptr<IngestStream> self_ ABSL_GUARDED_BY(mu_);
  v1::AgentMessage in_;       // the read in flight
  v1::CollectorMessage out_;  // the write in flight
  std::optional<v1::Hello> hello_;
  std::optional<grpc::Status> error_ ABSL_GUARDED_BY(mu_);
  uint64_t last_spool_seq_ = 0;
  uint64_t replaced_ = 0;  // envelopes ReplaceUnstorable replaced
  uint64_t pending_ack_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t sent_ack_ ABSL_GUARDED_BY(mu_) = 0;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool client_done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t batches_ = 0;
  uint64_t envelopes_ = 0;
};

}  // namespace

grpc::ServerBidiReactor<v1::AgentMessage, v1::CollectorMessage>* IngestService::Stream(
    grpc::CallbackServerContext* ctx) {
  IngestStream* reactor = nullptr;
  IngestStream::Start(ctx, writer_, opts_, &counters_, &reactor);
  return reactor;
}

}  // namespace sockwatch
