// Reviewed exceptions (the allowlist) of the agent's detector.
//
// New legitimate services must not create persistent noise, yet suspicious
// behaviour must not quietly become normal. So every exception names an owner,
// a reason and an expiry; a file with any mistake in it is refused as a whole
// (a typo must neither widen nor narrow a match); and usage is tracked so that
// stale, expired and overly broad entries surface in `exceptions review`.
//
// File format (YAML), e.g. /etc/sockwatch/exceptions.yaml:
//
//   exceptions:
//     - id: backup-to-s3          # optional; default "auto-" + hash of `match`
//       owner: alice@example.com  # required
//       reason: nightly backup    # required
//       expires: 2027-03-01       # required: YYYY-MM-DD (00:00 UTC that day:
//                                 # on that date it no longer matches) or RFC 3339
//       match:                    # at least one field; all given must match
//         exe: /usr/local/bin/backup*   # glob, see below
//         sha256: 3a7b...               # 64 hex digits, case-insensitive
//         argv: '--target s3://.*'      # RE2, searched in argv joined by ' '
//         parent_exe: /usr/sbin/cron    # glob
//         container: 0123456789ab       # container id or a prefix of >= 12 hex
//         direction: outbound           # outbound | inbound
//         protocol: tcp                 # tcp | udp
//         port: 443                     # 443, [80, 443], "8000-8100", [22, "8000-8100"]
//         remote: 10.0.0.0/8            # CIDR (v4 or v6) or a list; a bare address is /32 or /128
//         rule: new_behavior            # first_network_use | new_behavior |
//                                       # new_listener | suspicious_image_network
//                                       # (no rule: every rule but suspicious_image_network,
//                                       # which only an entry naming it can silence)
//
// Globs are fnmatch(3) with FNM_PATHNAME | FNM_PERIOD, i.e. shell semantics:
// `*` and `?` do not cross '/' and do not match a leading '.' of a path
// component. An exception naming /opt/app/* therefore does not cover
// /opt/app/uploads/x or /opt/app/.cache/x: a writable or hidden subdirectory
// must be named explicitly. `**` is not special (it acts like `*`).
//
// A field given in `match` but unknown for the event (empty exe, no sha256,
// not in a container, no remote address as for a listener, empty argv) does
// not match: unknowns fail towards an alert, never towards silence.
// Addresses match only CIDRs of their own family (no v4-mapped folding).
#ifndef SOCKWATCH_AGENT_EXCEPTIONS_H_
#define SOCKWATCH_AGENT_EXCEPTIONS_H_

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "agent/sqlite_util.h"
#include "sockwatch/v1/event.pb.h"

namespace re2 {
class RE2;
}  // namespace re2

namespace sockwatch {

// What the detector knows about an event it is about to alert on.
struct ExceptionFacts {
  std::string rule;  // "first_network_use", "new_behavior", ...
  std::string exe, sha256;
  std::vector<std::string> argv;
  std::string parent_exe, container_id;
  v1::Direction direction = v1::DIRECTION_UNSPECIFIED;
  v1::Protocol protocol = v1::PROTOCOL_UNSPECIFIED;
  uint32_t port = 0;  // remote port for outbound, local port for inbound/listen
  std::string remote_ip;
};

struct PortRange {
  uint32_t lo = 0, hi = 0;  // inclusive, 1..65535
};

struct Cidr {
  int family = 0;  // AF_INET or AF_INET6
  std::array<uint8_t, 16> addr{};
  int prefix_len = 0;
  std::string text;  // canonical "a.b.c.d/n" or "x::/n"
};

// The `match` block after validation. Empty strings, empty lists and the
// UNSPECIFIED enums mean "not given" (the parser refuses empty values).
struct ExceptionMatch {
  std::string rule;
  std::string exe;         // glob
  std::string sha256;      // lower-case hex
  std::string argv;        // RE2 source; compiled in argv_re
  std::string parent_exe;  // glob
  std::string container;   // lower-case hex prefix
  v1::Direction direction = v1::DIRECTION_UNSPECIFIED;
  v1::Protocol protocol = v1::PROTOCOL_UNSPECIFIED;
  std::vector<PortRange> ports;
  std::vector<Cidr> remotes;

  // Precomputed for the hot path. Shared so entries stay copyable; RE2 is
  // safe for concurrent const use.
  std::shared_ptr<const re2::RE2> argv_re;
  std::string exe_prefix, parent_exe_prefix;  // literal text before the first wildcard
};

struct ExceptionEntry {
  std::string id;
  bool id_generated = false;  // id is the hash of `match`, not written in the file
  std::string owner;
  std::string reason;
  absl::Time expires;
  int line = 0;  // 1-based line of the entry in the file
  ExceptionMatch match;

  bool Expired(absl::Time now) const { return now >= expires; }
};

// An immutable, validated exceptions file. Reloading (SIGHUP) means calling
// Load again and replacing the current set only when it succeeded:
//
//   absl::StatusOr<ExceptionSet> next = ExceptionSet::Load(path);
//   if (next.ok()) current = *std::move(next); else log(next.status());
class ExceptionSet {
 public:
  ExceptionSet() = default;  // empty: matches nothing

  // `filename` only names the source in error messages ("FILE:LINE: why").
  static absl::StatusOr<ExceptionSet> Parse(absl::string_view yaml, absl::string_view filename);
  static absl::StatusOr<ExceptionSet> Load(const std::string& path);

  // The first (in file order) unexpired entry whose every given field
  // matches, or nullptr. The pointer dies with the set (also when a reload
  // assigns over it): keep the id, not the pointer. Safe to call from many
  // threads at once.
  const ExceptionEntry* Match(const ExceptionFacts& facts, absl::Time now) const;
  // Entries past their expiry.
  std::vector<const ExceptionEntry*> Expired(absl::Time now) const;
  const ExceptionEntry* Find(absl::string_view id) const;

  const std::vector<ExceptionEntry>& entries() const { return entries_; }
  size_t size() const { return entries_.size(); }
  const std::string& filename() const { return filename_; }

 private:
  std::string filename_;
  std::vector<ExceptionEntry> entries_;
};

// How often each exception matched, persisted in <state_dir>/exceptions.db
// (SQLite, WAL) so that review can tell stale entries from busy ones across
// agent restarts. Matches are counted in memory (the hot path never touches
// the disk) and written by Flush() in one transaction; what was not flushed
// is lost, so call Flush() periodically and at exit. Thread-safe.
class ExceptionUsage {
 public:
  // Not persisted: for review without a state database, and for tests.
  ExceptionUsage();
  ~ExceptionUsage();
  ExceptionUsage(const ExceptionUsage&) = delete;
  ExceptionUsage& operator=(const ExceptionUsage&) = delete;

  // Opens or creates <state_dir>/exceptions.db (the directory must exist) and
  // reads what it holds into memory. read_only opens an existing
  // database only (NotFound when there is none) and never writes: Flush()
  // then fails.
  static absl::StatusOr<std::unique_ptr<ExceptionUsage>> Open(const std::string& state_dir,
                                                              bool read_only = false);

  // Marks every entry of `set` as loaded at `now` unless it was loaded
  // before, so "never matched since loaded N days ago" can be told.
  void RecordLoaded(const ExceptionSet& set, absl::Time now);
  void RecordMatch(absl::string_view entry_id, absl::Time when);
  // Writes what was recorded since the last Flush in one transaction. On
  // failure the records are kept for the next attempt.
  absl::Status Flush();

  // Persisted and recorded-but-unflushed usage together.
  std::optional<absl::Time> FirstLoaded(absl::string_view entry_id) const;
  std::optional<absl::Time> LastMatched(absl::string_view entry_id) const;
  uint64_t MatchCount(absl::string_view entry_id) const;

 private:
  struct Usage {
    std::optional<absl::Time> first_loaded;
    std::optional<absl::Time> last_matched;
    uint64_t count = 0;
  };

  static void Merge(Usage& into, const Usage& from);
  absl::Status LoadAll();
  absl::Status WritePending(const absl::flat_hash_map<std::string, Usage>& pending);

  mutable std::mutex mu_;  // guards totals_ and pending_
  absl::flat_hash_map<std::string, Usage> totals_;
  // Not yet flushed: count is an increment, first_loaded always set.
  absl::flat_hash_map<std::string, Usage> pending_;
  std::mutex flush_mu_;  // one writer transaction at a time
  SqliteDb db_;          // null: not persisted
  bool read_only_ = false;
};

enum class FindingKind { kExpired, kExpiringSoon, kUnused, kTooBroad };
// "expired", "expiring_soon", "unused", "too_broad".
absl::string_view FindingKindName(FindingKind kind);

struct ReviewFinding {
  FindingKind kind;
  std::string entry_id;
  int line = 0;
  std::string owner;
  std::string reason;
  std::string detail;  // one line, for people; raw (escape before printing)
};

inline constexpr absl::Duration kExpiringSoon = absl::Hours(14 * 24);
inline constexpr absl::Duration kMaxExpiry = absl::Hours(365 * 24);

// Findings for every entry, in file order. `unused`: no match within
// `unused_for` (from first load when never matched; entries the usage store
// has never seen are not judged).
std::vector<ReviewFinding> Review(const ExceptionSet& set, const ExceptionUsage& usage,
                                  absl::Time now, absl::Duration unused_for);

// Review(), ExceptionUsage and the CLI live in cli_exceptions.cc.
// `sockwatch-agent exceptions review|check ...`; args exclude the program name
// and "exceptions". Exit codes: 0 clean, 1 bad file or state, 2 usage, 3 findings.
int ExceptionsMain(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace sockwatch

#endif  // SOCKWATCH_AGENT_EXCEPTIONS_H_
