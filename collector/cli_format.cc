#include "collector/cli_format.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "agent/text.h"
#include "collector/cli_table.h"
#include "google/protobuf/util/json_util.h"

namespace sockwatch {
namespace {

using cli_table::Align;
using cli_table::Esc;
using cli_table::Rfc3339;
using cli_table::Row;
using cli_table::Table;
using cli_table::ToTime;
using cli_table::WriteJsonLine;
using cli_table::WriteTable;


std::string EnvelopeTime(const v1::Envelope& e) { return e.has_time() ? Rfc3339(e.time()) : ""; }

std::string Host(const v1::Envelope& e) {
  return Esc(e.hostname().empty() ? e.host_id() : e.hostname());
}

std::string Num(uint64_t n) { return n == 0 ? "" : absl::StrCat(n); }

// An argument that is empty or holds a space (or a quote) is quoted, so the
// joined command line still shows where each argument starts and ends.
std::string Arg(absl::string_view raw) {
  std::string a = Esc(raw);
  if (!a.empty() && a.find_first_of(" \"") == std::string::npos) return a;
  std::string q = "\"";
  for (char c : a) {
    if (c == '"') q += '\\';
    q += c;
  }
  return q + "\"";
}

std::string JoinArgs(const v1::Process& p, int from) {
  std::vector<std::string> args;
  for (int i = from; i < p.argv_size(); ++i) args.push_back(Arg(p.argv(i)));
  return absl::StrJoin(args, " ");
}

const v1::Process* ProcessOf(const v1::Envelope& e) {
  switch (e.event_case()) {
    case v1::Envelope::kExec:
      return &e.exec().process();
    case v1::Envelope::kFork:
      return &e.fork().process();
    case v1::Envelope::kExit:
      return &e.exit().process();
    case v1::Envelope::kNetwork:
      return &e.network().process();
    case v1::Envelope::kAlert:
      return &e.alert().process();
    default:
      return nullptr;
  }
}

const v1::NetworkEvent* NetworkOf(const v1::Envelope& e) {
  if (e.has_network()) return &e.network();
  if (e.has_alert() && e.alert().has_network()) return &e.alert().network();
  return nullptr;
}

// a.b.c.d:port, [v6]:port, *:port when only the port is known.
std::string Endpoint(absl::string_view ip, uint32_t port) {
  if (ip.empty() && port == 0) return "";
  std::string host = ip.empty() ? "*" : Esc(ip);
  if (absl::StrContains(ip, ':')) host = absl::StrCat("[", host, "]");
  return absl::StrCat(host, ":", port);
}

std::string Local(const v1::NetworkEvent* n) {
  return n ? Endpoint(n->local_ip(), n->local_port()) : "";
}
std::string Remote(const v1::NetworkEvent* n) {
  return n ? Endpoint(n->remote_ip(), n->remote_port()) : "";
}

// "tcp4", "udp6"; the version is left off when unknown.
std::string Proto(const v1::NetworkEvent* n) {
  if (n == nullptr) return "";
  std::string p = n->protocol() == v1::PROTOCOL_TCP   ? "tcp"
                  : n->protocol() == v1::PROTOCOL_UDP ? "udp"
                                                      : "";
  if (!p.empty() && (n->ip_version() == 4 || n->ip_version() == 6)) {
    absl::StrAppend(&p, n->ip_version());
  }
  return p;
}

std::string Dir(const v1::NetworkEvent* n) {
  if (n == nullptr || n->direction() == v1::DIRECTION_UNSPECIFIED) return "";
  return n->direction() == v1::DIRECTION_OUTBOUND ? "out" : "in";
}

// The oneof field name in caps ("EXEC"), or the network kind ("CONNECT").
std::string Kind(const v1::Envelope& e) {
  if (e.event_case() == v1::Envelope::EVENT_NOT_SET) return "";
  if (!e.has_network()) {
    return absl::AsciiStrToUpper(e.GetDescriptor()->FindFieldByNumber(e.event_case())->name());
  }
  // Unknown (newer) enum values have no name.
  const std::string name = v1::NetworkKind_Name(e.network().kind());
  return name.empty() ? "NETWORK" : std::string(absl::StripPrefix(name, "NETWORK_KIND_"));
}

std::string Severity(v1::Severity s) {
  if (s == v1::SEVERITY_UNSPECIFIED) return "";
  return absl::AsciiStrToLower(absl::StripPrefix(v1::Severity_Name(s), "SEVERITY_"));
}

std::string NetworkDetail(const v1::NetworkEvent& n) {
  if (n.kind() == v1::NETWORK_KIND_FLOW_END) {
    return absl::StrCat("sent=", n.bytes_sent(), " recv=", n.bytes_received());
  }
  if (n.kind() == v1::NETWORK_KIND_EXISTING) return Esc(n.socket_state());
  switch (n.outcome()) {
    case v1::OUTCOME_ESTABLISHED:
      return "established";
    case v1::OUTCOME_REFUSED:
      return "refused";
    case v1::OUTCOME_TIMED_OUT:
      return "timed_out";
    case v1::OUTCOME_ERROR:
      return absl::StrCat("error ", n.error_code());
    default:
      return "";
  }
}

// exit_code is the raw wait status: code << 8, or the signal in the low bits.
std::string ExitDetail(int32_t status) {
  if ((status & 0x7f) != 0) return absl::StrCat("signal ", status & 0x7f);
  return absl::StrCat("exit ", (status >> 8) & 0xff);
}

std::string Detail(const v1::Envelope& e) {
  switch (e.event_case()) {
    case v1::Envelope::kFork:
      return absl::StrCat("ppid ", e.fork().process().ppid());
    case v1::Envelope::kExit:
      return ExitDetail(e.exit().exit_code());
    case v1::Envelope::kNetwork:
      return NetworkDetail(e.network());
    case v1::Envelope::kLoss:
      return absl::StrCat("lost ", e.loss().count(), " (", Esc(e.loss().reason()), ")");
    case v1::Envelope::kCoverage:
      return absl::StrCat("blind_spots=", e.coverage().blind_spots_size());
    case v1::Envelope::kAlert:
      return absl::StrCat(Esc(e.alert().rule()), ": ", Esc(e.alert().summary()));
    case v1::Envelope::kLearning:
      return absl::StrCat(e.learning().learning() ? "learning" : "learned",
                          " images=", e.learning().images(),
                          " behaviors=", e.learning().behaviors());
    default:
      return "";
  }
}

// History: processes are told apart by pid and start (boot time, else wall
// clock), so a reused pid starts a new group. Events with no process share
// the group with pid 0.
using GroupKey = std::tuple<std::string, uint32_t, uint64_t, int64_t, int32_t>;

GroupKey KeyOf(const v1::Envelope& e) {
  const v1::Process* p = ProcessOf(e);
  if (p == nullptr || p->pid() == 0) return {e.host_id(), 0, 0, 0, 0};
  if (p->start_boottime_ns() != 0) return {e.host_id(), p->pid(), p->start_boottime_ns(), 0, 0};
  return {e.host_id(), p->pid(), 0, p->start_time().seconds(), p->start_time().nanos()};
}

// Groups in order of their first event; events keep their input order.
std::vector<std::vector<const v1::Envelope*>> Group(absl::Span<const v1::Envelope> events) {
  std::vector<std::vector<const v1::Envelope*>> groups;
  std::map<GroupKey, size_t> index;
  for (const v1::Envelope& e : events) {
    auto [it, added] = index.try_emplace(KeyOf(e), groups.size());
    if (added) groups.emplace_back();
    groups[it->second].push_back(&e);
  }
  return groups;
}

// The image the process ended up with: a fork still carries its parent's,
// an exec replaces it, so the last non-fork event wins.
const v1::Process* GroupProcess(const std::vector<const v1::Envelope*>& group) {
  const v1::Process* best = nullptr;
  for (const v1::Envelope* e : group) {
    const v1::Process* p = ProcessOf(*e);
    if (p != nullptr && (best == nullptr || !e->has_fork())) best = p;
  }
  return best;
}

// exe, then the arguments after argv[0] when argv[0] just names the exe;
// otherwise argv[0] is shown apart, since a forged argv[0] is a classic
// disguise.
std::string CommandLine(const v1::Process& p) {
  const absl::string_view path = p.exe().empty() ? p.comm() : p.exe();
  std::string line = path.empty() ? std::string("-") : Esc(path);
  if (p.argv_size() == 0) return line;
  const absl::string_view argv0 = p.argv(0);
  const absl::string_view base = path.substr(path.rfind('/') + 1);
  const std::string rest = JoinArgs(p, 1);
  if (!rest.empty()) absl::StrAppend(&line, " ", rest);
  if (argv0 != path && argv0 != base) absl::StrAppend(&line, " [argv0 ", Arg(argv0), "]");
  return line;
}

std::string GroupHeader(const v1::Process* p) {
  if (p == nullptr || p->pid() == 0) return "(no process)";
  std::string line = absl::StrCat("pid ", p->pid(), " (ppid ", p->ppid(), ", uid ", p->uid(), ") ",
                                  CommandLine(*p));
  if (!p->container_id().empty())
    absl::StrAppend(&line, " [container ", Esc(p->container_id()), "]");
  return line;
}

std::string Ancestors(const std::vector<const v1::Envelope*>& group) {
  for (const v1::Envelope* e : group) {
    if (!e->has_alert() || e->alert().ancestors().empty()) continue;
    std::vector<std::string> parts;
    for (const v1::Process& a : e->alert().ancestors()) {
      parts.push_back(absl::StrCat(a.pid(), " ", Esc(a.exe().empty() ? a.comm() : a.exe())));
    }
    return absl::StrJoin(parts, " <- ");
  }
  return "";
}

// TIME KIND PROTO FLOW DETAIL, where FLOW is "local -> remote" (or "<-" for
// inbound) for network acts and the command line for an exec.
Row HistoryLine(const v1::Envelope& e) {
  std::string flow;
  std::string detail = Detail(e);
  if (const v1::NetworkEvent* n = NetworkOf(e)) {
    flow = Local(n);
    const std::string remote = Remote(n);
    if (!remote.empty()) {
      const char* arrow = n->direction() == v1::DIRECTION_INBOUND ? " <- " : " -> ";
      flow = absl::StrCat(flow.empty() ? "*" : flow, arrow, remote);
    }
  } else if (e.has_exec()) {
    flow = CommandLine(e.exec().process());
  }
  if (e.has_alert()) detail = absl::StrCat(Severity(e.alert().severity()), " ", detail);
  return {EnvelopeTime(e), Kind(e), Proto(NetworkOf(e)), flow, detail};
}

// "5s", "3m", "2h", "4d", rounded down. Clock skew can put last_seen after
// now; that reads as just seen.
std::string Age(absl::Duration d) {
  const int64_t s = std::max<int64_t>(0, absl::ToInt64Seconds(d));
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrCat(s / 60, "m");
  if (s < 86400) return absl::StrCat(s / 3600, "h");
  return absl::StrCat(s / 86400, "d");
}

}  // namespace

void WriteEvents(absl::Span<const v1::Envelope> events, OutputFormat format, std::ostream& out) {
  if (format == OutputFormat::kJson) {
    for (const v1::Envelope& e : events) WriteJsonLine(e, out);
    return;
  }
  Table t{
      {"TIME", "HOST", "KIND", "PID", "EXE", "ARGV", "LOCAL", "REMOTE", "PROTO", "DIR", "DETAIL"},
      {false, false, false, false, false, true, false, false, false, false, true},
      {}};
  for (const v1::Envelope& e : events) {
    const v1::Process* p = ProcessOf(e);
    const v1::NetworkEvent* n = NetworkOf(e);
    t.rows.push_back({EnvelopeTime(e), Host(e), Kind(e), p ? Num(p->pid()) : "",
                      p ? Esc(p->exe()) : "", p ? JoinArgs(*p, 0) : "", Local(n), Remote(n),
                      Proto(n), Dir(n), Detail(e)});
  }
  WriteTable(t, format, out);
}

// Envelopes that are not alerts are skipped in every format.
void WriteAlerts(absl::Span<const v1::Envelope> alerts, OutputFormat format, std::ostream& out) {
  Table t{{"TIME", "ID", "HOST", "RULE", "SEVERITY", "STATUS", "SUMMARY", "FLEET", "PID", "EXE",
           "ARGV", "REMOTE"},
          {false, false, false, false, false, false, true, false, false, false, true, false},
          {}};
  for (const v1::Envelope& e : alerts) {
    if (!e.has_alert()) continue;
    if (format == OutputFormat::kJson) {
      WriteJsonLine(e, out);
      continue;
    }
    const v1::Alert& a = e.alert();
    t.rows.push_back({EnvelopeTime(e), Esc(a.id()), Host(e), Esc(a.rule()),
                      Severity(a.severity()), Esc(a.has_triage() ? a.triage().status() : "open"),
                      Esc(a.summary()), FleetSummary(a), Num(a.process().pid()),
                      Esc(a.process().exe()), JoinArgs(a.process(), 0), Remote(NetworkOf(e))});
  }
  if (format != OutputFormat::kJson) WriteTable(t, format, out);
}

// Tables: a header line per process, its ancestors when an alert named them,
// then its events indented and aligned across the whole output. Nothing at
// all is printed for no events: there is no table header to show.
void WriteHistory(absl::Span<const v1::Envelope> events, OutputFormat format, std::ostream& out) {
  const auto groups = Group(events);
  if (format == OutputFormat::kJson) {
    for (const auto& group : groups) {
      for (const v1::Envelope* e : group) WriteJsonLine(*e, out);
    }
    return;
  }
  if (format == OutputFormat::kCsv) {
    Table t{{"HOST", "PID", "PPID", "UID", "START", "EXE", "ARGV", "CONTAINER", "TIME", "KIND",
             "LOCAL", "REMOTE", "PROTO", "DIR", "DETAIL"},
            {},
            {}};
    for (const auto& group : groups) {
      for (const v1::Envelope* e : group) {
        // Each row carries the process as that event saw it (before or after exec).
        const v1::Process* p = ProcessOf(*e);
        const v1::Process& proc = p ? *p : v1::Process::default_instance();
        const v1::NetworkEvent* n = NetworkOf(*e);
        t.rows.push_back({Host(*e), Num(proc.pid()), Num(proc.ppid()),
                          p ? absl::StrCat(proc.uid()) : "",
                          proc.has_start_time() ? Rfc3339(proc.start_time()) : "", Esc(proc.exe()),
                          JoinArgs(proc, 0), Esc(proc.container_id()), EnvelopeTime(*e), Kind(*e),
                          Local(n), Remote(n), Proto(n), Dir(n), Detail(*e)});
      }
    }
    WriteTable(t, format, out);
    return;
  }
  // Align event lines over all groups, then print them under their headers.
  std::vector<Row> lines;
  for (const auto& group : groups) {
    for (const v1::Envelope* e : group) lines.push_back(HistoryLine(*e));
  }
  const std::vector<std::string> aligned = Align(lines, {false, false, false, true, true}, "");
  size_t next = 0;
  for (const auto& group : groups) {
    out << GroupHeader(GroupProcess(group)) << '\n';
    if (const std::string anc = Ancestors(group); !anc.empty()) {
      out << "  ancestors: " << anc << '\n';
    }
    for (size_t i = 0; i < group.size(); ++i) out << "  " << aligned[next++] << '\n';
  }
}

void WriteHosts(absl::Span<const v1::HostInfo> hosts, OutputFormat format, absl::Time now,
                std::ostream& out) {
  if (format == OutputFormat::kJson) {
    for (const v1::HostInfo& h : hosts) WriteJsonLine(h, out);
    return;
  }
  Table t{{"HOST", "HOSTNAME", "VERSION", "KERNEL", "LAST_SEEN", "AGE", "LOST", "BLIND_SPOTS"},
          {false, false, false, false, false, false, false, true},
          {}};
  for (const v1::HostInfo& h : hosts) {
    const v1::Hello& hello = h.hello();
    std::vector<std::string> spots;
    for (const std::string& s : hello.coverage().blind_spots()) spots.push_back(Esc(s));
    t.rows.push_back({Esc(hello.host_id()), Esc(hello.hostname()), Esc(hello.agent_version()),
                      Esc(hello.kernel_release().empty() ? hello.coverage().kernel_release()
                                                         : hello.kernel_release()),
                      h.has_last_seen() ? Rfc3339(h.last_seen()) : "",
                      h.has_last_seen() ? Age(now - ToTime(h.last_seen())) : "",
                      absl::StrCat(h.events_lost()), absl::StrJoin(spots, "; ")});
  }
  WriteTable(t, format, out);
}

}  // namespace sockwatch
