// Reviewing exceptions: the usage store the agent writes and review reads,
// the review rules, and `sockwatch-agent exceptions review|check`.
#include <sqlite3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agent/exceptions.h"
#include "agent/text.h"
#include "re2/re2.h"

namespace sockwatch {

namespace {

// ---------------------------------------------------------------------------
// Usage store.

constexpr int kSchemaVersion = 1;

absl::Status DbError(sqlite3* db, absl::string_view what) {
  return absl::InternalError(absl::StrCat("exceptions.db: ", what, ": ", sqlite3_errmsg(db)));
}

absl::Status Exec(sqlite3* db, const char* sql) {
  if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) return DbError(db, sql);
  return absl::OkStatus();
}

absl::StatusOr<SqliteStmt> PrepareOr(sqlite3* db, const char* sql) {
  SqliteStmt s = Prepare(db, sql);
  if (s == nullptr) return DbError(db, sql);
  return s;
}

constexpr char kSchema[] = R"sql(
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version (version)
  SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM schema_version);
CREATE TABLE IF NOT EXISTS exception_usage (
  id TEXT PRIMARY KEY NOT NULL,
  first_loaded_us INTEGER NOT NULL,  -- microseconds since the Unix epoch
  last_matched_us INTEGER,           -- NULL: never matched
  match_count INTEGER NOT NULL DEFAULT 0
);
COMMIT;
)sql";

// Adds deltas rather than overwriting, so a second writer (an agent restarted
// while the old one still flushes) cannot lose counts.
constexpr char kUpsert[] = R"sql(
INSERT INTO exception_usage (id, first_loaded_us, last_matched_us, match_count)
VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (id) DO UPDATE SET
  first_loaded_us = MIN(first_loaded_us, excluded.first_loaded_us),
  last_matched_us = MAX(COALESCE(last_matched_us, excluded.last_matched_us),
                        COALESCE(excluded.last_matched_us, last_matched_us)),
  match_count = match_count + excluded.match_count
)sql";

}  // namespace

void ExceptionUsage::Merge(Usage& into, const Usage& from) {
  if (from.first_loaded && (!into.first_loaded || *from.first_loaded < *into.first_loaded))
    into.first_loaded = from.first_loaded;
  if (from.last_matched && (!into.last_matched || *from.last_matched > *into.last_matched))
    into.last_matched = from.last_matched;
  into.count += from.count;
}

ExceptionUsage::ExceptionUsage() = default;
ExceptionUsage::~ExceptionUsage() = default;

absl::StatusOr<std::unique_ptr<ExceptionUsage>> ExceptionUsage::Open(const std::string& state_dir,
                                                                     bool read_only) {
  const std::string path = state_dir + "/exceptions.db";
  if (read_only && access(path.c_str(), F_OK) != 0)
    return absl::NotFoundError(absl::StrCat(EscapeForTerminal(path), ": no such file"));
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(
      path.c_str(), &raw,
      read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  auto usage = std::make_unique<ExceptionUsage>();
  usage->db_.reset(raw);  // a handle comes back even on failure and must be closed
  usage->read_only_ = read_only;
  sqlite3* db = usage->db_.get();
  if (rc != SQLITE_OK) {
    return absl::UnavailableError(absl::StrCat(EscapeForTerminal(path), ": ",
                                               raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
  }
  sqlite3_busy_timeout(db, 5000);
  if (!read_only) {
    // WAL: the agent's flushes do not block a concurrent `exceptions review`.
    for (const char* sql : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", kSchema}) {
      if (absl::Status st = Exec(db, sql); !st.ok()) {
        Exec(db, "ROLLBACK").IgnoreError();
        return st;
      }
    }
  }
  auto version = PrepareOr(db, "SELECT MAX(version) FROM schema_version");
  if (!version.ok()) return version.status();
  if (sqlite3_step(version->get()) != SQLITE_ROW ||
      sqlite3_column_int(version->get(), 0) != kSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat(EscapeForTerminal(path), ": schema version ",
                                                      sqlite3_column_int(version->get(), 0),
                                                      ", this agent knows ", kSchemaVersion));
  }
  if (absl::Status st = usage->LoadAll(); !st.ok()) return st;
  return usage;
}

absl::Status ExceptionUsage::LoadAll() {
  auto s = PrepareOr(
      db_.get(), "SELECT id, first_loaded_us, last_matched_us, match_count FROM exception_usage");
  if (!s.ok()) return s.status();
  int rc;
  while ((rc = sqlite3_step(s->get())) == SQLITE_ROW) {
    sqlite3_stmt* r = s->get();
    Usage& u = totals_[reinterpret_cast<const char*>(sqlite3_column_text(r, 0))];
    u.first_loaded = absl::FromUnixMicros(sqlite3_column_int64(r, 1));
    if (sqlite3_column_type(r, 2) != SQLITE_NULL)
      u.last_matched = absl::FromUnixMicros(sqlite3_column_int64(r, 2));
    u.count = static_cast<uint64_t>(sqlite3_column_int64(r, 3));
  }
  return rc == SQLITE_DONE ? absl::OkStatus() : DbError(db_.get(), "reading exception_usage");
}

void ExceptionUsage::RecordLoaded(const ExceptionSet& set, absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const ExceptionEntry& e : set.entries()) {
    Usage& t = totals_[e.id];
    if (t.first_loaded) continue;  // keep the first load: that is what "unused" counts from
    t.first_loaded = now;
    Merge(pending_[e.id], Usage{now, std::nullopt, 0});
  }
}

void ExceptionUsage::RecordMatch(absl::string_view entry_id, absl::Time when) {
  std::lock_guard<std::mutex> lock(mu_);
  const Usage one{when, when, 1};  // a match before any load counts as the first sighting
  for (auto* map : {&totals_, &pending_}) {
    auto it = map->find(entry_id);  // no allocation once the id is known
    if (it == map->end()) it = map->emplace(std::string(entry_id), Usage{}).first;
    Merge(it->second, one);
  }
}

absl::Status ExceptionUsage::Flush() {
  std::lock_guard<std::mutex> flush_lock(flush_mu_);
  absl::flat_hash_map<std::string, Usage> batch;
  {
    // Swap the batch out so the hot path never waits for the disk.
    std::lock_guard<std::mutex> lock(mu_);
    batch.swap(pending_);
  }
  if (batch.empty() || db_ == nullptr) return absl::OkStatus();
  absl::Status st = read_only_ ? absl::FailedPreconditionError("exceptions.db opened read-only")
                               : WritePending(batch);
  if (!st.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, b] : batch) Merge(pending_[id], b);
  }
  return st;
}

absl::Status ExceptionUsage::WritePending(const absl::flat_hash_map<std::string, Usage>& pending) {
  sqlite3* db = db_.get();
  if (absl::Status st = Exec(db, "BEGIN IMMEDIATE"); !st.ok()) return st;
  absl::Status st;
  auto s = PrepareOr(db, kUpsert);
  if (!s.ok()) st = s.status();
  for (auto it = pending.begin(); st.ok() && it != pending.end(); ++it) {
    const auto& [id, u] = *it;
    sqlite3_stmt* q = s->get();
    sqlite3_reset(q);
    sqlite3_bind_text(q, 1, id.data(), static_cast<int>(id.size()), SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, absl::ToUnixMicros(*u.first_loaded));
    if (u.last_matched)
      sqlite3_bind_int64(q, 3, absl::ToUnixMicros(*u.last_matched));
    else
      sqlite3_bind_null(q, 3);
    sqlite3_bind_int64(q, 4, static_cast<int64_t>(u.count));
    if (sqlite3_step(q) != SQLITE_DONE) st = DbError(db, "writing exception_usage");
  }
  s = SqliteStmt();  // finalize before COMMIT
  if (st.ok()) st = Exec(db, "COMMIT");
  if (!st.ok()) Exec(db, "ROLLBACK").IgnoreError();
  return st;
}

std::optional<absl::Time> ExceptionUsage::FirstLoaded(absl::string_view id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = totals_.find(id);
  return it == totals_.end() ? std::nullopt : it->second.first_loaded;
}

std::optional<absl::Time> ExceptionUsage::LastMatched(absl::string_view id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = totals_.find(id);
  return it == totals_.end() ? std::nullopt : it->second.last_matched;
}

uint64_t ExceptionUsage::MatchCount(absl::string_view id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = totals_.find(id);
  return it == totals_.end() ? 0 : it->second.count;
}

// ---------------------------------------------------------------------------
// Review.

namespace {

// "*", "/*", "**", "/*/*": a glob of nothing but wildcards names no program.
bool WildcardOnly(const std::string& glob) {
  return !glob.empty() && glob.find_first_not_of("*?/") == std::string::npos;
}

// A regex that finds a match in an empty or a junk command line would find
// one in any (".*", "x*", ".+").
bool TrivialRegex(const RE2& re) {
  return RE2::PartialMatch("", re) || RE2::PartialMatch("\x01", re);
}

std::string When(absl::Time t) {
  const absl::TimeZone utc = absl::UTCTimeZone();
  const absl::CivilSecond cs = absl::ToCivilSecond(t, utc);
  return absl::FormatTime(cs == absl::CivilDay(cs) ? "%Y-%m-%d" : "%Y-%m-%dT%H:%M:%SZ", t, utc);
}

std::string Span(absl::Duration d) {
  const int64_t days = absl::ToInt64Hours(d) / 24;
  if (days >= 1) return absl::StrCat(days, days == 1 ? " day" : " days");
  const int64_t hours = absl::ToInt64Hours(d);
  return absl::StrCat(hours, hours == 1 ? " hour" : " hours");
}

// Why a match is too broad, or "" when it is not.
std::string Broadness(const ExceptionMatch& m) {
  const bool exe_narrows = !m.exe.empty() && !WildcardOnly(m.exe);
  const bool argv_trivial = m.argv_re != nullptr && TrivialRegex(*m.argv_re);
  const bool identity = exe_narrows || !m.sha256.empty() || (m.argv_re && !argv_trivial) ||
                        (!m.parent_exe.empty() && !WildcardOnly(m.parent_exe)) ||
                        !m.container.empty();
  for (const Cidr& c : m.remotes) {
    if (c.prefix_len < (c.family == AF_INET ? 8 : 16) && !exe_narrows && m.sha256.empty()) {
      return absl::StrCat("remote ", c.text,
                          " covers nearly every address and no exe or sha256 "
                          "narrows it");
    }
  }
  if (identity || !m.remotes.empty()) return "";
  if (!m.exe.empty()) {
    return absl::StrCat("exe glob '", m.exe, "' matches every program and nothing else narrows it");
  }
  if (argv_trivial) {
    return absl::StrCat("argv regex '", m.argv,
                        "' matches every command line and nothing else narrows it");
  }
  return "no exe, sha256, argv, parent_exe, container or remote: matches any program";
}

}  // namespace

absl::string_view FindingKindName(FindingKind kind) {
  constexpr absl::string_view kNames[] = {"expired", "expiring_soon", "unused", "too_broad"};
  return kNames[static_cast<int>(kind)];
}

std::vector<ReviewFinding> Review(const ExceptionSet& set, const ExceptionUsage& usage,
                                  absl::Time now, absl::Duration unused_for) {
  std::vector<ReviewFinding> out;
  for (const ExceptionEntry& e : set.entries()) {
    auto add = [&](FindingKind kind, std::string detail) {
      out.push_back({kind, e.id, e.line, e.owner, e.reason, std::move(detail)});
    };
    if (e.Expired(now)) {
      add(FindingKind::kExpired,
          absl::StrCat("expired ", When(e.expires), " (", Span(now - e.expires), " ago)"));
    } else if (e.expires - now <= kExpiringSoon) {
      add(FindingKind::kExpiringSoon,
          absl::StrCat("expires ", When(e.expires), " (in ", Span(e.expires - now), ")"));
    } else if (e.expires - now > kMaxExpiry) {
      add(FindingKind::kTooBroad, absl::StrCat("expires ", When(e.expires), " (in ",
                                               Span(e.expires - now), "): more than a year away"));
    }
    if (std::string why = Broadness(e.match); !why.empty()) add(FindingKind::kTooBroad, why);
    // An expired entry matches nothing anyway; "expired" says all there is.
    if (e.Expired(now)) continue;
    if (auto last = usage.LastMatched(e.id)) {
      if (now - *last >= unused_for) {
        add(FindingKind::kUnused,
            absl::StrCat("no match for ", Span(now - *last), " (last ", When(*last), ", ",
                         usage.MatchCount(e.id), " in all)"));
      }
    } else if (auto first = usage.FirstLoaded(e.id); first && now - *first >= unused_for) {
      add(FindingKind::kUnused,
          absl::StrCat("never matched since loaded ", Span(now - *first), " ago"));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// CLI.

namespace {

constexpr char kUsage[] = R"(Usage:
  sockwatch-agent exceptions check --exceptions=FILE
      Validate FILE: prints "ok: N entries", or the first problem as FILE:LINE: why.
  sockwatch-agent exceptions review --exceptions=FILE [--state-dir=DIR] [--unused-days=N] [--json]
      List the entries that need a decision, as a table:
        expired        past its expiry (it matches nothing any more)
        expiring_soon  expires within 14 days
        unused         no match for N days (default 30), or none since first loaded;
                       read from DIR/exceptions.db (default DIR: /var/lib/sockwatch)
        too_broad      matches (nearly) any program or address, or expires more than
                       a year away
      --json: one JSON object per finding per line instead of the table.
  Flags are given as --flag=value or --flag value.

Exit codes:
  0  check: the file is valid; review: no findings
  1  the exceptions file or the state database could not be read, or is invalid
  2  usage error (unknown command or flag, missing --exceptions)
  3  review: there are findings
)";

struct CliArgs {
  std::string exceptions;
  std::string state_dir = "/var/lib/sockwatch";
  int unused_days = 30;
  bool json = false;
};

// An error text for a usage error, "" when the arguments are fine.
std::string ParseArgs(const std::vector<std::string>& args, bool review, CliArgs& a) {
  std::vector<std::string> seen;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (!absl::StartsWith(arg, "--")) return absl::StrCat("unexpected argument '", arg, "'");
    const size_t eq = arg.find('=');
    const std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    std::optional<std::string> value;
    if (eq != std::string::npos) value = arg.substr(eq + 1);
    const bool known = name == "exceptions" ||
                       (review && (name == "state-dir" || name == "unused-days" || name == "json"));
    if (!known) return absl::StrCat("unknown flag --", name);
    if (std::find(seen.begin(), seen.end(), name) != seen.end())
      return absl::StrCat("--", name, " given twice");
    seen.push_back(name);
    if (name == "json") {
      if (value) return "--json takes no value";
      a.json = true;
      continue;
    }
    if (!value) {
      if (i + 1 >= args.size() || absl::StartsWith(args[i + 1], "--"))
        return absl::StrCat("--", name, " needs a value");
      value = args[++i];
    }
    if (name == "exceptions") {
      a.exceptions = *value;
    } else if (name == "state-dir") {
      a.state_dir = *value;
    } else if (!absl::SimpleAtoi(*value, &a.unused_days) || a.unused_days < 1 ||
               value->find_first_not_of("0123456789") != std::string::npos) {
      return "--unused-days wants a whole number of days, at least 1";
    }
  }
  if (a.exceptions.empty()) return "missing --exceptions=FILE";
  return "";
}

// Display width, counting code points: close enough for aligning columns.
size_t Width(const std::string& s) {
  return std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; });
}

// JSON string; control characters (C0, DEL, C1) are \u-escaped so the output
// is as safe on a terminal as the table.
std::string JsonString(absl::string_view raw) {
  const std::string s = ValidUtf8(raw);
  std::string o = "\"";
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    const auto next = i + 1 < s.size() ? static_cast<unsigned char>(s[i + 1]) : 0;
    if (c == '"' || c == '\\') {
      absl::StrAppend(&o, "\\", std::string(1, static_cast<char>(c)));
    } else if (c < 0x20 || c == 0x7F) {
      absl::StrAppendFormat(&o, "\\u%04x", c);
    } else if (c == 0xC2 && next >= 0x80 && next <= 0x9F) {
      absl::StrAppendFormat(&o, "\\u%04x", next);
      ++i;
    } else {
      o.push_back(static_cast<char>(c));
    }
  }
  return o + "\"";
}

void PrintTable(const std::vector<ReviewFinding>& findings, std::ostream& out) {
  std::vector<std::vector<std::string>> rows = {
      {"LINE", "KIND", "ID", "OWNER", "DETAIL", "REASON"}};
  for (const ReviewFinding& f : findings) {
    rows.push_back({absl::StrCat(f.line), std::string(FindingKindName(f.kind)),
                    EscapeForTerminal(f.entry_id), EscapeForTerminal(f.owner),
                    EscapeForTerminal(f.detail), EscapeForTerminal(f.reason)});
  }
  std::vector<size_t> widths(rows[0].size(), 0);
  for (const auto& row : rows)
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], Width(row[c]));
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size()) line.append(widths[c] - Width(row[c]) + 2, ' ');
    }
    out << line << "\n";
  }
}

void PrintJson(const ExceptionSet& set, const std::vector<ReviewFinding>& findings,
               std::ostream& out) {
  for (const ReviewFinding& f : findings) {
    const ExceptionEntry* e = set.Find(f.entry_id);
    out << "{\"kind\":" << JsonString(FindingKindName(f.kind))
        << ",\"id\":" << JsonString(f.entry_id) << ",\"file\":" << JsonString(set.filename())
        << ",\"line\":" << f.line << ",\"owner\":" << JsonString(f.owner)
        << ",\"reason\":" << JsonString(f.reason) << ",\"expires\":"
        << JsonString(e ? absl::FormatTime(absl::RFC3339_sec, e->expires, absl::UTCTimeZone()) : "")
        << ",\"detail\":" << JsonString(f.detail) << "}\n";
  }
}

}  // namespace

int ExceptionsMain(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--help" || args[i] == "-h" || (i == 0 && args[i] == "help")) {
      out << kUsage;
      return 0;
    }
  }
  auto usage_error = [&](absl::string_view why) {
    err << "sockwatch-agent exceptions: " << EscapeForTerminal(why) << "\n\n" << kUsage;
    return 2;
  };
  if (args.empty()) return usage_error("missing command: review or check");
  const bool review = args[0] == "review";
  if (!review && args[0] != "check")
    return usage_error(absl::StrCat("unknown command '", args[0], "' (want review or check)"));
  CliArgs a;
  if (std::string why = ParseArgs(args, review, a); !why.empty()) return usage_error(why);

  absl::StatusOr<ExceptionSet> set = ExceptionSet::Load(a.exceptions);
  if (!set.ok()) {
    err << "sockwatch-agent exceptions: " << set.status().message() << "\n";
    return 1;
  }
  if (!review) {
    out << "ok: " << set->size() << " entries\n";
    return 0;
  }

  ExceptionUsage no_usage;
  const ExceptionUsage* usage = &no_usage;
  // Read-only: review must not create a database, nor write into the agent's.
  absl::StatusOr<std::unique_ptr<ExceptionUsage>> opened = ExceptionUsage::Open(a.state_dir, true);
  if (opened.ok()) {
    usage = opened->get();
  } else if (absl::IsNotFound(opened.status())) {
    err << "note: no usage data (" << opened.status().message()
        << "): unused entries are not reported\n";
  } else {
    err << "sockwatch-agent exceptions: " << opened.status().message() << "\n";
    return 1;
  }
  const std::vector<ReviewFinding> findings =
      Review(*set, *usage, absl::Now(), absl::Hours(24) * a.unused_days);
  if (a.json) {
    PrintJson(*set, findings, out);
  } else if (findings.empty()) {
    out << "no findings in " << set->size() << " entries\n";
  } else {
    PrintTable(findings, out);
  }
  return findings.empty() ? 0 : 3;
}

}  // namespace sockwatch
