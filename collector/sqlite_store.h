// The SQLite backend of the collector's Store: one file, for one machine.
//
// Layout (schema version 1, see kMigrations in sqlite_store.cc):
//   hosts    one row per host_id: the last Hello, its hostname, kernel and
//            agent version as columns, first and last seen.
//   streams  interns (host_id, agent_instance) to a small integer, so events
//            do not repeat two long strings per row.
//   events   keyed by (stream, seq) -- the exactly-once key -- with the time,
//            the kind, columns copied out for queries (pid, exe, sha256,
//            remote ip/port, protocol, direction, rule, container id) and the
//            serialized Envelope, which is what queries return.
//   rare_events  (kind, stream, seq, time) of the alert, loss, coverage and
//            learning events, so asking for those does not scan the rest.
//   triage   (version 2) every triage step of an alert, append-only.
//   facts    (version 2) the distinct network facts of each host (FactOf in
//            store.h) with first and last times: what prevalence counts.
//
// Threads: every method may be called from any thread. Two connections,
// each behind its own mutex: the writer serves Write and UpsertHost (the
// collector calls them from one thread), the reader Events, CountEvents and
// Hosts. WAL lets the reader see the last commit while the writer appends,
// so a slow query never delays the commit an agent is waiting for.
//
// Opening and writes are in sqlite_store.cc, reads in sqlite_store_query.cc,
// triage and prevalence in sqlite_store_fleet.cc.
#ifndef SOCKWATCH_COLLECTOR_SQLITE_STORE_H_
#define SOCKWATCH_COLLECTOR_SQLITE_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/sqlite_util.h"
#include "collector/store.h"

namespace sockwatch {

// Schema version this binary writes; a file with a newer one is refused.
inline constexpr int64_t kSqliteStoreSchemaVersion = 2;

struct SqliteStoreOptions {
  // File path; created if missing, its directory must exist.
  std::string path;
  // How long a statement waits for a lock held by another process (for
  // example the sqlite3 CLI) before failing with Unavailable.
  absl::Duration busy_timeout = absl::Seconds(5);
};

class SqliteStore final : public Store {
 public:
  // Opens (creating or upgrading the schema of) the file at options.path.
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(const SqliteStoreOptions& options);

  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  absl::StatusOr<WriteResult> Write(absl::Span<const v1::Envelope* const> envelopes) override;
  absl::Status UpsertHost(const v1::Hello& hello, absl::Time now) override;
  // One transaction (one fsync) for them all.
  absl::Status UpsertHosts(absl::Span<const v1::Hello* const> hellos, absl::Time now) override;
  // Time bounds are half-open: since <= time < until. limit 0: no limit.
  absl::StatusOr<std::vector<v1::Envelope>> Events(const EventQuery& q) override;
  absl::StatusOr<uint64_t> CountEvents(const EventQuery& q) override;
  absl::StatusOr<std::vector<HostRecord>> Hosts() override;
  absl::StatusOr<uint64_t> CountHosts() override;
  absl::Status AddTriage(const TriageRecord& record) override;
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
  SqliteStore(SqliteStoreOptions options, SqliteDb writer, SqliteDb reader);
  absl::Status PrepareWriter();
  // The stream id of (host_id, agent_instance), creating the row if needed.
  // Ids created inside the current transaction go to pending_streams_ until
  // it commits, so a rollback cannot leave a dangling id in the cache.
  absl::StatusOr<int64_t> StreamIdLocked(const v1::Envelope& env)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // One envelope on its way into the events table.
  struct Row {
    const v1::Envelope* env = nullptr;
    int64_t stream = 0;
    std::string blob;  // serialized envelope; stored from blob[skip]
    size_t skip = 0;   // leading key fields, which the key columns hold
  };
  static constexpr size_t kChunkRows = 32;

  absl::Status PrepareRow(const v1::Envelope& env, Row& row)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Binds row to the kEventColumns parameters of st from number first on.
  static void BindRow(sqlite3_stmt* st, int first, const Row& row);
  // Whether the row was new.
  absl::StatusOr<bool> InsertOne(const Row& row) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // One host's upsert, inside UpsertHosts' transaction.
  absl::Status UpsertHostLocked(const v1::Hello& hello, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  absl::Status EventError(int rc, const Row& first, const Row& last)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  absl::Status WriteLocked(absl::Span<const v1::Envelope* const> envelopes, WriteResult& result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Folds the envelopes' facts and upserts each distinct one (in the caller's
  // transaction).
  absl::Status WriteFactsLocked(absl::Span<const v1::Envelope* const> envelopes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Distinct hosts with facts matching q, sorted.
  absl::StatusOr<std::vector<std::string>> FactHostsLocked(const PrevalenceQuery& q)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(read_mu_);

  const SqliteStoreOptions options_;

  absl::Mutex write_mu_;
  // Declared before the statements: members are destroyed in reverse order,
  // and every statement must be finalized before its connection closes.
  SqliteDb writer_ ABSL_GUARDED_BY(write_mu_);
  SqliteStmt insert_event_ ABSL_GUARDED_BY(write_mu_);
  SqliteStmt insert_chunk_ ABSL_GUARDED_BY(write_mu_);  // kChunkRows rows
  SqliteStmt insert_rare_ ABSL_GUARDED_BY(write_mu_);
  SqliteStmt insert_stream_ ABSL_GUARDED_BY(write_mu_);
  SqliteStmt select_stream_ ABSL_GUARDED_BY(write_mu_);
  SqliteStmt upsert_host_ ABSL_GUARDED_BY(write_mu_);
  SqliteStmt upsert_fact_ ABSL_GUARDED_BY(write_mu_);
  SqliteStmt insert_triage_ ABSL_GUARDED_BY(write_mu_);
  // Key: host_id's length (4 bytes), host_id, agent_instance -- unambiguous
  // whatever bytes the ids hold.
  std::unordered_map<std::string, int64_t> streams_ ABSL_GUARDED_BY(write_mu_);
  std::vector<std::pair<std::string, int64_t>> pending_streams_ ABSL_GUARDED_BY(write_mu_);
  // Reused across calls: no allocation per envelope in steady state.
  std::string key_buf_ ABSL_GUARDED_BY(write_mu_);
  Row chunk_[kChunkRows] ABSL_GUARDED_BY(write_mu_);

  absl::Mutex read_mu_;
  SqliteDb reader_ ABSL_GUARDED_BY(read_mu_);
};

}  // namespace sockwatch

#endif  // SOCKWATCH_COLLECTOR_SQLITE_STORE_H_
