// Output of the `sockwatch` CLI: aligned tables for people (the default),
// JSON lines (the proto JSON mapping, proto field names) and CSV for
// scripts. Terminal control characters in argv, paths or any other field
// are escaped in tables and CSV, never passed through.
#ifndef SOCKWATCH_COLLECTOR_CLI_FORMAT_H_
#define SOCKWATCH_COLLECTOR_CLI_FORMAT_H_

#include <ostream>
#include <string>

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

// Alerts (envelopes of kind alert), one row each: TIME ID HOST RULE SEVERITY
// STATUS SUMMARY FLEET PID EXE ARGV REMOTE. JSON: each whole envelope.
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

// "image 3/1204 hosts (sha256), behaviour 1/1204": the alert's fleet
// prevalence as the collector stored it; "" if it has none.
std::string FleetSummary(const v1::Alert& a);

// Prevalence: the fleet size, images and pairs rarest first, and the hosts
// that talked to the asked address. CSV: one table with a ROW column
// (image, pair, host). JSON: the response as one line.
void WritePrevalence(const v1::PrevalenceResponse& resp, OutputFormat format, std::ostream& out);

// An alert's triage steps after a change: ALERT STATUS BY TIME NOTE.
void WriteTriaged(const v1::Envelope& alert, OutputFormat format, std::ostream& out);

}  // namespace sockwatch

#endif  // SOCKWATCH_COLLECTOR_CLI_FORMAT_H_
