// Checks on every message an agent sends, before anything is stored. A
// failed check names the field and the rule; the stream ends with it.
#ifndef SOCKWATCH_COLLECTOR_VALIDATE_H_
#define SOCKWATCH_COLLECTOR_VALIDATE_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "sockwatch/v1/ingest.pb.h"

namespace sockwatch {

// The hello: host id and instance present, bounded and printable. If
// cert_host_id is non-empty (mTLS), the hello must name that host:
// PermissionDenied otherwise.
absl::Status ValidateHello(const v1::Hello& hello, absl::string_view cert_host_id);

// A batch of the stream opened by hello: size bounds, every envelope of that
// host, with an agent instance, a sequence number > 0, a valid time and one
// event; spool_seq above prev_spool_seq.
absl::Status ValidateBatch(const v1::Batch& batch, const v1::Hello& hello,
                           uint64_t prev_spool_seq);

}  // namespace sockwatch

#endif  // SOCKWATCH_COLLECTOR_VALIDATE_H_
