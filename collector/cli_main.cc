// sockwatch: the SOC's and responders' CLI over the collector's query
// service. See kUsage.
#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/text.h"
#include "agent/transport.h"
#include "collector/cli_format.h"
#include "grpcpp/create_channel.h"
#include "sockwatch/v1/query.grpc.pb.h"

namespace sockwatch {
namespace {

constexpr char kUsage[] =
    "Usage: sockwatch [global flags] COMMAND [flags]\n"
    "Asks a sockwatch collector which process talked to whom, fleet-wide.\n"
    "\n"
    "Commands:\n"
    "  hosts                       every agent: version, kernel, last seen, events lost, blind spots\n"
    "  events [filters]            stored events, by host and sequence (paged)\n"
    "  alerts [filters] [--status=open|acked|closed]\n"
    "                              alerts, newest first, with triage status and fleet prevalence\n"
    "  alert ack|close|reopen ID --note=TEXT\n"
    "                              triage an alert (needs the responder role); who and when are kept\n"
    "  prevalence [--exe=PATH | --sha256=HEX [--remote=IP|CIDR]] [--limit=N]\n"
    "                              on how many hosts each image used the network, and the rarest\n"
    "                              (image, direction, protocol, port) pairs; with --remote, the\n"
    "                              hosts where the image talked to that address\n"
    "  history --host=H [--since --until --page-token]\n"
    "                              one host's process-network timeline, grouped by process\n"
    "\n"
    "Filters (events, alerts; history takes --since/--until):\n"
    "  --host=H  --kind=K (exec|fork|exit|network|loss|coverage|alert|learning)\n"
    "  --exe=PATH  --sha256=HEX  --argv=SUBSTRING  --remote=IP|CIDR  --port=N\n"
    "  --protocol=tcp|udp  --direction=in|out  --container=ID-PREFIX  --rule=RULE\n"
    "  --since=WHEN  --until=WHEN   (30m, 2h, 7d ago; RFC 3339; or a UTC date)\n"
    "  --limit=N (page size, default 100, max 10000)  --page-token=T (from the last page)\n"
    "\n"
    "Global flags:\n"
    "  --collector=HOST:PORT   the collector's query address (or SOCKWATCH_COLLECTOR)\n"
    "  --token-file=PATH       file holding the bearer token (or SOCKWATCH_TOKEN=TOKEN)\n"
    "  --tls_ca=PEM            CA of the collector's certificate (or SOCKWATCH_TLS_CA)\n"
    "  --tls_cert=PEM --tls_key=PEM\n"
    "                          a client certificate instead of a token (or SOCKWATCH_TLS_CERT,\n"
    "                          SOCKWATCH_TLS_KEY); its CN needs a 'cert:CN' role on the collector\n"
    "  --tls_server_name=NAME  name to check in the collector's certificate\n"
    "  --insecure              plaintext, only to a collector on loopback\n"
    "  --json | --csv          JSON lines (proto field names) or CSV instead of a table\n"
    "\n"
    "Exit status: 0 (also when nothing matched), 1 when the collector cannot be\n"
    "reached or fails, 2 on bad usage, 3 when the credentials are refused.\n";

// History is read in large pages: a timeline cut at 100 events misleads.
constexpr uint32_t kHistoryPage = 10000;

struct Args {
  std::string command;
  std::vector<std::string> operands;  // after the command: alert ACTION ID
  std::string collector, token, tls_ca, tls_cert, tls_key, tls_server_name;
  bool insecure = false;
  OutputFormat format = OutputFormat::kTable;
  std::map<std::string, std::string> flags;  // command flags, name -> value
};

int Usage(const std::string& msg) {
  std::cerr << "sockwatch: " << EscapeForTerminal(msg) << " (see sockwatch --help)\n";
  return 2;
}

std::string Env(const char* name) {
  const char* v = getenv(name);
  return v ? v : "";
}

// The flags each command takes.
bool Takes(const std::string& command, const std::string& flag) {
  static const std::vector<std::string> kFilters = {
      "host", "kind", "exe", "sha256", "argv", "remote", "port", "protocol",
      "direction", "container", "rule", "since", "until", "limit", "page-token"};
  if (command == "hosts") return false;
  if (command == "alert") return flag == "note";
  if (command == "prevalence")
    return flag == "exe" || flag == "sha256" || flag == "remote" || flag == "limit";
  if (command == "alerts" && flag == "status") return true;
  if (command == "history")
    return flag == "host" || flag == "since" || flag == "until" || flag == "page-token";
  return std::find(kFilters.begin(), kFilters.end(), flag) != kFilters.end();
}

absl::StatusOr<v1::EventsRequest> BuildRequest(const Args& a, absl::Time now) {
  v1::EventsRequest req;
  v1::EventFilter* f = req.mutable_filter();
  auto to_ts = [](absl::Time t, google::protobuf::Timestamp* ts) {
    const int64_t ns = absl::ToUnixNanos(t);
    ts->set_seconds(ns / 1000000000);
    ts->set_nanos(static_cast<int32_t>(ns % 1000000000));
  };
  for (const auto& [name, v] : a.flags) {
    if (name == "host") f->set_host_id(v);
    else if (name == "kind") f->set_kind(v);
    else if (name == "exe") f->set_exe(v);
    else if (name == "sha256") f->set_sha256(v);
    else if (name == "argv") f->set_argv_contains(v);
    else if (name == "remote") f->set_remote(v);
    else if (name == "container") f->set_container(v);
    else if (name == "rule") f->set_rule(v);
    else if (name == "status") f->set_alert_status(v);
    else if (name == "page-token") req.set_page_token(v);
    else if (name == "port" || name == "limit") {
      uint32_t n = 0;
      if (!absl::SimpleAtoi(v, &n) || (name == "port" && (n == 0 || n > 65535)))
        return absl::InvalidArgumentError(absl::StrCat("--", name, "=", v, ": want a number"));
      name == "port" ? f->set_remote_port(n) : req.set_page_size(n);
    } else if (name == "protocol") {
      if (v == "tcp") f->set_protocol(v1::PROTOCOL_TCP);
      else if (v == "udp") f->set_protocol(v1::PROTOCOL_UDP);
      else return absl::InvalidArgumentError(absl::StrCat("--protocol=", v, ": tcp or udp"));
    } else if (name == "direction") {
      if (v == "out" || v == "outbound") f->set_direction(v1::DIRECTION_OUTBOUND);
      else if (v == "in" || v == "inbound") f->set_direction(v1::DIRECTION_INBOUND);
      else return absl::InvalidArgumentError(absl::StrCat("--direction=", v, ": in or out"));
    } else if (name == "since" || name == "until") {
      absl::StatusOr<absl::Time> t = ParseWhen(name, v, now);
      if (!t.ok()) return t.status();
      to_ts(*t, name == "since" ? f->mutable_since() : f->mutable_until());
    }
  }
  return req;
}

int Fail(const grpc::Status& s) {
  std::cerr << "sockwatch: " << EscapeForTerminal(s.error_message()) << "\n";
  return s.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
                 s.error_code() == grpc::StatusCode::PERMISSION_DENIED
             ? 3
             : 1;
}

int Main(int argc, char** argv) {
  Args a;
  a.collector = Env("SOCKWATCH_COLLECTOR");
  a.token = Env("SOCKWATCH_TOKEN");
  a.tls_ca = Env("SOCKWATCH_TLS_CA");
  a.tls_cert = Env("SOCKWATCH_TLS_CERT");
  a.tls_key = Env("SOCKWATCH_TLS_KEY");
  std::string token_file;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h" || arg == "help") {
      std::cout << kUsage;
      return 0;
    }
    if (!absl::StartsWith(arg, "--")) {
      if (a.command.empty()) a.command = arg;
      else if (a.command == "alert" && a.operands.size() < 2) a.operands.push_back(arg);
      else return Usage(absl::StrCat("unexpected argument '", arg, "'"));
      continue;
    }
    std::string name = arg.substr(2), value;
    const size_t eq = name.find('=');
    const bool has_value = eq != std::string::npos;
    if (has_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (name == "json" || name == "csv" || name == "insecure") {
      if (has_value) return Usage(absl::StrCat("--", name, " takes no value"));
      if (name == "insecure") a.insecure = true;
      else a.format = name == "json" ? OutputFormat::kJson : OutputFormat::kCsv;
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) return Usage(absl::StrCat("--", name, " needs a value"));
      value = argv[++i];
    }
    if (name == "collector") a.collector = value;
    else if (name == "token-file") token_file = value;
    else if (name == "tls_ca") a.tls_ca = value;
    else if (name == "tls_cert") a.tls_cert = value;
    else if (name == "tls_key") a.tls_key = value;
    else if (name == "tls_server_name") a.tls_server_name = value;
    else if (!a.command.empty() && Takes(a.command, name)) a.flags[name] = value;
    else return Usage(absl::StrCat("unknown flag --", name, a.command.empty() ? "" : " for " + a.command));
  }
  if (a.command.empty()) return Usage("no command");
  static const std::vector<std::string> kCommands = {"hosts",   "events", "alerts",
                                                     "history", "alert",  "prevalence"};
  if (std::find(kCommands.begin(), kCommands.end(), a.command) == kCommands.end())
    return Usage(absl::StrCat("unknown command '", a.command, "'"));
  if (a.command == "alert") {
    if (a.operands.size() != 2) return Usage("alert needs an action and an id: alert ack|close|reopen ID");
    const std::string& action = a.operands[0];
    if (action != "ack" && action != "close" && action != "reopen")
      return Usage(absl::StrCat("alert ", action, ": expected ack, close or reopen"));
  }
  if (a.command == "prevalence" && a.flags.count("remote") && !a.flags.count("exe") &&
      !a.flags.count("sha256"))
    return Usage("prevalence --remote needs --exe or --sha256");
  if (a.command == "history" && !a.flags.count("host")) return Usage("history needs --host");
  if (a.collector.empty()) return Usage("no collector: --collector=HOST:PORT or SOCKWATCH_COLLECTOR");
  if (!token_file.empty()) {
    FILE* f = fopen(token_file.c_str(), "r");
    if (!f) return Usage(absl::StrCat("--token-file=", token_file, ": cannot read"));
    char buf[512] = {};
    const size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    a.token = std::string(buf, n);
    while (!a.token.empty() && (a.token.back() == '\n' || a.token.back() == '\r' || a.token.back() == ' '))
      a.token.pop_back();
  }
  if (a.tls_cert.empty() != a.tls_key.empty())
    return Usage("--tls_cert and --tls_key go together");
  if (a.token.empty() && a.tls_cert.empty())
    return Usage("no credentials: --token-file=PATH, SOCKWATCH_TOKEN, or --tls_cert and --tls_key");
  if (a.insecure && !a.tls_cert.empty())
    return Usage("--insecure sends no certificate: use a token, or drop --insecure");

  absl::StatusOr<std::string> host = HostOfAddress(a.collector);
  if (!host.ok()) return Usage(std::string(host.status().message()));
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (a.insecure) {
    if (!IsLoopbackHost(*host))
      return Usage(absl::StrCat("--insecure: plaintext only to a collector on loopback, not '", *host, "'"));
    creds = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions o;
    if (!a.tls_ca.empty()) {
      absl::StatusOr<std::string> ca = ReadPem(a.tls_ca, "tls_ca");
      if (!ca.ok()) return Usage(std::string(ca.status().message()));
      o.pem_root_certs = *ca;
    }
    if (!a.tls_cert.empty()) {
      absl::StatusOr<std::string> cert = ReadPem(a.tls_cert, "tls_cert");
      if (!cert.ok()) return Usage(std::string(cert.status().message()));
      absl::StatusOr<std::string> key = ReadPem(a.tls_key, "tls_key");
      if (!key.ok()) return Usage(std::string(key.status().message()));
      o.pem_cert_chain = *cert;
      o.pem_private_key = *key;
    }
    creds = grpc::SslCredentials(o);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes * 4);
  if (!a.tls_server_name.empty()) args.SetSslTargetNameOverride(a.tls_server_name);
  auto stub = v1::Query::NewStub(grpc::CreateCustomChannel(a.collector, creds, args));
  grpc::ClientContext ctx;
  if (!a.token.empty()) ctx.AddMetadata("authorization", "Bearer " + a.token);
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  const absl::Time now = absl::Now();

  if (a.command == "hosts") {
    v1::HostsResponse resp;
    grpc::Status s = stub->Hosts(&ctx, v1::HostsRequest(), &resp);
    if (!s.ok()) return Fail(s);
    const std::vector<v1::HostInfo> hosts(resp.hosts().begin(), resp.hosts().end());
    WriteHosts(hosts, a.format, now, std::cout);
    return 0;
  }
  if (a.command == "alert") {
    v1::TriageRequest treq;
    treq.set_alert_id(a.operands[1]);
    const std::string& action = a.operands[0];
    treq.set_status(action == "ack" ? "acked" : action == "close" ? "closed" : "open");
    if (auto it = a.flags.find("note"); it != a.flags.end()) treq.set_note(it->second);
    v1::TriageResponse resp;
    grpc::Status s = stub->Triage(&ctx, treq, &resp);
    if (!s.ok()) return Fail(s);
    WriteTriaged(resp.alert(), a.format, std::cout);
    return 0;
  }
  if (a.command == "prevalence") {
    v1::PrevalenceRequest preq;
    for (const auto& [name, v] : a.flags) {
      if (name == "exe") preq.set_exe(v);
      else if (name == "sha256") preq.set_sha256(v);
      else if (name == "remote") preq.set_remote(v);
      else if (name == "limit") {
        uint32_t n = 0;
        if (!absl::SimpleAtoi(v, &n) || n == 0) return Usage(absl::StrCat("--limit=", v, ": want a number"));
        preq.set_limit(n);
      }
    }
    v1::PrevalenceResponse resp;
    grpc::Status s = stub->Prevalence(&ctx, preq, &resp);
    if (!s.ok()) return Fail(s);
    WritePrevalence(resp, a.format, std::cout);
    return 0;
  }
  absl::StatusOr<v1::EventsRequest> req = BuildRequest(a, now);
  if (!req.ok()) return Usage(std::string(req.status().message()));
  if (a.command == "alerts") {
    req->mutable_filter()->set_kind("alert");
    req->set_newest_first(true);
  }
  if (a.command == "history") req->set_page_size(kHistoryPage);
  v1::EventsResponse resp;
  grpc::Status s = stub->Events(&ctx, *req, &resp);
  if (!s.ok()) return Fail(s);
  std::vector<v1::Envelope> events(resp.events().begin(), resp.events().end());
  if (a.command == "alerts")
    WriteAlerts(events, a.format, std::cout);
  else if (a.command == "history")
    WriteHistory(events, a.format, std::cout);
  else
    WriteEvents(events, a.format, std::cout);
  if (!resp.next_page_token().empty())
    std::cerr << "sockwatch: more results: add --page-token=" << resp.next_page_token() << "\n";
  return 0;
}

}  // namespace
}  // namespace sockwatch

int main(int argc, char** argv) { return sockwatch::Main(argc, argv); }
