// Output of the `sockwatch` CLI: aligned tables for people (the default),
// JSON lines (the proto JSON mapping, proto field names) and CSV for
// scripts. Terminal control characters in argv, paths or any other field
// are escaped in tables and CSV, never passed through.
#ifndef SOCKWATCH_COLLECTOR_CLI_FORMAT_H_
#define SOCKWATCH_COLLECTOR_CLI_FORMAT_H_

#include <ostream>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "sockwatch/v1/event.pb.h"
#include "sockwatch/v1/query.pb.h"

namespace sockwatch {

enum class OutputFormat { kTable, kJson, kCsv };

// Events of any kind, one row each: TIME HOST KIND PID EXE ARGV LOCAL REMOTE
// PROTO DIR OUTCOME/DETAIL. JSON: each whole envelope.
void WriteEvents(absl::Span<const v1::Envelope> events, OutputFormat format, std::ostream& out);

// Alerts (envelopes of kind alert), one row each: TIME HOST RULE SEVERITY
// SUMMARY PID EXE ARGV REMOTE. JSON: each whole envelope.
void WriteAlerts(absl::Span<const v1::Envelope> alerts, OutputFormat format, std::ostream& out);

// A host's process-network timeline: events grouped by process (pid and
// start time), processes in order of their first event; each group starts
// with the process (pid, ppid, uid, exe, argv, container, and ancestors when
// an alert in the group carries them) followed by what it talked to (time,
// kind, local -> remote, protocol, outcome, bytes). CSV: one row per event
// with the process columns repeated. JSON: each whole envelope, grouped.
void WriteHistory(absl::Span<const v1::Envelope> events, OutputFormat format, std::ostream& out);

// Hosts: HOST HOSTNAME VERSION KERNEL LAST_SEEN (and age vs now) LOST
// BLIND_SPOTS (coverage.blind_spots joined, "-" if none). JSON: each HostInfo.
void WriteHosts(absl::Span<const v1::HostInfo> hosts, OutputFormat format, absl::Time now,
                std::ostream& out);

}  // namespace sockwatch

#endif  // SOCKWATCH_COLLECTOR_CLI_FORMAT_H_
