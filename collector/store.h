// Where the collector keeps what agents send. One interface, several
// backends: SQLite (default, one machine) and ClickHouse (fleets).
//
// Exactly once: an envelope is identified by (host_id, agent_instance, seq);
// writing one that is already stored is a no-op counted as a duplicate.
#ifndef SOCKWATCH_COLLECTOR_STORE_H_
#define SOCKWATCH_COLLECTOR_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
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
  // Alerts only (decoded filters): one alert by Alert.id, and the triage
  // status ("open": never triaged or reopened; "acked"; "closed").
  std::string alert_id;
  std::string alert_status;
};

// One triage step of an alert, as stored.
struct TriageRecord {
  std::string alert_id;
  std::string status;  // "acked", "closed" or "open"
  std::string by;      // who (credential name)
  std::string note;
  absl::Time time = absl::InfinitePast();
};

// What prevalence counts: the network facts of events. A fact is what one
// network event (not a flow end: its connect counts) or one alert's network
// evidence says: on host H, image exe (with sha256 when known) used the
// network in a direction over a protocol on a port (the remote port
// outbound, the local port inbound and for listeners) with a remote address.
struct NetworkFact {
  std::string exe;
  std::string sha256;
  int direction = 0;  // v1::Direction
  int protocol = 0;   // v1::Protocol
  uint32_t port = 0;
  std::string remote_ip;  // "" for listeners
};
// The fact env contributes, if any.
std::optional<NetworkFact> FactOf(const v1::Envelope& env);

// Filters of prevalence questions; empty or 0: any.
struct PrevalenceQuery {
  std::string exe;
  std::string sha256;
  int direction = 0;
  int protocol = 0;
  uint32_t port = 0;
  std::string remote;        // an IP or a CIDR
  std::string exclude_host;  // leave this host out of counts and lists
};

// An image (path) and on how many distinct hosts it used the network.
struct ImageCount {
  std::string exe;
  std::string sha256;         // a digest seen for it (the greatest), "" if none
  uint64_t sha256_count = 0;  // distinct non-empty digests seen
  uint64_t hosts = 0;
  absl::Time first_seen = absl::InfinitePast();  // earliest event time
  absl::Time last_seen = absl::InfinitePast();   // latest event time
};

// An (exe, direction, protocol, port) pair and on how many hosts.
struct PairCount {
  std::string exe;
  int direction = 0;
  int protocol = 0;
  uint32_t port = 0;
  uint64_t hosts = 0;
  absl::Time first_seen = absl::InfinitePast();
  absl::Time last_seen = absl::InfinitePast();
};

// The process an event is about (network, exec, fork, exit, alert); null
// for other kinds.
const v1::Process* EventProcess(const v1::Envelope& env);
// The query columns of an envelope, the same for every backend so filters
// agree: what each kind says about the process, the connection, the alert.
// Views into env; empty / null where the kind has no such fact.
struct EventColumns {
  const v1::Process* process = nullptr;
  const v1::NetworkEvent* network = nullptr;
  absl::string_view sha256;        // alerts: the image's digest
  absl::string_view rule;          // alerts
  absl::string_view container_id;  // the alert image's, else the process's
  absl::string_view alert_id;      // alerts
};
EventColumns ColumnsOf(const v1::Envelope& env);

// Checks what a store cannot answer: an unknown kind, a bad remote filter or
// alert status. Clear InvalidArgument errors.
absl::Status CheckEventQuery(const EventQuery& q);
// Checks a triage step before it is stored (alert id and a known status).
absl::Status CheckTriageRecord(const TriageRecord& record);
// Checks Hellos before any is stored: each names its host.
absl::Status CheckHellos(absl::Span<const v1::Hello* const> hellos);

// Checks q's remote filter ("" or an IP or a CIDR): clear error otherwise.
absl::Status CheckRemoteFilter(absl::string_view remote);
// Whether ip is in remote ("" matches everything; an IP or a CIDR).
bool InRemoteFilter(absl::string_view remote, absl::string_view ip);
// Whether q has filters only MatchesDecodedFilters applies.
bool HasDecodedFilters(const EventQuery& q);
// Latest triage status by alert id (alerts never triaged are absent: open).
using TriageStatuses = absl::flat_hash_map<std::string, std::string>;
TriageStatuses LatestStatuses(absl::Span<const TriageRecord> records);
// Whether env passes q's decoded-row filters (remote, argv_contains,
// alert_id, alert_status; statuses is needed for alert_status only).
bool MatchesDecodedFilters(const EventQuery& q, const v1::Envelope& env,
                           const TriageStatuses* statuses = nullptr);
// Checks q's alert_status ("", "open", "acked", "closed").
absl::Status CheckAlertStatus(absl::string_view status);

class Store {
 public:
  virtual ~Store() = default;

  // Stores the envelopes in one transaction and returns once it is durable
  // (committed). Idempotent on (host_id, agent_instance, seq). The caller has
  // validated the envelopes. On error nothing of the call is stored.
  virtual absl::StatusOr<WriteResult> Write(absl::Span<const v1::Envelope* const> envelopes) = 0;

  // Records (or refreshes) a host's facts; last_seen = now.
  virtual absl::Status UpsertHost(const v1::Hello& hello, absl::Time now) = 0;
  // The same for the Hellos of one writer group (a fleet reconnecting says
  // hundreds at once): one transaction where the store has them, so all or
  // none. This default checks them all (none is stored if one is bad), then
  // calls UpsertHost for each.
  virtual absl::Status UpsertHosts(absl::Span<const v1::Hello* const> hellos, absl::Time now);

  // Stored envelopes matching q, ordered by host_id, agent_instance, seq.
  virtual absl::StatusOr<std::vector<v1::Envelope>> Events(const EventQuery& q) = 0;
  // How many stored envelopes match q (limit ignored).
  virtual absl::StatusOr<uint64_t> CountEvents(const EventQuery& q) = 0;

  virtual absl::StatusOr<std::vector<HostRecord>> Hosts() = 0;
  // How many hosts Hosts() would return, without reading their records: the
  // fleet size that prevalence is measured against.
  virtual absl::StatusOr<uint64_t> CountHosts() = 0;

  // Appends a triage step (durable on return).
  virtual absl::Status AddTriage(const TriageRecord& record) = 0;
  // The triage steps of these alerts (every alert's when ids is empty),
  // ordered by alert id, then time, then the order they were added.
  virtual absl::StatusOr<std::vector<TriageRecord>> Triage(
      absl::Span<const std::string> alert_ids) = 0;

  // Prevalence, over the network facts of every stored event (FactOf).
  // Distinct hosts with a fact matching q.
  virtual absl::StatusOr<uint64_t> CountFactHosts(const PrevalenceQuery& q) = 0;
  // Those hosts' ids, sorted, at most limit (0: all).
  virtual absl::StatusOr<std::vector<std::string>> FactHosts(const PrevalenceQuery& q,
                                                             size_t limit) = 0;
  // Images with facts matching q (direction/protocol/port/remote ignored),
  // rarest first: fewest hosts, then exe; at most limit (0: all).
  virtual absl::StatusOr<std::vector<ImageCount>> RarestImages(const PrevalenceQuery& q,
                                                               size_t limit) = 0;
  // Pairs with facts matching q (remote ignored), rarest first: fewest
  // hosts, then exe, direction, protocol, port; at most limit (0: all).
  virtual absl::StatusOr<std::vector<PairCount>> RarestPairs(const PrevalenceQuery& q,
                                                             size_t limit) = 0;
};

// Sets env's Alert.fleet (if env is an alert with network evidence) from the
// store's facts: hosts other than env's own, plus env's host, on which the
// image (by sha256 when the alert has one, else by path) and the behaviour
// used the network, of fleet_hosts known hosts. Not an alert: a no-op.
absl::Status AddFleetPrevalence(Store& store, uint64_t fleet_hosts, v1::Envelope& env);

// Opens a store by URL: "sqlite:PATH" (created if missing) or
// "clickhouse://HOST:PORT/DB" (HTTP interface). Clear error for
// an unknown scheme or an unusable path.
absl::StatusOr<std::unique_ptr<Store>> OpenStore(absl::string_view url);

// Event kind names used in EventQuery::kind and the stores' kind column:
// "exec", "fork", "exit", "network", "loss", "coverage", "alert", "learning".
absl::string_view EnvelopeKind(const v1::Envelope& env);

}  // namespace sockwatch

#endif  // SOCKWATCH_COLLECTOR_STORE_H_
