#include "collector/validate.h"

#include "absl/strings/str_cat.h"
#include "agent/transport.h"
#include "google/protobuf/util/time_util.h"

namespace sockwatch {
namespace {

using google::protobuf::util::TimeUtil;

constexpr size_t kMaxIdBytes = 255;
constexpr size_t kMaxInstanceBytes = 64;
// google.protobuf.Timestamp's valid range: 0001-01-01 to 9999-12-31.
constexpr int64_t kMinSeconds = -62135596800;
constexpr int64_t kMaxSeconds = 253402300799;

// Ids end up in file names, logs and terminals: printable ASCII only.
absl::Status CheckId(absl::string_view what, absl::string_view id, size_t max) {
  if (id.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  if (id.size() > max)
    return absl::InvalidArgumentError(absl::StrCat(what, " is ", id.size(), " bytes (max ", max, ")"));
  for (unsigned char c : id)
    if (c < 0x21 || c > 0x7e)
      return absl::InvalidArgumentError(
          absl::StrCat(what, " has a byte 0x", absl::Hex(c), " (printable ASCII only)"));
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateHello(const v1::Hello& hello, absl::string_view cert_host_id) {
  if (absl::Status s = CheckId("hello.host_id", hello.host_id(), kMaxIdBytes); !s.ok()) return s;
  if (absl::Status s = CheckId("hello.agent_instance", hello.agent_instance(), kMaxInstanceBytes);
      !s.ok())
    return s;
  if (!cert_host_id.empty() && hello.host_id() != cert_host_id)
    return absl::PermissionDeniedError(absl::StrCat("certificate is for host '", cert_host_id,
                                                    "', hello claims host '", hello.host_id(), "'"));
  return absl::OkStatus();
}

absl::Status ValidateBatch(const v1::Batch& batch, const v1::Hello& hello, uint64_t prev_spool_seq) {
  if (batch.envelopes_size() == 0) return absl::InvalidArgumentError("batch has no envelopes");
  if (batch.envelopes_size() > kMaxBatchEnvelopes)
    return absl::ResourceExhaustedError(absl::StrCat("batch has ", batch.envelopes_size(),
                                                     " envelopes (max ", kMaxBatchEnvelopes, ")"));
  if (batch.spool_seq() <= prev_spool_seq)
    return absl::InvalidArgumentError(absl::StrCat("batch.spool_seq ", batch.spool_seq(),
                                                   " not above the previous ", prev_spool_seq));
  for (int i = 0; i < batch.envelopes_size(); ++i) {
    const v1::Envelope& e = batch.envelopes(i);
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat("envelope ", i, " (seq ", e.seq(), "): ", why));
    };
    if (e.host_id() != hello.host_id())
      return absl::PermissionDeniedError(absl::StrCat("envelope ", i, " is for host '", e.host_id(),
                                                      "', stream is for '", hello.host_id(), "'"));
    if (absl::Status s = CheckId("agent_instance", e.agent_instance(), kMaxInstanceBytes); !s.ok())
      return bad(s.message());
    if (e.seq() == 0) return bad("seq is 0 (sequence numbers start at 1)");
  }
  return absl::OkStatus();
}

size_t ReplaceUnstorable(v1::Batch& batch, absl::Time now, std::string* first) {
  size_t replaced = 0;
  for (int i = 0; i < batch.envelopes_size(); ++i) {
    v1::Envelope& e = *batch.mutable_envelopes(i);
    const bool time_ok = e.has_time() && e.time().seconds() >= kMinSeconds &&
                         e.time().seconds() <= kMaxSeconds && e.time().nanos() >= 0 &&
                         e.time().nanos() <= 999999999;
    absl::string_view rule, why;
    if (!e.has_time()) {
      rule = "no_time";
      why = "no time";
    } else if (!time_ok) {
      rule = "time_out_of_range";
      why = "time out of range";
    } else if (e.event_case() == v1::Envelope::EVENT_NOT_SET) {
      rule = "unknown_event";
      why = "no event this collector knows (an agent newer than the collector?)";
    } else {
      continue;
    }
    if (replaced++ == 0 && first != nullptr)
      *first = absl::StrCat("envelope ", i, " (seq ", e.seq(), "): ", why);
    v1::Envelope loss;
    loss.set_host_id(e.host_id());
    loss.set_agent_instance(e.agent_instance());
    loss.set_seq(e.seq());
    loss.set_boottime_ns(e.boottime_ns());
    loss.set_hostname(e.hostname());
    *loss.mutable_time() =
        time_ok ? e.time() : TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(now));
    v1::Loss* l = loss.mutable_loss();
    l->set_reason(absl::StrCat("collector_refused_", rule));
    l->set_count(1);
    *l->mutable_first_time() = loss.time();
    *l->mutable_last_time() = loss.time();
    e = std::move(loss);
  }
  return replaced;
}

}  // namespace sockwatch
