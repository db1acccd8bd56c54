#include "collector/cli_format.h"

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sockwatch {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// 2026-11-29T16:49:18Z, the time of the first event of every fixture.
const absl::Time kT0 =
    absl::FromCivil(absl::CivilSecond(2026, 11, 29, 16, 49, 18), absl::UTCTimeZone());

void SetTime(google::protobuf::Timestamp* ts, absl::Time t) {
  ts->set_seconds(absl::ToUnixSeconds(t));
}

v1::Envelope Base(int seconds_after_t0) {
  v1::Envelope e;
  e.set_host_id("h1");
  e.set_hostname("web-1");
  e.set_agent_instance("i1");
  SetTime(e.mutable_time(), kT0 + absl::Seconds(seconds_after_t0));
  return e;
}

v1::Process Curl() {
  v1::Process p;
  p.set_pid(5602);
  p.set_ppid(5597);
  p.set_uid(1000);
  p.set_exe("/usr/bin/curl");
  for (const char* a : {"curl", "-s", "https://example.com/"}) p.add_argv(a);
  p.set_start_boottime_ns(1000);
  p.set_container_id("abc123");
  return p;
}

v1::Process Ssh() {
  v1::Process p;
  p.set_pid(7001);
  p.set_ppid(1);
  p.set_exe("/usr/bin/ssh");
  for (const char* a : {"ssh", "-o", "", "my host"}) p.add_argv(a);
  p.set_start_boottime_ns(2000);
  return p;
}

void SetFlow(v1::NetworkEvent* n) {
  n->set_protocol(v1::PROTOCOL_TCP);
  n->set_ip_version(4);
  n->set_local_ip("10.0.0.5");
  n->set_local_port(40212);
  n->set_remote_ip("93.184.216.34");
  n->set_remote_port(443);
  n->set_direction(v1::DIRECTION_OUTBOUND);
}

v1::Envelope Connect(int t, const v1::Process& p) {
  v1::Envelope e = Base(t);
  v1::NetworkEvent* n = e.mutable_network();
  n->set_kind(v1::NETWORK_KIND_CONNECT);
  *n->mutable_process() = p;
  SetFlow(n);
  n->set_outcome(v1::OUTCOME_ESTABLISHED);
  return e;
}

v1::Envelope FlowEnd(int t, const v1::Process& p) {
  v1::Envelope e = Connect(t, p);
  e.mutable_network()->set_kind(v1::NETWORK_KIND_FLOW_END);
  e.mutable_network()->set_outcome(v1::OUTCOME_UNSPECIFIED);
  e.mutable_network()->set_bytes_sent(78);
  e.mutable_network()->set_bytes_received(1256);
  return e;
}

v1::Envelope Connect6(int t) {
  v1::Envelope e = Base(t);
  v1::NetworkEvent* n = e.mutable_network();
  n->set_kind(v1::NETWORK_KIND_CONNECT);
  *n->mutable_process() = Ssh();
  n->set_protocol(v1::PROTOCOL_TCP);
  n->set_ip_version(6);
  n->set_local_ip("fd00::2");
  n->set_local_port(51000);
  n->set_remote_ip("fd00::1");
  n->set_remote_port(22);
  n->set_direction(v1::DIRECTION_OUTBOUND);
  n->set_outcome(v1::OUTCOME_ERROR);
  n->set_error_code(113);
  return e;
}

v1::Envelope AlertEvent(int t) {
  v1::Envelope e = Base(t);
  v1::Alert* a = e.mutable_alert();
  a->set_id("h1/i1/3");
  a->set_rule("first_network_use");
  a->set_severity(v1::SEVERITY_HIGH);
  a->set_summary("/usr/bin/curl used the network for the first time");
  *a->mutable_process() = Curl();
  v1::Process* bash = a->add_ancestors();
  bash->set_pid(5597);
  bash->set_exe("/bin/bash");
  v1::Process* init = a->add_ancestors();
  init->set_pid(1);
  init->set_exe("/sbin/init");
  SetFlow(a->mutable_network());
  a->mutable_network()->set_kind(v1::NETWORK_KIND_CONNECT);
  return e;
}

v1::Envelope Loss(int t) {
  v1::Envelope e = Base(t);
  e.mutable_loss()->set_reason("ringbuf_full");
  e.mutable_loss()->set_count(12);
  return e;
}

v1::Envelope Exit(int t, const v1::Process& p, int status) {
  v1::Envelope e = Base(t);
  *e.mutable_exit()->mutable_process() = p;
  e.mutable_exit()->set_exit_code(status);
  return e;
}

// A process that tries to drive the analyst's terminal.
v1::Envelope Hostile(int t) {
  v1::Envelope e = Base(t);
  v1::Process* p = e.mutable_exec()->mutable_process();
  p->set_pid(666);
  p->set_exe("/tmp/\x1b[31mevil\n");
  for (const char* a : {"x\x1b[31m", "a\nb", "bad\xff"}) p->add_argv(a);
  return e;
}

v1::HostInfo Host(absl::string_view id, absl::string_view name, int last_seen_ago_s) {
  v1::HostInfo h;
  h.mutable_hello()->set_host_id(std::string(id));
  h.mutable_hello()->set_hostname(std::string(name));
  h.mutable_hello()->set_agent_version("0.3.1");
  h.mutable_hello()->set_kernel_release("6.1.0-13-amd64");
  SetTime(h.mutable_first_seen(), kT0 - absl::Hours(100));
  SetTime(h.mutable_last_seen(), kT0 - absl::Seconds(last_seen_ago_s));
  return h;
}

template <typename T, typename F>
std::string Render(F write, const std::vector<T>& items, OutputFormat format) {
  std::ostringstream out;
  write(items, format, out);
  return out.str();
}

std::string Events(const std::vector<v1::Envelope>& v, OutputFormat f) {
  return Render<v1::Envelope>(
      [](const auto& i, OutputFormat f, std::ostream& o) { WriteEvents(i, f, o); }, v, f);
}
std::string Alerts(const std::vector<v1::Envelope>& v, OutputFormat f) {
  return Render<v1::Envelope>(
      [](const auto& i, OutputFormat f, std::ostream& o) { WriteAlerts(i, f, o); }, v, f);
}
std::string History(const std::vector<v1::Envelope>& v, OutputFormat f) {
  return Render<v1::Envelope>(
      [](const auto& i, OutputFormat f, std::ostream& o) { WriteHistory(i, f, o); }, v, f);
}
std::string Hosts(const std::vector<v1::HostInfo>& v, OutputFormat f) {
  return Render<v1::HostInfo>(
      [](const auto& i, OutputFormat f, std::ostream& o) { WriteHosts(i, f, kT0, o); }, v, f);
}

std::vector<v1::Envelope> Mixed() {
  return {Connect(0, Curl()), AlertEvent(1), FlowEnd(2, Curl()),
          Connect6(3),        Loss(4),       Exit(5, Curl(), 1 << 8)};
}

// curl is forked from bash (still bash's image), execs, connects, raises
// an alert, closes and exits; ssh interleaves; then pid 5602 is reused.
std::vector<v1::Envelope> HistoryInput() {
  v1::Envelope fork = Base(-2);
  v1::Process* child = fork.mutable_fork()->mutable_process();
  *child = Curl();
  child->set_exe("/bin/bash");
  child->clear_argv();
  child->add_argv("-bash");
  v1::Envelope exec = Base(-1);
  *exec.mutable_exec()->mutable_process() = Curl();
  v1::Process reused = Curl();
  reused.set_start_boottime_ns(9000);
  reused.set_exe("/usr/bin/nc");
  reused.clear_argv();
  for (const char* a : {"nc", "-l", "8080"}) reused.add_argv(a);
  reused.clear_container_id();
  v1::Envelope accept = Base(6);
  v1::NetworkEvent* n = accept.mutable_network();
  n->set_kind(v1::NETWORK_KIND_ACCEPT);
  *n->mutable_process() = reused;
  n->set_protocol(v1::PROTOCOL_TCP);
  n->set_ip_version(6);
  n->set_local_ip("fd00::5");
  n->set_local_port(8080);
  n->set_remote_ip("fd00::9");
  n->set_remote_port(50000);
  n->set_direction(v1::DIRECTION_INBOUND);
  n->set_outcome(v1::OUTCOME_ESTABLISHED);
  return {fork,
          exec,
          Connect(0, Curl()),
          Connect6(1),
          AlertEvent(2),
          FlowEnd(3, Curl()),
          Exit(4, Curl(), 0),
          Loss(5),
          accept,
          Exit(7, Ssh(), 9)};
}

int CountLines(absl::string_view s) { return std::count(s.begin(), s.end(), '\n'); }

TEST(CliFormatTest, EventsTable) {
  EXPECT_EQ(
      Events(Mixed(), OutputFormat::kTable),
      "TIME                  HOST   KIND      PID   EXE            ARGV                         "
      " LOCAL            REMOTE             PROTO  DIR  DETAIL\n"
      "2026-11-29T16:49:18Z  web-1  CONNECT   5602  /usr/bin/curl  curl -s https://example.com/ "
      " 10.0.0.5:40212   93.184.216.34:443  tcp4   out  established\n"
      "2026-11-29T16:49:19Z  web-1  ALERT     5602  /usr/bin/curl  curl -s https://example.com/ "
      " 10.0.0.5:40212   93.184.216.34:443  tcp4   out  "
      "first_network_use: /usr/bin/curl used the network for the f…\n"
      "2026-11-29T16:49:20Z  web-1  FLOW_END  5602  /usr/bin/curl  curl -s https://example.com/ "
      " 10.0.0.5:40212   93.184.216.34:443  tcp4   out  sent=78 recv=1256\n"
      "2026-11-29T16:49:21Z  web-1  CONNECT   7001  /usr/bin/ssh   ssh -o \"\" \"my host\"         "
      " "
      " [fd00::2]:51000  [fd00::1]:22       tcp6   out  error 113\n"
      "2026-11-29T16:49:22Z  web-1  LOSS      -     -              -                            "
      " -                -                  -      -    lost 12 (ringbuf_full)\n"
      "2026-11-29T16:49:23Z  web-1  EXIT      5602  /usr/bin/curl  curl -s https://example.com/ "
      " -                -                  -      -    exit 1\n");
}

TEST(CliFormatTest, EventsCsvIsUncutAndQuoted) {
  EXPECT_EQ(
      Events(Mixed(), OutputFormat::kCsv),
      "TIME,HOST,KIND,PID,EXE,ARGV,LOCAL,REMOTE,PROTO,DIR,DETAIL\n"
      "2026-11-29T16:49:18Z,web-1,CONNECT,5602,/usr/bin/curl,curl -s https://example.com/,"
      "10.0.0.5:40212,93.184.216.34:443,tcp4,out,established\n"
      "2026-11-29T16:49:19Z,web-1,ALERT,5602,/usr/bin/curl,curl -s https://example.com/,"
      "10.0.0.5:40212,93.184.216.34:443,tcp4,out,"
      "first_network_use: /usr/bin/curl used the network for the first time\n"
      "2026-11-29T16:49:20Z,web-1,FLOW_END,5602,/usr/bin/curl,curl -s https://example.com/,"
      "10.0.0.5:40212,93.184.216.34:443,tcp4,out,sent=78 recv=1256\n"
      "2026-11-29T16:49:21Z,web-1,CONNECT,7001,/usr/bin/ssh,\"ssh -o \"\"\"\" \"\"my host\"\"\","
      "[fd00::2]:51000,[fd00::1]:22,tcp6,out,error 113\n"
      "2026-11-29T16:49:22Z,web-1,LOSS,,,,,,,,lost 12 (ringbuf_full)\n"
      "2026-11-29T16:49:23Z,web-1,EXIT,5602,/usr/bin/curl,curl -s https://example.com/,"
      ",,,,exit 1\n");
}

TEST(CliFormatTest, CsvQuotesCommasAndQuotes) {
  v1::Envelope e = Connect(0, Curl());
  v1::Process* p = e.mutable_network()->mutable_process();
  p->set_exe("/opt/a,b");
  p->clear_argv();
  for (const char* a : {"echo", "x,y", "say\"hi\""}) p->add_argv(a);
  const std::string csv = Events({e}, OutputFormat::kCsv);
  EXPECT_THAT(csv, HasSubstr(",5602,\"/opt/a,b\",\"echo x,y \"\"say\\\"\"hi\\\"\"\"\"\",10.0"));
  EXPECT_EQ(CountLines(csv), 2);
}

TEST(CliFormatTest, EventsJsonOneEnvelopePerLineWithProtoNames) {
  const std::string json = Events(Mixed(), OutputFormat::kJson);
  EXPECT_EQ(CountLines(json), 6);
  EXPECT_EQ(json.substr(0, json.find('\n') + 1),
            R"({"host_id":"h1","agent_instance":"i1","time":"2026-11-29T16:49:18Z",)"
            R"("hostname":"web-1","network":{"kind":"NETWORK_KIND_CONNECT","process":{)"
            R"("pid":5602,"ppid":5597,"uid":1000,"exe":"/usr/bin/curl","argv":["curl","-s",)"
            R"("https://example.com/"],"start_boottime_ns":"1000","container_id":"abc123"},)"
            R"("protocol":"PROTOCOL_TCP","ip_version":4,"local_ip":"10.0.0.5",)"
            R"("local_port":40212,"remote_ip":"93.184.216.34","remote_port":443,)"
            R"("direction":"DIRECTION_OUTBOUND","outcome":"OUTCOME_ESTABLISHED"}})"
            "\n");
}

TEST(CliFormatTest, TerminalControlsEscapedInEveryFormat) {
  const std::string table = Events({Hostile(0)}, OutputFormat::kTable);
  EXPECT_EQ(table,
            "TIME                  HOST   KIND  PID  EXE                  ARGV                  "
            "  LOCAL  REMOTE  PROTO  DIR  DETAIL\n"
            "2026-11-29T16:49:18Z  web-1  EXEC  666  /tmp/\\x1b[31mevil\\n  x\\x1b[31m a\\nb "
            "bad\\xff  -      -       -      -    -\n");
  EXPECT_EQ(
      Events({Hostile(0)}, OutputFormat::kCsv),
      "TIME,HOST,KIND,PID,EXE,ARGV,LOCAL,REMOTE,PROTO,DIR,DETAIL\n"
      "2026-11-29T16:49:18Z,web-1,EXEC,666,/tmp/\\x1b[31mevil\\n,x\\x1b[31m a\\nb bad\\xff,,,,,"
      "\n");
  // JSON escapes controls itself; invalid UTF-8 becomes U+FFFD, not dropped.
  EXPECT_EQ(Events({Hostile(0)}, OutputFormat::kJson),
            R"({"host_id":"h1","agent_instance":"i1","time":"2026-11-29T16:49:18Z",)"
            R"("hostname":"web-1","exec":{"process":{"pid":666,)"
            R"("exe":"/tmp/\u001b[31mevil\n","argv":["x\u001b[31m","a\nb","bad)"
            "\xEF\xBF\xBD\"]}}}\n");
  for (const std::string& out :
       {table, History({Hostile(0)}, OutputFormat::kTable),
        History({Hostile(0)}, OutputFormat::kCsv), Alerts({Hostile(0)}, OutputFormat::kTable)}) {
    EXPECT_THAT(out, Not(HasSubstr("\x1b"))) << out;
    EXPECT_THAT(out, Not(HasSubstr("\xff"))) << out;
  }
  EXPECT_EQ(History({Hostile(0)}, OutputFormat::kTable),
            "pid 666 (ppid 0, uid 0) /tmp/\\x1b[31mevil\\n a\\nb bad\\xff [argv0 x\\x1b[31m]\n"
            "  2026-11-29T16:49:18Z  EXEC    /tmp/\\x1b[31mevil\\n a\\nb bad\\xff [argv0 "
            "x\\x1b[31m]\n");
}

TEST(CliFormatTest, AlignsByCharactersAndCutsLongFieldsInTablesOnly) {
  v1::Envelope wide = Connect(0, Curl());
  wide.mutable_network()->mutable_process()->set_exe("/opt/caf\xC3\xA9");  // 9 columns, 10 bytes
  v1::Envelope narrow = Connect(1, Curl());
  narrow.mutable_network()->mutable_process()->set_exe("/opt/cafe");
  v1::Process* p = narrow.mutable_network()->mutable_process();
  p->clear_argv();
  p->add_argv(std::string(100, 'a'));
  const std::string table = Events({wide, narrow}, OutputFormat::kTable);
  EXPECT_THAT(table, HasSubstr("  /opt/caf\xC3\xA9  curl -s https://example.com/   "));
  EXPECT_THAT(table, HasSubstr("  /opt/cafe  " + std::string(59, 'a') + "…  10.0.0.5:40212"));
  EXPECT_THAT(Events({narrow}, OutputFormat::kCsv), HasSubstr("," + std::string(100, 'a') + ","));
}

TEST(CliFormatTest, AlertsSkipOtherEnvelopes) {
  EXPECT_EQ(Alerts(Mixed(), OutputFormat::kTable),
            "TIME                  ID       HOST   RULE               SEVERITY  STATUS  SUMMARY      "
            "                                      FLEET  PID   EXE            ARGV              "
            "            REMOTE\n"
            "2026-11-29T16:49:19Z  h1/i1/3  web-1  first_network_use  high      open    "
            "/usr/bin/curl used the network for the first time  -      5602  /usr/bin/curl  curl "
            "-s https://example.com/  93.184.216.34:443\n");
  EXPECT_EQ(Alerts(Mixed(), OutputFormat::kCsv),
            "TIME,ID,HOST,RULE,SEVERITY,STATUS,SUMMARY,FLEET,PID,EXE,ARGV,REMOTE\n"
            "2026-11-29T16:49:19Z,h1/i1/3,web-1,first_network_use,high,open,/usr/bin/curl used "
            "the network for the first time,,5602,/usr/bin/curl,curl -s https://example.com/,"
            "93.184.216.34:443\n");
  const std::string json = Alerts(Mixed(), OutputFormat::kJson);
  EXPECT_EQ(CountLines(json), 1);
  EXPECT_THAT(json, HasSubstr(R"("alert":{"id":"h1/i1/3","rule":"first_network_use",)"
                              R"("severity":"SEVERITY_HIGH")"));
}

TEST(CliFormatTest, AlertsShowTriageStatusAndFleetPrevalence) {
  std::vector<v1::Envelope> alerts;
  for (const v1::Envelope& e : Mixed())
    if (e.has_alert()) alerts.push_back(e);
  ASSERT_EQ(alerts.size(), 1u);
  v1::Alert* a = alerts[0].mutable_alert();
  a->mutable_triage()->set_status("acked");
  a->mutable_fleet()->set_image_hosts(3);
  a->mutable_fleet()->set_behavior_hosts(1);
  a->mutable_fleet()->set_fleet_hosts(1204);
  a->mutable_fleet()->set_by_sha256(true);
  const std::string csv = Alerts(alerts, OutputFormat::kCsv);
  EXPECT_THAT(csv, HasSubstr(",high,acked,"));
  EXPECT_THAT(csv, HasSubstr(R"(,"image 3/1204 hosts (sha256), behaviour 1/1204",)"));
  EXPECT_THAT(Alerts(alerts, OutputFormat::kJson),
              HasSubstr(R"("fleet":{"image_hosts":"3","behavior_hosts":"1","fleet_hosts":"1204",)"
                        R"("by_sha256":true},"triage":{"status":"acked"})"));
}

TEST(CliFormatTest, PrevalenceTablesCsvAndJson) {
  v1::PrevalenceResponse resp;
  resp.set_fleet_hosts(1000);
  v1::ImagePrevalence* img = resp.add_images();
  img->set_exe("/tmp/\x1b[31mx");
  img->set_sha256("ab");
  img->set_sha256_count(2);
  img->set_hosts(2);
  img->mutable_first_seen()->set_seconds(1'800'000'000);
  img->mutable_last_seen()->set_seconds(1'800'000'060);
  v1::PairPrevalence* pair = resp.add_pairs();
  pair->set_exe("/tmp/\x1b[31mx");
  pair->set_direction(v1::DIRECTION_OUTBOUND);
  pair->set_protocol(v1::PROTOCOL_UDP);
  pair->set_port(53);
  pair->set_hosts(1);
  resp.add_hosts("host-0999");
  std::ostringstream table, csv, json;
  WritePrevalence(resp, OutputFormat::kTable, table);
  WritePrevalence(resp, OutputFormat::kCsv, csv);
  WritePrevalence(resp, OutputFormat::kJson, json);
  EXPECT_THAT(table.str(), HasSubstr("Fleet: 1000 hosts\n"));
  EXPECT_THAT(table.str(), HasSubstr("/tmp/\\x1b[31mx  ab      2        2/1000  2027-01-15T08:00:00Z"));
  EXPECT_THAT(table.str(), HasSubstr("/tmp/\\x1b[31mx  out  udp    53    1/1000"));
  EXPECT_THAT(table.str(), HasSubstr("  host-0999\n"));
  EXPECT_EQ(table.str().find('\x1b'), std::string::npos);
  EXPECT_THAT(csv.str(), HasSubstr("image,/tmp/\\x1b[31mx,ab,2,,,,,2,1000,"));
  EXPECT_THAT(csv.str(), HasSubstr("pair,/tmp/\\x1b[31mx,,,out,udp,53,,1,1000,"));
  EXPECT_THAT(csv.str(), HasSubstr("host,,,,,,,host-0999,,1000,,\n"));
  EXPECT_EQ(CountLines(json.str()), 1);
  EXPECT_THAT(json.str(), HasSubstr(R"("fleet_hosts":"1000")"));
}

TEST(CliFormatTest, TriagedAlertListsEverySteps) {
  v1::Envelope e;
  v1::Alert* a = e.mutable_alert();
  a->set_id("abc-1");
  v1::TriageEntry* ack = a->mutable_triage()->add_history();
  ack->set_status("acked");
  ack->set_by("alice");
  ack->set_note("looking\nat it");
  ack->mutable_time()->set_seconds(1'800'000'000);
  v1::TriageEntry* close = a->mutable_triage()->add_history();
  close->set_status("closed");
  close->set_by("cert:bob");
  close->set_note("admin's backup job");
  close->mutable_time()->set_seconds(1'800'000'100);
  std::ostringstream out;
  WriteTriaged(e, OutputFormat::kTable, out);
  EXPECT_EQ(out.str(),
            "ALERT  STATUS  BY        TIME                  NOTE\n"
            "abc-1  acked   alice     2027-01-15T08:00:00Z  looking\\nat it\n"
            "abc-1  closed  cert:bob  2027-01-15T08:01:40Z  admin's backup job\n");
}

TEST(CliFormatTest, Hosts) {
  v1::HostInfo h1 = Host("h1", "web-1", 5);
  h1.mutable_hello()->mutable_coverage()->add_blind_spots("no UDP, kernel too old");
  h1.mutable_hello()->mutable_coverage()->add_blind_spots("no BTF");
  h1.set_events_lost(42);
  v1::HostInfo never = Host("h5", "", 0);
  never.clear_last_seen();
  const std::vector<v1::HostInfo> hosts = {h1, Host("h2", "db-2", 200), Host("h3", "db-3", 7300),
                                           Host("h4", "old", 4 * 86400 + 60), never};
  EXPECT_EQ(
      Hosts(hosts, OutputFormat::kTable),
      "HOST  HOSTNAME  VERSION  KERNEL          LAST_SEEN             AGE  LOST  BLIND_SPOTS\n"
      "h1    web-1     0.3.1    6.1.0-13-amd64  2026-11-29T16:49:13Z  5s   42    "
      "no UDP, kernel too old; no BTF\n"
      "h2    db-2      0.3.1    6.1.0-13-amd64  2026-11-29T16:45:58Z  3m   0     -\n"
      "h3    db-3      0.3.1    6.1.0-13-amd64  2026-11-29T14:47:38Z  2h   0     -\n"
      "h4    old       0.3.1    6.1.0-13-amd64  2026-11-25T16:48:18Z  4d   0     -\n"
      "h5    -         0.3.1    6.1.0-13-amd64  -                     -    0     -\n");
  const std::string csv = Hosts(hosts, OutputFormat::kCsv);
  EXPECT_EQ(csv.substr(0, csv.find('\n', csv.find('\n') + 1) + 1),
            "HOST,HOSTNAME,VERSION,KERNEL,LAST_SEEN,AGE,LOST,BLIND_SPOTS\n"
            "h1,web-1,0.3.1,6.1.0-13-amd64,2026-11-29T16:49:13Z,5s,42,"
            "\"no UDP, kernel too old; no BTF\"\n");
  EXPECT_THAT(csv, HasSubstr("\nh5,,0.3.1,6.1.0-13-amd64,,,0,\n"));
  const std::string json = Hosts({h1}, OutputFormat::kJson);
  EXPECT_EQ(json,
            R"({"hello":{"host_id":"h1","hostname":"web-1","kernel_release":"6.1.0-13-amd64",)"
            R"("agent_version":"0.3.1","coverage":{"blind_spots":["no UDP, kernel too old",)"
            R"("no BTF"]}},"first_seen":"2026-11-25T12:49:18Z",)"
            R"("last_seen":"2026-11-29T16:49:13Z","events_lost":"42"})"
            "\n");
}

TEST(CliFormatTest, HistoryGroupsByProcessInOrderOfFirstEvent) {
  EXPECT_EQ(History(HistoryInput(), OutputFormat::kTable),
            "pid 5602 (ppid 5597, uid 1000) /usr/bin/curl -s https://example.com/ "
            "[container abc123]\n"
            "  ancestors: 5597 /bin/bash <- 1 /sbin/init\n"
            "  2026-11-29T16:49:16Z  FORK                                                   "
            "ppid 5597\n"
            "  2026-11-29T16:49:17Z  EXEC            /usr/bin/curl -s https://example.com/\n"
            "  2026-11-29T16:49:18Z  CONNECT   tcp4  10.0.0.5:40212 -> 93.184.216.34:443    "
            "established\n"
            "  2026-11-29T16:49:20Z  ALERT     tcp4  10.0.0.5:40212 -> 93.184.216.34:443    "
            "high first_network_use: /usr/bin/curl used the network for …\n"
            "  2026-11-29T16:49:21Z  FLOW_END  tcp4  10.0.0.5:40212 -> 93.184.216.34:443    "
            "sent=78 recv=1256\n"
            "  2026-11-29T16:49:22Z  EXIT                                                   "
            "exit 0\n"
            "pid 7001 (ppid 1, uid 0) /usr/bin/ssh -o \"\" \"my host\"\n"
            "  2026-11-29T16:49:19Z  CONNECT   tcp6  [fd00::2]:51000 -> [fd00::1]:22        "
            "error 113\n"
            "  2026-11-29T16:49:25Z  EXIT                                                   "
            "signal 9\n"
            "(no process)\n"
            "  2026-11-29T16:49:23Z  LOSS                                                   "
            "lost 12 (ringbuf_full)\n"
            "pid 5602 (ppid 5597, uid 1000) /usr/bin/nc -l 8080\n"
            "  2026-11-29T16:49:24Z  ACCEPT    tcp6  [fd00::5]:8080 <- [fd00::9]:50000      "
            "established\n");
}

TEST(CliFormatTest, HistoryCsvAndJsonKeepTheGroupedOrder) {
  const std::string csv = History(HistoryInput(), OutputFormat::kCsv);
  EXPECT_EQ(CountLines(csv), 11);
  EXPECT_EQ(
      csv.substr(0, csv.find('\n', csv.find('\n') + 1) + 1),
      "HOST,PID,PPID,UID,START,EXE,ARGV,CONTAINER,TIME,KIND,LOCAL,REMOTE,PROTO,DIR,DETAIL\n"
      "web-1,5602,5597,1000,,/bin/bash,-bash,abc123,2026-11-29T16:49:16Z,FORK,,,,,ppid 5597\n");
  EXPECT_THAT(csv, HasSubstr("ppid 5597\n"
                             "web-1,5602,5597,1000,,/usr/bin/curl,curl -s https://example.com/,"
                             "abc123,2026-11-29T16:49:17Z,EXEC,,,,,\n"));
  EXPECT_THAT(csv, HasSubstr("exit 0\nweb-1,7001,1,0,,/usr/bin/ssh,"));
  EXPECT_THAT(csv, HasSubstr("signal 9\nweb-1,,,,,,,,2026-11-29T16:49:23Z,LOSS,"));
  const std::string json = History(HistoryInput(), OutputFormat::kJson);
  std::vector<std::string> times;
  for (size_t pos = 0; (pos = json.find(R"("time":")", pos)) != std::string::npos; pos += 8) {
    times.push_back(json.substr(pos + 25, 2));  // the seconds of "2026-11-29T16:49:SSZ"
  }
  EXPECT_THAT(times,
              ::testing::ElementsAre("16", "17", "18", "20", "21", "22", "19", "25", "23", "24"));
}

TEST(CliFormatTest, EmptyInputs) {
  EXPECT_EQ(Events({}, OutputFormat::kTable),
            "TIME  HOST  KIND  PID  EXE  ARGV  LOCAL  REMOTE  PROTO  DIR  DETAIL\n");
  EXPECT_EQ(Alerts({}, OutputFormat::kCsv),
            "TIME,ID,HOST,RULE,SEVERITY,STATUS,SUMMARY,FLEET,PID,EXE,ARGV,REMOTE\n");
  EXPECT_EQ(Hosts({}, OutputFormat::kTable),
            "HOST  HOSTNAME  VERSION  KERNEL  LAST_SEEN  AGE  LOST  BLIND_SPOTS\n");
  EXPECT_EQ(Events({}, OutputFormat::kJson), "");
  EXPECT_EQ(History({}, OutputFormat::kTable), "");
}

}  // namespace
}  // namespace sockwatch
