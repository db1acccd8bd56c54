// The ClickHouse backend of the collector's Store, for fleets, over the HTTP
// interface (clickhouse_client.h). Works with ClickHouse 18.16 (Debian 12)
// and current releases.
//
// Layout (schema version 1, see kMigrations in clickhouse_store.cc), every
// table MergeTree-family:
//   schema_version  one row per applied version; a newer one is refused.
//   events      one row per envelope, ORDER BY (host_id, time_ns,
//               agent_instance, seq): host X between times reads a range.
//               Columns copied out for queries (kind, pid, exe, sha256,
//               remote ip/port, protocol, direction, rule, container id,
//               alert id) and the serialized Envelope, which queries return.
//               ReplacingMergeTree on that key, a backstop: a row written
//               twice (two collectors racing on one replay) is dropped by
//               merges, and reads drop a copy next to its twin (no FINAL,
//               which keeps ClickHouse 18 from using PREWHERE).
//   event_keys  (host_id, agent_instance, seq, time_ns) of each event,
//               ORDER BY the exactly-once key: how Write finds which
//               envelopes of a batch are stored already without reading a
//               host's whole history out of events.
//   facts       prevalence facts (store.h FactOf), folded per Write: one row
//               per distinct fact of a batch with its first and last time.
//               Several Writes add several rows for one fact; queries use
//               uniqExact(host_id), min and max, so that is harmless.
//   hosts       the last Hello per host: ReplacingMergeTree(version), read
//               with argMax(..., version); first_seen is carried forward.
//               UpsertHost only queues the row: the next Write, Hosts, a
//               full queue or the destructor stores every queued host with
//               one SELECT (their first_seen) and one INSERT. One INSERT per
//               Hello would make one part each, and a fleet reconnecting at
//               once would stall the writer and hit "too many parts".
//   triage      append-only triage steps, ordered by alert id, time, stamp.
//
// Exactly once: Write holds one lock (the collector has one writer thread),
// asks event_keys which keys of the batch are stored, and inserts only the
// others. It asks only when it must: per host, it remembers the agent
// instance and the highest seq it stored since that stream's last Hello
// here. Agents send a stream in seq order to one collector at a time, so a
// batch wholly above that mark cannot be stored yet; a batch that reaches
// below it (a replay), a new instance, or the first batch after a Hello
// (the agent may have sent to another collector meanwhile) is looked up.
// With several collectors on one database, a race can store a row twice;
// reads drop the copy and merges remove it.
//
// Durability: Write returns after ClickHouse acknowledged each INSERT, i.e.
// wrote the rows into a new part on its disk. ClickHouse 18 does not fsync
// parts: a crash of ClickHouse or of the collector loses nothing
// acknowledged, a power cut of the ClickHouse machine can lose the last
// seconds. Servers that know the fsync_after_insert setting (21.x and later)
// get tables created with it, which closes that gap; with Replicated tables,
// insert_quorum does the same across machines.
//
// Atomicity: ClickHouse has no transaction across tables, so a Write is
// three INSERTs, ordered so that a failure between them loses nothing when
// the agent retries (it does until we acknowledge): facts first (an extra
// fact is harmless), then events, then event_keys (a missing key only means
// the retry writes the events again, which reads and merges drop). A failed Write may
// therefore leave facts or events behind, never a key without its event.
//
// Distributed: every table here is the local table a `Distributed` table
// can front on a cluster (shard events, event_keys, facts and hosts by
// cityHash64(host_id), triage by cityHash64(alert_id), so that every row of
// a key lives on one shard and the dedup, argMax and uniqExact stay exact). No
// query relies on anything else: no JOIN, no subquery over another table,
// every sort and dedup key explicit, no ALTER ... UPDATE, no DateTime64 or
// LowCardinality, no window functions. On a cluster: create these tables
// ON CLUSTER in a local database, Distributed tables of the same names and
// columns in the store's database, and schema_version's row; Open then finds
// them and creates nothing. Set insert_distributed_sync=1 for the
// collector's user so an INSERT returns after the shards have it.
//
// Threads: every method may be called from any thread. Writes serialize on
// write_mu_, queued hosts on hosts_mu_ (Hosts waits for a flush of them,
// never for a Write); everything else runs in parallel, each call on its own
// pooled HTTP connection.
//
// Opening and writes are in clickhouse_store.cc, event and host queries in
// clickhouse_store_query.cc, triage and prevalence in clickhouse_fleet.cc.
#ifndef SOCKWATCH_COLLECTOR_CLICKHOUSE_STORE_H_
#define SOCKWATCH_COLLECTOR_CLICKHOUSE_STORE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "collector/clickhouse_client.h"
#include "collector/store.h"

namespace sockwatch {

// Schema version this binary writes; a database with a newer one is refused.
inline constexpr int64_t kClickHouseStoreSchemaVersion = 1;

struct ClickHouseStoreOptions {
  // clickhouse://[USER[:PASSWORD]@]HOST[:PORT]/DB; the database is created
  // if missing.
  std::string url;
  clickhouse::ClientOptions client;
};

class ClickHouseStore final : public Store {
 public:
  // Connects, creates the database and tables if missing, refuses a newer
  // schema or a database that holds other tables.
  static absl::StatusOr<std::unique_ptr<ClickHouseStore>> Open(
      const ClickHouseStoreOptions& options);
  // Stores the queued hosts (an error is lost: agents say Hello again).
  ~ClickHouseStore() override;

  absl::StatusOr<WriteResult> Write(absl::Span<const v1::Envelope* const> envelopes) override;
  absl::Status UpsertHost(const v1::Hello& hello, absl::Time now) override;
  // Time bounds are half-open: since <= time < until. limit 0: no limit.
  absl::StatusOr<std::vector<v1::Envelope>> Events(const EventQuery& q) override;
  absl::StatusOr<uint64_t> CountEvents(const EventQuery& q) override;
  absl::StatusOr<std::vector<HostRecord>> Hosts() override;
  absl::StatusOr<uint64_t> CountHosts() override;
  absl::Status AddTriage(const TriageRecord& record) override;
  // How many Writes asked event_keys which of their keys are stored (the
  // others were wholly above their streams' marks): for tests and benchmarks.
  uint64_t key_lookups() const { return key_lookups_.load(std::memory_order_relaxed); }
  absl::StatusOr<std::vector<TriageRecord>> Triage(
      absl::Span<const std::string> alert_ids) override;
  absl::StatusOr<uint64_t> CountFactHosts(const PrevalenceQuery& q) override;
  absl::StatusOr<std::vector<std::string>> FactHosts(const PrevalenceQuery& q,
                                                     size_t limit) override;
  absl::StatusOr<std::vector<ImageCount>> RarestImages(const PrevalenceQuery& q,
                                                       size_t limit) override;
  absl::StatusOr<std::vector<PairCount>> RarestPairs(const PrevalenceQuery& q,
                                                     size_t limit) override;

 private:
  explicit ClickHouseStore(clickhouse::Endpoint endpoint, clickhouse::ClientOptions options);
  absl::Status Migrate();
  // `db`.name, for SQL.
  std::string Table(absl::string_view name) const;
  // "store: clickhouse HOST:PORT/DB: what", for errors that are ours.
  std::string Where(absl::string_view what) const;
  // Increasing stamps (wall clock ns, bumped past the last): the order of
  // triage steps and host refreshes taken by this process.
  uint64_t NextStamp();
  // Sets skip[i] for each envelope whose key event_keys holds, or that
  // repeats the key of an earlier one.
  // Streams wholly above their marks are not asked about.
  absl::Status FindStored(absl::Span<const v1::Envelope* const> envelopes, std::vector<bool>& skip)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Stores the hosts UpsertHost queued; they stay queued on error.
  absl::Status FlushHostsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(hosts_mu_);
  // Calls sink with each event matching q, in q's order, after q.offset,
  // at most q.limit (0: all); sink returns false to stop.
  absl::Status ScanEvents(const EventQuery& q, absl::FunctionRef<bool(v1::Envelope&&)> sink);
  // The same for a q without decoded filters and with a limit: appends the
  // page to out.
  absl::Status PageEvents(const EventQuery& q, std::vector<v1::Envelope>& out);
  // The envelope of a (host_id, agent_instance, seq, envelope) row;
  // DataLoss naming the row if it does not parse.
  absl::StatusOr<v1::Envelope> ParseEvent(absl::Span<const absl::string_view> row) const;
  // Distinct hosts with facts matching q, sorted, at most limit (0: all).
  absl::StatusOr<std::vector<std::string>> FactHostsUpTo(const PrevalenceQuery& q, size_t limit);

  clickhouse::Client client_;
  std::atomic<uint64_t> last_stamp_{0};
  absl::Mutex write_mu_;
  // Reused across Writes: no allocation per row in steady state.
  std::string events_buf_ ABSL_GUARDED_BY(write_mu_);
  std::string keys_buf_ ABSL_GUARDED_BY(write_mu_);
  std::string facts_buf_ ABSL_GUARDED_BY(write_mu_);
  // Per host: the agent instance whose events this process stored last and
  // the highest seq among them, since that stream's last Hello here. One
  // entry a host (not a stream): bounded by the fleet, not by restarts.
  struct StoredMark {
    std::string instance;
    uint64_t seq = 0;
  };
  absl::flat_hash_map<std::string, StoredMark> stored_marks_ ABSL_GUARDED_BY(write_mu_);
  std::atomic<uint64_t> key_lookups_{0};
  // Hosts waiting for FlushHostsLocked, by host id: the last Hello, when it
  // came, its stamp, and when the host was first seen while queued.
  struct PendingHost {
    v1::Hello hello;
    int64_t first_ns = 0;
    int64_t last_ns = 0;
    uint64_t version = 0;
  };
  absl::Mutex hosts_mu_ ABSL_ACQUIRED_AFTER(write_mu_);
  absl::flat_hash_map<std::string, PendingHost> pending_hosts_ ABSL_GUARDED_BY(hosts_mu_);
  // ", name = value" settings of new tables (fsync where the server has it).
  std::string table_settings_;
};

}  // namespace sockwatch

#endif  // SOCKWATCH_COLLECTOR_CLICKHOUSE_STORE_H_
