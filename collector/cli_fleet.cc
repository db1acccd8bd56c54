// `sockwatch prevalence` and `sockwatch alert ack|close|reopen` output.
#include <string>

#include "absl/strings/str_cat.h"
#include "collector/cli_format.h"
#include "collector/cli_table.h"

namespace sockwatch {

using cli_table::Esc;
using cli_table::Rfc3339;
using cli_table::Table;
using cli_table::WriteJsonLine;
using cli_table::WriteTable;

namespace {

std::string Hosts(uint64_t hosts, uint64_t fleet) { return absl::StrCat(hosts, "/", fleet); }

std::string ProtoName(v1::Protocol p) {
  return p == v1::PROTOCOL_TCP ? "tcp" : p == v1::PROTOCOL_UDP ? "udp" : "?";
}

std::string DirName(v1::Direction d) {
  return d == v1::DIRECTION_OUTBOUND ? "out" : d == v1::DIRECTION_INBOUND ? "in" : "?";
}

}  // namespace

std::string FleetSummary(const v1::Alert& a) {
  if (!a.has_fleet() || a.fleet().fleet_hosts() == 0) return "";
  const v1::FleetPrevalence& f = a.fleet();
  return absl::StrCat("image ", Hosts(f.image_hosts(), f.fleet_hosts()), " hosts",
                      f.by_sha256() ? " (sha256)" : "", ", behaviour ",
                      Hosts(f.behavior_hosts(), f.fleet_hosts()));
}

void WritePrevalence(const v1::PrevalenceResponse& resp, OutputFormat format, std::ostream& out) {
  if (format == OutputFormat::kJson) {
    WriteJsonLine(resp, out);
    return;
  }
  const uint64_t fleet = resp.fleet_hosts();
  Table images{{"IMAGE", "SHA256", "DIGESTS", "HOSTS", "FIRST_SEEN", "LAST_SEEN"},
               {true, false, false, false, false, false},
               {}};
  for (const v1::ImagePrevalence& p : resp.images())
    images.rows.push_back({Esc(p.exe()), Esc(p.sha256()), absl::StrCat(p.sha256_count()),
                           Hosts(p.hosts(), fleet), Rfc3339(p.first_seen()),
                           Rfc3339(p.last_seen())});
  Table pairs{{"IMAGE", "DIR", "PROTO", "PORT", "HOSTS", "FIRST_SEEN", "LAST_SEEN"},
              {true, false, false, false, false, false, false},
              {}};
  for (const v1::PairPrevalence& p : resp.pairs())
    pairs.rows.push_back({Esc(p.exe()), DirName(p.direction()), ProtoName(p.protocol()),
                          absl::StrCat(p.port()), Hosts(p.hosts(), fleet), Rfc3339(p.first_seen()),
                          Rfc3339(p.last_seen())});
  if (format == OutputFormat::kCsv) {
    // One CSV document per table would not parse as one: a kind column.
    Table all{{"ROW", "IMAGE", "SHA256", "DIGESTS", "DIR", "PROTO", "PORT", "HOST", "HOSTS",
               "FLEET_HOSTS", "FIRST_SEEN", "LAST_SEEN"},
              {},
              {}};
    const std::string f = absl::StrCat(fleet);
    for (const v1::ImagePrevalence& p : resp.images())
      all.rows.push_back({"image", Esc(p.exe()), Esc(p.sha256()), absl::StrCat(p.sha256_count()),
                          "", "", "", "", absl::StrCat(p.hosts()), f, Rfc3339(p.first_seen()),
                          Rfc3339(p.last_seen())});
    for (const v1::PairPrevalence& p : resp.pairs())
      all.rows.push_back({"pair", Esc(p.exe()), "", "", DirName(p.direction()),
                          ProtoName(p.protocol()), absl::StrCat(p.port()), "",
                          absl::StrCat(p.hosts()), f, Rfc3339(p.first_seen()),
                          Rfc3339(p.last_seen())});
    for (const std::string& h : resp.hosts())
      all.rows.push_back({"host", "", "", "", "", "", "", Esc(h), "", f, "", ""});
    WriteTable(all, format, out);
    return;
  }
  out << "Fleet: " << fleet << " hosts\n\nImages that used the network, rarest first:\n";
  WriteTable(images, format, out);
  out << "\n(image, direction, protocol, port), rarest first:\n";
  WriteTable(pairs, format, out);
  if (resp.hosts_size() > 0) {
    out << "\nHosts where it talked to the address:\n";
    for (const std::string& h : resp.hosts()) out << "  " << Esc(h) << '\n';
  }
}

void WriteTriaged(const v1::Envelope& alert, OutputFormat format, std::ostream& out) {
  if (format == OutputFormat::kJson) {
    WriteJsonLine(alert, out);
    return;
  }
  Table t{{"ALERT", "STATUS", "BY", "TIME", "NOTE"}, {false, false, false, false, true}, {}};
  const v1::Alert& a = alert.alert();
  for (const v1::TriageEntry& e : a.triage().history())
    t.rows.push_back({Esc(a.id()), Esc(e.status()), Esc(e.by()), Rfc3339(e.time()), Esc(e.note())});
  WriteTable(t, format, out);
}

}  // namespace sockwatch
