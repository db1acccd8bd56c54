// Local history: every network event and alert the agent emits is kept in a
// SQLite file on the host, so an incident responder can ask "who talked to
// 10.1.2.3 last night" even when the host is cut off from the collector.
//
// The serialized v1::Envelope is the source of truth; a few of its fields are
// copied into indexed columns only so that queries run in SQL. The agent is
// the one writer; `sockwatch-agent history` opens the same file read-only
// while the agent keeps writing (WAL mode).
#ifndef SOCKWATCH_AGENT_HISTORY_H_
#define SOCKWATCH_AGENT_HISTORY_H_

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "agent/sqlite_util.h"
#include "sockwatch/v1/event.pb.h"

namespace sockwatch {

// Version of the on-disk layout this build writes. Open() upgrades older
// files and refuses newer ones (a downgraded agent must not mangle them).
inline constexpr int kHistorySchemaVersion = 1;

struct HistoryOptions {
  std::string path;  // e.g. /var/lib/sockwatch/history.db
  // Retention bounds applied by Enforce(); both come from the agent's config.
  absl::Duration max_age = absl::Hours(24 * 7);
  uint64_t max_bytes = 512ull << 20;
  // The CLI opens read-only: it never creates, upgrades or trims the file.
  bool read_only = false;
  // How long a statement waits for a lock held by the other process.
  absl::Duration busy_timeout = absl::Seconds(5);
};

struct HistoryQuery {
  absl::Time since = absl::InfinitePast();    // inclusive
  absl::Time until = absl::InfiniteFuture();  // exclusive
  std::optional<std::string> exe;             // exact, or a glob where '*' is the only wildcard
  std::optional<uint32_t> pid;
  std::optional<std::string> remote_cidr;  // "10.0.0.0/8", "fd00::/8", or a bare address
  std::optional<uint32_t> port;            // matches the remote or the local port
  bool alerts_only = false;
  size_t limit = 1000;  // 0 means no limit
};

struct RetentionResult {
  uint64_t removed_by_age = 0;
  uint64_t removed_by_size = 0;
  uint64_t bytes_before = 0;  // live bytes (pages in use) before and after
  uint64_t bytes_after = 0;
};

// History rows waiting for HistoryStore::Append: each envelope's columns
// and its serialized bytes, packed into one buffer when it is added, so the
// caller keeps no copy of the envelope (a deep copy per event, and its
// destruction, cost more than the insert).
class HistoryBatch {
 public:
  // Adds env if it carries `network` or `alert` (history material; false
  // for any other kind). InternalError if env cannot be serialized.
  absl::StatusOr<bool> Add(const v1::Envelope& env);
  size_t size() const { return rows_.size(); }
  bool empty() const { return rows_.empty(); }
  // Keeps the buffers' capacity.
  void clear() {
    rows_.clear();
    buf_.clear();
  }

 private:
  friend class HistoryStore;
  struct Slice {  // of buf_; len < 0: NULL
    uint32_t off = 0;
    int32_t len = -1;
  };
  struct Row {
    int64_t time_ns;
    const char* kind;
    int64_t pid, remote_port, local_port, protocol, direction;
    Slice exe, ip, rule, blob;
  };
  Slice Put(absl::string_view bytes);
  absl::string_view At(Slice s) const { return absl::string_view(buf_).substr(s.off, s.len); }
  std::vector<Row> rows_;
  std::string buf_;
};

// Thread-safe: one connection, calls serialized by a mutex (the agent may
// append from its event loop and enforce retention from a timer).
class HistoryStore {
 public:
  static absl::StatusOr<std::unique_ptr<HistoryStore>> Open(const HistoryOptions& options);

  HistoryStore(const HistoryStore&) = delete;
  HistoryStore& operator=(const HistoryStore&) = delete;
  ~HistoryStore();

  // Stores the envelopes that carry `network` or `alert` (others are skipped)
  // in one transaction: either the whole batch is stored or none of it.
  absl::Status Append(absl::Span<const v1::Envelope> batch);
  // The same for rows gathered beforehand (the agent's event loop).
  absl::Status Append(const HistoryBatch& batch);

  // Deletes rows older than now - max_age, then the oldest rows until the
  // pages in use fit in max_bytes, and gives the freed pages back to the file
  // system. The counts are returned so the agent can report what it dropped.
  absl::StatusOr<RetentionResult> Enforce(absl::Time now);

  // Newest first. InvalidArgument for a malformed CIDR.
  absl::StatusOr<std::vector<v1::Envelope>> Search(const HistoryQuery& query);

  // Rows removed by Enforce() since this store was opened.
  uint64_t evicted_total() const;
  // Rows in the store (for status reporting and tests).
  absl::StatusOr<uint64_t> Count();

  const HistoryOptions& options() const { return options_; }

 private:
  HistoryStore(HistoryOptions options, SqliteDb db);
  absl::Status Prepare();
  absl::StatusOr<uint64_t> LiveBytesLocked();
  absl::Status EnforceLocked(absl::Time now, RetentionResult& result);

  const HistoryOptions options_;
  SqliteDb db_;
  SqliteStmt insert_;
  mutable std::mutex mu_;
  uint64_t evicted_total_ = 0;
};

// Inclusive range of 16-byte address keys (IPv4 as ::ffff:a.b.c.d), so a
// CIDR filter, IPv4 or IPv6, is one `remote_ip BETWEEN lo AND hi`.
struct IpKeyRange {
  std::string lo;
  std::string hi;
};
// "10.0.0.0/8", "2001:db8::/32" or a bare address; host bits are ignored.
absl::StatusOr<IpKeyRange> ParseCidrRange(absl::string_view cidr);
// The 16-byte key of an address in text form; nullopt when it is not one.
std::optional<std::string> IpKey(absl::string_view ip);

// `sockwatch-agent history ...`; `args` excludes the program name and the
// word "history". Returns the process exit code: 0 (also when nothing
// matched), 1 when the store cannot be opened or read, 2 on bad usage.
int HistoryMain(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_HISTORY_H_
