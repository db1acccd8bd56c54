// Where the collector keeps what agents send. One interface, several
// backends: SQLite (default, one machine) now; ClickHouse for fleets later.
//
// Exactly once: an envelope is identified by (host_id, agent_instance, seq);
// writing one that is already stored is a no-op counted as a duplicate.
#ifndef SOCKWATCH_COLLECTOR_STORE_H_
#define SOCKWATCH_COLLECTOR_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "sockwatch/v1/event.pb.h"
#include "sockwatch/v1/ingest.pb.h"

namespace sockwatch {

struct WriteResult {
  uint64_t stored = 0;      // newly stored envelopes
  uint64_t duplicates = 0;  // already stored before (replays)
};

// What an agent told us about itself (its Hello), and when we last heard.
struct HostRecord {
  v1::Hello hello;
  absl::Time first_seen = absl::InfinitePast();
  absl::Time last_seen = absl::InfinitePast();
};

struct EventQuery {
  std::string host_id;         // empty: every host
  std::string agent_instance;  // empty: every instance
  std::string kind;            // "network", "loss", "alert", ... ; empty: all
  absl::Time since = absl::InfinitePast();
  absl::Time until = absl::InfiniteFuture();
  size_t limit = 100000;
  // Column filters; empty or 0: any.
  std::string exe;               // exact path
  std::string sha256;            // image digest (alerts)
  std::string rule;              // alert rule
  std::string container_prefix;  // container id prefix
  uint32_t remote_port = 0;
  int protocol = 0;   // v1::Protocol
  int direction = 0;  // v1::Direction
  // Filters applied to the decoded events: the remote address as an IP or a
  // CIDR, and a substring of the space-joined command line.
  std::string remote;
  std::string argv_contains;
  // Paging: matching events skipped before the first returned.
  size_t offset = 0;
  // Newest first (by event time) instead of host, instance, seq.
  bool newest_first = false;
};

// The process an event is about (network, exec, fork, exit, alert); null
// for other kinds.
const v1::Process* EventProcess(const v1::Envelope& env);
// Checks q's remote filter ("" or an IP or a CIDR): clear error otherwise.
absl::Status CheckRemoteFilter(absl::string_view remote);
// Whether env passes q's decoded-row filters (remote, argv_contains).
bool MatchesDecodedFilters(const EventQuery& q, const v1::Envelope& env);

class Store {
 public:
  virtual ~Store() = default;

  // Stores the envelopes in one transaction and returns once it is durable
  // (committed). Idempotent on (host_id, agent_instance, seq). The caller has
  // validated the envelopes. On error nothing of the call is stored.
  virtual absl::StatusOr<WriteResult> Write(absl::Span<const v1::Envelope* const> envelopes) = 0;

  // Records (or refreshes) a host's facts; last_seen = now.
  virtual absl::Status UpsertHost(const v1::Hello& hello, absl::Time now) = 0;

  // Stored envelopes matching q, ordered by host_id, agent_instance, seq.
  virtual absl::StatusOr<std::vector<v1::Envelope>> Events(const EventQuery& q) = 0;
  // How many stored envelopes match q (limit ignored).
  virtual absl::StatusOr<uint64_t> CountEvents(const EventQuery& q) = 0;

  virtual absl::StatusOr<std::vector<HostRecord>> Hosts() = 0;
};

// Opens a store by URL: "sqlite:PATH" (created if missing). Clear error for
// an unknown scheme or an unusable path.
absl::StatusOr<std::unique_ptr<Store>> OpenStore(absl::string_view url);

// Event kind names used in EventQuery::kind and the stores' kind column:
// "exec", "fork", "exit", "network", "loss", "coverage", "alert", "learning".
absl::string_view EnvelopeKind(const v1::Envelope& env);

}  // namespace sockwatch

#endif  // SOCKWATCH_COLLECTOR_STORE_H_
