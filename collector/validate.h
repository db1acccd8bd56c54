// Checks on every message an agent sends, before anything is stored. A
// failed check names the field and the rule; the stream ends with it. An
// envelope whose key is sound but whose content cannot be stored is replaced
// by a loss record instead (ReplaceUnstorable).
#ifndef SOCKWATCH_COLLECTOR_VALIDATE_H_
#define SOCKWATCH_COLLECTOR_VALIDATE_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "sockwatch/v1/ingest.pb.h"

namespace sockwatch {

// The hello: host id and instance present, bounded and printable. If
// cert_host_id is non-empty (mTLS), the hello must name that host:
// PermissionDenied otherwise.
absl::Status ValidateHello(const v1::Hello& hello, absl::string_view cert_host_id);

// A batch of the stream opened by hello: size bounds, every envelope of that
// host, with an agent instance and a sequence number > 0 (its key);
// spool_seq above prev_spool_seq.
absl::Status ValidateBatch(const v1::Batch& batch, const v1::Hello& hello,
                           uint64_t prev_spool_seq);

// Envelopes of a valid batch that cannot be stored as sent -- no time, a time
// outside google.protobuf.Timestamp's range, or no event this collector knows
// (an agent newer than the collector, say) -- are replaced in place by a Loss
// envelope under the same key: reason "collector_refused_<rule>", count 1, at
// the envelope's time (now if that is the problem). The host's history shows
// the gap and the stream goes on; refusing the batch would make its agent
// resend it forever. Returns how many were replaced; *first (if not null)
// names the first one and its rule.
size_t ReplaceUnstorable(v1::Batch& batch, absl::Time now, std::string* first);

}  // namespace sockwatch

#endif  // SOCKWATCH_COLLECTOR_VALIDATE_H_
