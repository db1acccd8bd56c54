#include "agent/output.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "agent/text.h"

namespace sockwatch {
namespace {

using google::protobuf::util::TimeUtil;

std::string ProcText(const v1::Process& p) {
  std::vector<std::string> args;
  for (const auto& a : p.argv()) args.push_back(EscapeForTerminal(a));
  std::string s = absl::StrCat("pid=", p.pid(), " ppid=", p.ppid(), " uid=", p.uid(),
                               " exe=", EscapeForTerminal(p.exe().empty() ? "?" : p.exe()));
  if (p.exe_deleted()) s += " (deleted)";
  absl::StrAppend(&s, " argv=[", absl::StrJoin(args, " "), p.argv_truncated() ? " …" : "", "]");
  if (p.unknown()) absl::StrAppend(&s, " comm=", EscapeForTerminal(p.comm()), " (not in table)");
  return s;
}

std::string Endpoint(const std::string& ip, uint32_t port) {
  return ip.find(':') != std::string::npos ? absl::StrCat("[", ip, "]:", port)
                                           : absl::StrCat(ip, ":", port);
}

std::string NetText(const v1::NetworkEvent& n) {
  std::string kind = v1::NetworkKind_Name(n.kind()).substr(sizeof("NETWORK_KIND_") - 1);
  std::string proto = n.protocol() == v1::PROTOCOL_TCP ? "tcp" : "udp";
  std::string s = absl::StrCat(kind, " ", proto, n.ip_version(), " ",
                               Endpoint(n.local_ip(), n.local_port()));
  if (n.kind() != v1::NETWORK_KIND_LISTEN && !n.remote_ip().empty()) {
    absl::StrAppend(&s, n.direction() == v1::DIRECTION_INBOUND ? " <- " : " -> ",
                    Endpoint(n.remote_ip(), n.remote_port()));
  }
  if (n.kind() == v1::NETWORK_KIND_CONNECT)
    absl::StrAppend(&s, " ", absl::AsciiStrToLower(v1::Outcome_Name(n.outcome()).substr(8)));
  if (n.kind() == v1::NETWORK_KIND_FLOW_END)
    absl::StrAppendFormat(&s, " %.3fs sent=%d recv=%d", n.duration_ns() / 1e9, n.bytes_sent(),
                          n.bytes_received());
  if (n.snapshot()) absl::StrAppend(&s, " (snapshot ", n.socket_state(), ")");
  absl::StrAppend(&s, " ", ProcText(n.process()));
  return s;
}

}  // namespace

absl::StatusOr<PrintFormat> ParsePrintFormat(absl::string_view s) {
  if (s == "json") return PrintFormat::kJson;
  if (s == "text") return PrintFormat::kText;
  if (s == "none") return PrintFormat::kNone;
  return absl::InvalidArgumentError(
      absl::StrCat("--print=", s, ": want json, text or none"));
}

std::string EnvelopeToJson(const v1::Envelope& env) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(env, &out, opts).ok()) return "{}";
  return out;
}

std::string CoverageToText(const v1::Coverage& c) {
  std::string s = absl::StrCat("kernel=", c.kernel_release(), " btf=", c.btf() ? "yes" : "no");
  for (const auto& h : c.hooks())
    absl::StrAppend(&s, " ", h.family(), "=",
                    h.available() ? absl::StrJoin(h.mechanisms(), "+")
                                  : "UNAVAILABLE(" + EscapeForTerminal(h.error()) + ")");
  for (const auto& b : c.blind_spots()) absl::StrAppend(&s, " | blind spot: ", b);
  return s;
}

std::string EnvelopeToText(const v1::Envelope& env) {
  std::string s = absl::StrCat(TimeUtil::ToString(env.time()), " ");
  switch (env.event_case()) {
    case v1::Envelope::kExec:
      absl::StrAppend(&s, "EXEC ", ProcText(env.exec().process()));
      break;
    case v1::Envelope::kFork:
      absl::StrAppend(&s, "FORK ", ProcText(env.fork().process()));
      break;
    case v1::Envelope::kExit:
      absl::StrAppend(&s, "EXIT code=", env.exit().exit_code(), " ", ProcText(env.exit().process()));
      break;
    case v1::Envelope::kNetwork:
      absl::StrAppend(&s, NetText(env.network()));
      break;
    case v1::Envelope::kLoss:
      absl::StrAppend(&s, "LOSS ", env.loss().count(), " ", env.loss().reason(), " between ",
                      TimeUtil::ToString(env.loss().first_time()), " and ",
                      TimeUtil::ToString(env.loss().last_time()));
      break;
    case v1::Envelope::kCoverage:
      absl::StrAppend(&s, "COVERAGE ", CoverageToText(env.coverage()));
      break;
    case v1::Envelope::kAlert: {
      const v1::Alert& a = env.alert();
      absl::StrAppend(&s, "ALERT ",
                      absl::AsciiStrToLower(v1::Severity_Name(a.severity()).substr(9)), " ",
                      a.rule(), a.occurrences() > 1 ? absl::StrCat(" x", a.occurrences()) : "",
                      a.maybe_incomplete() ? " (events were lost: may be incomplete)" : "", ": ",
                      EscapeForTerminal(a.summary()), " | ", ProcText(a.process()));
      for (const auto& anc : a.ancestors())
        absl::StrAppend(&s, " <- ", anc.pid(), ":", EscapeForTerminal(anc.exe()));
      break;
    }
    case v1::Envelope::kLearning: {
      const v1::LearningStatus& l = env.learning();
      absl::StrAppend(&s, "LEARNING ", l.learning() ? "in progress" : "done", " until ",
                      TimeUtil::ToString(l.ends()), " images=", l.images(),
                      " behaviors=", l.behaviors(), " evicted=", l.evicted());
      break;
    }
    case v1::Envelope::EVENT_NOT_SET:
      s += "EMPTY";
  }
  return s;
}

}  // namespace sockwatch
