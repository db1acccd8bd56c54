// `sockwatch-agent history`: reads the agent's local store, so a responder
// can answer "who talked to X" on a host that is cut off from the collector.
#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/time/time.h"
#include "agent/history.h"
#include "agent/output.h"
#include "agent/text.h"

namespace sockwatch {
namespace {

constexpr char kUsage[] =
    "Usage: sockwatch-agent history [flags]\n"
    "Network events and alerts this host recorded, newest first, read from the\n"
    "agent's local store (works without the collector).\n"
    "\n"
    "  --state-dir=DIR  agent state directory (default /var/lib/sockwatch)\n"
    "  --since=WHEN     only events at or after WHEN\n"
    "  --until=WHEN     only events before WHEN\n"
    "                   WHEN is a duration ago (30m, 2h, 7d, 1d12h) or an RFC 3339\n"
    "                   time (2024-05-01T13:00:00Z, 2024-05-01T15:00:00+02:00) or a\n"
    "                   UTC date (2024-05-01)\n"
    "  --exe=PATH       executable path, exact or a glob with '*' (/usr/bin/python*)\n"
    "  --pid=N          process id\n"
    "  --remote=CIDR    remote address or range (10.0.0.0/8, 2001:db8::/32, 1.2.3.4)\n"
    "  --port=N         remote or local port\n"
    "  --alerts         alerts only\n"
    "  --limit=N        at most N events (default 1000, 0 for all)\n"
    "  --json           one JSON envelope per line instead of a table\n"
    "  --help           this text\n"
    "\n"
    "Exit status: 0 (also when nothing matched), 1 when the store cannot be read,\n"
    "2 on bad usage.\n";

constexpr size_t kMaxExeWidth = 40;
constexpr size_t kMaxArgvWidth = 60;

struct Args {
  std::string state_dir = "/var/lib/sockwatch";
  HistoryQuery query;
  bool json = false;
  bool help = false;
};

template <typename T>
absl::StatusOr<T> ParseNumber(absl::string_view flag, absl::string_view s, uint64_t max) {
  uint64_t v = 0;
  if (s.empty() || !std::all_of(s.begin(), s.end(), absl::ascii_isdigit) ||
      !absl::SimpleAtoi(s, &v) || v > max)
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "=", s, ": want a number from 0 to ", max));
  return static_cast<T>(v);
}

absl::StatusOr<Args> ParseArgs(const std::vector<std::string>& argv, absl::Time now) {
  Args a;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& arg = argv[i];
    if (arg == "--help" || arg == "-h" || arg == "-help") {
      a.help = true;
      return a;
    }
    if (!absl::StartsWith(arg, "--") || arg.size() == 2)
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    const size_t eq = arg.find('=');
    // --state_dir works too, as with the agent's own (absl) flags.
    const std::string name = absl::StrReplaceAll(arg.substr(2, eq - 2), {{"_", "-"}});
    std::optional<std::string> value;
    if (eq != std::string::npos) value = arg.substr(eq + 1);

    if (name == "alerts" || name == "json") {
      bool on = true;
      if (value && !absl::SimpleAtob(*value, &on))
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, "=", *value, ": want true or false"));
      (name == "alerts" ? a.query.alerts_only : a.json) = on;
      continue;
    }
    static constexpr std::array<absl::string_view, 8> kValued = {
        "state-dir", "since", "until", "exe", "pid", "remote", "port", "limit"};
    if (std::find(kValued.begin(), kValued.end(), name) == kValued.end())
      return absl::InvalidArgumentError(absl::StrCat("unknown flag '--", name, "'"));
    if (!value) {
      if (i + 1 >= argv.size())
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      value = argv[++i];
    }
    const std::string& v = *value;
    if (name == "state-dir") {
      if (v.empty()) return absl::InvalidArgumentError("--state-dir is empty");
      a.state_dir = v;
    } else if (name == "since" || name == "until") {
      absl::StatusOr<absl::Time> t = ParseWhen(name, v, now);
      if (!t.ok()) return t.status();
      (name == "since" ? a.query.since : a.query.until) = *t;
    } else if (name == "exe") {
      if (v.empty()) return absl::InvalidArgumentError("--exe is empty");
      a.query.exe = v;
    } else if (name == "pid") {
      absl::StatusOr<uint32_t> pid = ParseNumber<uint32_t>(name, v, UINT32_MAX);
      if (!pid.ok()) return pid.status();
      a.query.pid = *pid;
    } else if (name == "remote") {
      if (absl::StatusOr<IpKeyRange> r = ParseCidrRange(v); !r.ok()) return r.status();
      a.query.remote_cidr = v;
    } else if (name == "port") {
      absl::StatusOr<uint32_t> port = ParseNumber<uint32_t>(name, v, 65535);
      if (!port.ok()) return port.status();
      a.query.port = *port;
    } else if (name == "limit") {
      absl::StatusOr<size_t> limit = ParseNumber<size_t>(name, v, UINT32_MAX);
      if (!limit.ok()) return limit.status();
      a.query.limit = *limit;
    }
  }
  if (a.query.since > a.query.until) return absl::InvalidArgumentError("--since is after --until");
  return a;
}

// Display width in code points; input is escaped, so it is valid UTF-8.
size_t Width(absl::string_view s) {
  return std::count_if(s.begin(), s.end(),
                       [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
}

// Shortens to `max` code points, never splitting a UTF-8 sequence. Paths keep
// their tail (the file name tells most), command lines their head.
std::string Shorten(const std::string& s, size_t max, bool keep_tail) {
  std::vector<size_t> starts;  // byte offset of each code point
  for (size_t i = 0; i < s.size(); ++i)
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) starts.push_back(i);
  if (starts.size() <= max) return s;
  const size_t keep = max - 1;  // room for the ellipsis
  if (keep_tail) return absl::StrCat("…", s.substr(starts[starts.size() - keep]));
  return absl::StrCat(s.substr(0, starts[keep]), "…");
}

std::string Endpoint(const std::string& ip, uint32_t port) {
  if (ip.empty()) return port ? absl::StrCat("*:", port) : "-";
  const std::string e = EscapeForTerminal(ip);
  return ip.find(':') != std::string::npos ? absl::StrCat("[", e, "]:", port)
                                           : absl::StrCat(e, ":", port);
}

std::string Lower(absl::string_view enum_name, absl::string_view prefix) {
  absl::string_view s = enum_name;
  if (absl::StartsWith(s, prefix)) s.remove_prefix(prefix.size());
  return absl::AsciiStrToLower(s);
}

std::vector<std::string> Row(const v1::Envelope& env) {
  const bool alert = env.has_alert();
  const v1::NetworkEvent& n = alert ? env.alert().network() : env.network();
  const v1::Process& p = alert && env.alert().has_process() ? env.alert().process() : n.process();
  std::vector<std::string> args;
  for (const std::string& arg : p.argv()) args.push_back(EscapeForTerminal(arg));
  std::string argv = args.empty() ? "-" : absl::StrJoin(args, " ");
  if (p.argv_truncated()) argv += " …";

  std::string proto = "-";
  if (n.protocol() != v1::PROTOCOL_UNSPECIFIED)
    proto = absl::StrCat(Lower(v1::Protocol_Name(n.protocol()), "PROTOCOL_"),
                         n.ip_version() ? absl::StrCat(n.ip_version()) : "");
  std::string detail;
  if (alert) {
    const v1::Alert& a = env.alert();
    detail = absl::StrCat(EscapeForTerminal(a.rule()), " [",
                          Lower(v1::Severity_Name(a.severity()), "SEVERITY_"), "]",
                          a.occurrences() > 1 ? absl::StrCat(" x", a.occurrences()) : "", ": ",
                          EscapeForTerminal(a.summary()));
  } else {
    detail = Lower(v1::Direction_Name(n.direction()), "DIRECTION_");
    if (n.outcome() != v1::OUTCOME_UNSPECIFIED)
      absl::StrAppend(&detail, " ", Lower(v1::Outcome_Name(n.outcome()), "OUTCOME_"));
  }
  const absl::Time t =
      absl::FromUnixSeconds(env.time().seconds()) + absl::Nanoseconds(env.time().nanos());
  return {
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", t, absl::UTCTimeZone()),
      absl::StrCat(p.pid()),
      Shorten(EscapeForTerminal(p.exe().empty() ? "?" : p.exe()), kMaxExeWidth, true),
      Shorten(argv, kMaxArgvWidth, false),
      alert ? "alert" : Lower(v1::NetworkKind_Name(n.kind()), "NETWORK_KIND_"),
      proto,
      Endpoint(n.local_ip(), n.local_port()),
      n.remote_ip().empty() && n.remote_port() == 0 ? "-"
                                                    : Endpoint(n.remote_ip(), n.remote_port()),
      detail,
  };
}

void PrintTable(const std::vector<v1::Envelope>& envs, std::ostream& out) {
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"TIME", "PID", "EXE", "ARGV", "KIND", "PROTO", "LOCAL", "REMOTE",
                  "DIRECTION/OUTCOME | RULE: SUMMARY"});
  for (const v1::Envelope& env : envs) rows.push_back(Row(env));
  std::vector<size_t> widths(rows[0].size(), 0);
  for (const auto& r : rows)
    for (size_t c = 0; c < r.size(); ++c) widths[c] = std::max(widths[c], Width(r[c]));
  for (const auto& r : rows) {
    std::string line;
    for (size_t c = 0; c < r.size(); ++c) {
      line += r[c];
      if (c + 1 < r.size()) line.append(widths[c] - Width(r[c]) + 2, ' ');
    }
    out << line << '\n';
  }
}

}  // namespace

int HistoryMain(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  absl::StatusOr<Args> parsed = ParseArgs(args, absl::Now());
  if (!parsed.ok()) {
    err << "sockwatch-agent history: " << EscapeForTerminal(parsed.status().message())
        << "\n(see sockwatch-agent history --help)\n";
    return 2;
  }
  if (parsed->help) {
    out << kUsage;
    return 0;
  }
  HistoryOptions options;
  options.path = absl::StrCat(parsed->state_dir, "/history.db");
  options.read_only = true;
  absl::StatusOr<std::unique_ptr<HistoryStore>> store = HistoryStore::Open(options);
  if (!store.ok()) {
    // Store messages start with "history: " and name the file.
    err << "sockwatch-agent " << EscapeForTerminal(store.status().message()) << "\n"
        << "The agent writes " << EscapeForTerminal(options.path)
        << " while it runs: check --state-dir, that the agent has run on this host, and that "
           "you may read the file (usually root).\n";
    return 1;
  }
  absl::StatusOr<std::vector<v1::Envelope>> envs = (*store)->Search(parsed->query);
  if (!envs.ok()) {
    err << "sockwatch-agent " << EscapeForTerminal(envs.status().message()) << "\n";
    return envs.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  if (envs->empty()) {
    err << "(no matching events)\n";
    return 0;
  }
  if (parsed->json) {
    for (const v1::Envelope& env : *envs) out << EnvelopeToJson(env) << '\n';
  } else {
    PrintTable(*envs, out);
  }
  out.flush();
  return out ? 0 : 1;
}

}  // namespace sockwatch
