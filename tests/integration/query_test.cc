// The collector's query service through the real `sockwatch` CLI, on every
// store backend: token and certificate roles, filters, paging, hosts, a
// host's history, alert triage and fleet prevalence.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/transport.h"
#include "google/protobuf/util/json_util.h"
#include "sockwatch/v1/query.pb.h"
#include "gtest/gtest.h"
#include "tests/integration/collector_harness.h"
#include "tests/integration/harness.h"

namespace sockwatch::testing {
namespace {

constexpr char kReaderToken[] = "reader-token-0123456789abcdef";

v1::Envelope Net(const std::string& host, uint64_t seq, const std::string& exe,
                 const std::vector<std::string>& argv, const std::string& remote, uint32_t port,
                 int64_t time) {
  v1::Envelope e = SyntheticNetworkEnvelope(host, "i1", seq);
  e.mutable_time()->set_seconds(time);
  v1::NetworkEvent* n = e.mutable_network();
  n->set_remote_ip(remote);
  n->set_remote_port(port);
  n->mutable_process()->set_exe(exe);
  n->mutable_process()->clear_argv();
  for (const std::string& a : argv) n->mutable_process()->add_argv(a);
  return e;
}

constexpr char kResponderToken[] = "responder-token-0123456789";

// The suite's collector, started for the first test of a backend (each
// ctest entry is its own process, so usually once per process).
class QueryTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void StartFor(const std::string& backend) {
    StopAll();
    backend_ = new std::string(backend);
    // "bob" is a person with a client certificate, not a host.
    pki_ = new TestPki({"host-a", "host-b", "bob"});
    char tmpl[] = "/tmp/sw_query_XXXXXX";
    dir_ = new std::string(mkdtemp(tmpl));
    std::ofstream(*dir_ + "/tokens") << "# role token name\nreader " << kReaderToken
                                     << " soc\nresponder " << kResponderToken
                                     << " alice\nresponder cert:bob\n";
    query_port_ = FreePort();
    absl::StatusOr<std::string> store = TestStoreUrl(backend, *dir_ + "/c.db");
    if (!store.ok()) {
      fprintf(stderr, "%s\n", std::string(store.status().message()).c_str());
      return;
    }
    collector_ = CollectorProcess::Start(
                     FreePort(), *store,
                     {"--tls_ca=" + pki_->ca(), "--tls_cert=" + pki_->dir + "/collector.pem",
                      "--tls_key=" + pki_->dir + "/collector.key",
                      absl::StrCat("--query_listen=127.0.0.1:", query_port_),
                      "--tokens=" + *dir_ + "/tokens"})
                     .release();
    if (!collector_) return;
    // host-a: curl to 192.0.2.10:443 at t0, python to 10.1.2.3:8080 at t0+60,
    // ssh to [fd00::5]:22 at t0+120, an alert at t0+130; host-b: one event, a loss.
    const int64_t t0 = 1'800'000'000;
    v1::AgentMessage a;
    *a.mutable_batch()->add_envelopes() = Net("host-a", 1, "/usr/bin/curl", {"curl", "-s", "https://x.test/"}, "192.0.2.10", 443, t0);
    *a.mutable_batch()->add_envelopes() = Net("host-a", 2, "/usr/bin/python3", {"python3", "-c", "import socket"}, "10.1.2.3", 8080, t0 + 60);
    *a.mutable_batch()->add_envelopes() = Net("host-a", 3, "/usr/bin/ssh", {"ssh", "admin@db"}, "fd00::5", 22, t0 + 120);
    v1::Envelope alert;
    alert.set_host_id("host-a");
    alert.set_agent_instance("i1");
    alert.set_seq(4);
    alert.mutable_time()->set_seconds(t0 + 130);
    alert.mutable_alert()->set_id("i1-1");
    alert.mutable_alert()->set_rule("first_network_use");
    alert.mutable_alert()->set_summary("/usr/bin/ssh used the network for the first time");
    alert.mutable_alert()->mutable_process()->set_exe("/usr/bin/ssh");
    alert.mutable_alert()->mutable_process()->set_pid(4242);
    *alert.mutable_alert()->mutable_network() =
        Net("host-a", 3, "/usr/bin/ssh", {"ssh", "admin@db"}, "fd00::5", 22, t0 + 120).network();
    *a.mutable_batch()->add_envelopes() = alert;
    a.mutable_batch()->set_spool_seq(4);
    v1::AgentMessage hello_a;
    hello_a.mutable_hello()->set_host_id("host-a");
    hello_a.mutable_hello()->set_agent_instance("i1");
    hello_a.mutable_hello()->set_agent_version("0.1.0");
    hello_a.mutable_hello()->mutable_coverage()->add_blind_spots("udp: connected sends");
    auto creds_a = *ClientTls({pki_->ca(), pki_->agent_cert("host-a"), pki_->agent_key("host-a")});
    ingest_ok_ = Exchange(creds_a, collector_->address(), {hello_a, a}).ok();
    v1::AgentMessage b;
    *b.mutable_batch()->add_envelopes() = Net("host-b", 1, "/usr/bin/curl", {"curl", "http://y.test/"}, "198.51.100.7", 80, t0 + 10);
    v1::Envelope loss;
    loss.set_host_id("host-b");
    loss.set_agent_instance("i1");
    loss.set_seq(2);
    loss.mutable_time()->set_seconds(t0 + 20);
    loss.mutable_loss()->set_reason("spool");
    loss.mutable_loss()->set_count(17);
    *b.mutable_batch()->add_envelopes() = loss;
    b.mutable_batch()->set_spool_seq(2);
    v1::AgentMessage hello_b;
    hello_b.mutable_hello()->set_host_id("host-b");
    hello_b.mutable_hello()->set_agent_instance("i1");
    auto creds_b = *ClientTls({pki_->ca(), pki_->agent_cert("host-b"), pki_->agent_key("host-b")});
    ingest_ok_ = ingest_ok_ && Exchange(creds_b, collector_->address(), {hello_b, b}).ok();
  }
  static void StopAll() {
    delete collector_;
    collector_ = nullptr;
    if (dir_) std::filesystem::remove_all(*dir_);
    delete dir_;
    dir_ = nullptr;
    delete pki_;
    pki_ = nullptr;
    delete backend_;
    backend_ = nullptr;
    ingest_ok_ = false;
  }
  static void TearDownTestSuite() { StopAll(); }
  void SetUp() override {
    if (!backend_ || *backend_ != GetParam()) StartFor(GetParam());
    ASSERT_NE(collector_, nullptr);
    ASSERT_TRUE(ingest_ok_);
  }

  using Result = CliResult;
  // Runs the CLI with the reader token unless token is given.
  Result Cli(const std::string& args, const std::string& token = kReaderToken) {
    return RunCli(token, query_port_, pki_->ca(), *dir_, args);
  }
  static std::vector<v1::Envelope> Envelopes(const std::string& json_lines) {
    return JsonEnvelopes(json_lines);
  }
  static std::vector<uint64_t> Seqs(const std::vector<v1::Envelope>& es) {
    std::vector<uint64_t> s;
    for (const auto& e : es) s.push_back(e.seq());
    return s;
  }

  static std::string* backend_;
  static TestPki* pki_;
  static std::string* dir_;
  static int query_port_;
  static CollectorProcess* collector_;
  static bool ingest_ok_;
};

std::string* QueryTest::backend_ = nullptr;
TestPki* QueryTest::pki_ = nullptr;
std::string* QueryTest::dir_ = nullptr;
int QueryTest::query_port_ = 0;
CollectorProcess* QueryTest::collector_ = nullptr;
bool QueryTest::ingest_ok_ = false;

TEST_P(QueryTest, EventsFilters) {
  Result r = Cli("events --host=host-a --kind=network --json");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(Seqs(Envelopes(r.out)), (std::vector<uint64_t>{1, 2, 3}));
  r = Cli("events --remote=10.0.0.0/8 --json");
  ASSERT_EQ(r.status, 0) << r.err;
  auto es = Envelopes(r.out);
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].network().process().exe(), "/usr/bin/python3");
  r = Cli("events --remote=fd00::/16 --json");
  // The ssh connect, and the alert whose evidence it is.
  EXPECT_EQ(Seqs(Envelopes(r.out)), (std::vector<uint64_t>{3, 4}));
  r = Cli("events --exe=/usr/bin/curl --json");
  EXPECT_EQ(Envelopes(r.out).size(), 2u);  // one per host
  r = Cli("events --exe=/usr/bin/curl --port=80 --json");
  es = Envelopes(r.out);
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].host_id(), "host-b");
  r = Cli("events --argv='import socket' --json");
  EXPECT_EQ(Seqs(Envelopes(r.out)), (std::vector<uint64_t>{2}));
  r = Cli("events --host=host-a --since=2027-01-15T08:01:00Z --until=2027-01-15T08:02:05Z --json");
  ASSERT_EQ(r.status, 0) << r.err;
  // t0 = 2027-01-15T08:00:00Z: the python (t0+60) and ssh (t0+120) events.
  EXPECT_EQ(Seqs(Envelopes(r.out)), (std::vector<uint64_t>{2, 3}));
}

TEST_P(QueryTest, PagesThroughResults) {
  Result r = Cli("events --host=host-a --limit=3 --csv");
  ASSERT_EQ(r.status, 0) << r.err;
  ASSERT_TRUE(absl::StrContains(r.err, "--page-token=3")) << r.err;
  EXPECT_EQ(std::vector<std::string>(absl::StrSplit(r.out, '\n', absl::SkipEmpty())).size(), 4u)
      << r.out;  // header + 3
  r = Cli("events --host=host-a --limit=3 --page-token=3 --json");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(Seqs(Envelopes(r.out)), (std::vector<uint64_t>{4}));
  EXPECT_FALSE(absl::StrContains(r.err, "page-token")) << r.err;
}

TEST_P(QueryTest, AlertsNewestFirstAndHosts) {
  Result r = Cli("alerts --json");
  ASSERT_EQ(r.status, 0) << r.err;
  auto es = Envelopes(r.out);
  ASSERT_EQ(es.size(), 1u);
  EXPECT_EQ(es[0].alert().rule(), "first_network_use");
  r = Cli("alerts");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "first_network_use")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "host-a")) << r.out;

  r = Cli("hosts --json");
  ASSERT_EQ(r.status, 0) << r.err;
  std::vector<v1::HostInfo> hosts;
  for (absl::string_view line : absl::StrSplit(r.out, '\n', absl::SkipEmpty())) {
    v1::HostInfo h;
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(std::string(line), &h).ok()) << line;
    hosts.push_back(h);
  }
  ASSERT_EQ(hosts.size(), 2u);
  EXPECT_EQ(hosts[0].hello().host_id(), "host-a");
  EXPECT_EQ(hosts[0].hello().coverage().blind_spots(0), "udp: connected sends");
  EXPECT_EQ(hosts[1].hello().host_id(), "host-b");
  EXPECT_EQ(hosts[1].events_lost(), 17u);
  r = Cli("hosts");
  EXPECT_TRUE(absl::StrContains(r.out, "udp: connected sends")) << r.out;
}

TEST_P(QueryTest, HistoryGroupsAHostsProcesses) {
  Result r = Cli("history --host=host-a");
  ASSERT_EQ(r.status, 0) << r.err;
  const size_t curl = r.out.find("/usr/bin/curl"), py = r.out.find("/usr/bin/python3"),
               ssh = r.out.find("/usr/bin/ssh");
  ASSERT_NE(curl, std::string::npos) << r.out;
  ASSERT_NE(py, std::string::npos) << r.out;
  ASSERT_NE(ssh, std::string::npos) << r.out;
  EXPECT_LT(curl, py);
  EXPECT_LT(py, ssh);
  EXPECT_TRUE(absl::StrContains(r.out, "10.1.2.3:8080")) << r.out;
  EXPECT_FALSE(absl::StrContains(r.out, "198.51.100.7")) << "host-b's event in host-a's history";
  EXPECT_EQ(Cli("history").status, 2);
}

TEST_P(QueryTest, CredentialsAndBadInput) {
  Result r = Cli("events", "not-a-known-token-000000");
  EXPECT_EQ(r.status, 3);
  EXPECT_TRUE(absl::StrContains(r.err, "unknown token")) << r.err;
  r = Cli("events", "");
  EXPECT_EQ(r.status, 2);
  EXPECT_TRUE(absl::StrContains(r.err, "no credentials")) << r.err;
  r = Cli("events --remote=not-an-ip");
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(absl::StrContains(r.err, "expected an IP address or a CIDR")) << r.err;
  r = Cli("events --kind=bogus");
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(absl::StrContains(r.err, "unknown event kind")) << r.err;
  EXPECT_EQ(Cli("events --protocol=icmp").status, 2);
  EXPECT_EQ(Cli("frobnicate").status, 2);
  EXPECT_EQ(Cli("hosts --host=x").status, 2);
  // The collector logged the refused token, escaped.
  EXPECT_TRUE(absl::StrContains(collector_->Stderr(), "unknown token")) << collector_->Stderr();
}

TEST_P(QueryTest, TriageNeedsTheResponderRoleAndKeepsWhoAndWhen) {
  Result r = Cli("alert ack i1-1 --note='looking'");
  EXPECT_EQ(r.status, 3);
  EXPECT_TRUE(absl::StrContains(r.err, "'soc' has role reader; this needs responder")) << r.err;
  r = Cli("alerts --status=open --json");
  ASSERT_EQ(r.status, 0) << r.err;
  ASSERT_EQ(Envelopes(r.out).size(), 1u) << "a refused ack changed nothing";

  const absl::Time before = absl::Now() - absl::Seconds(1);
  r = Cli("alert ack i1-1 --note='looking at it'", kResponderToken);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "acked")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "alice")) << r.out;
  r = Cli("alerts --status=open --json");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(Envelopes(r.out).empty()) << r.out;
  r = Cli("alerts --status=acked --json");
  ASSERT_EQ(r.status, 0) << r.err;
  auto es = Envelopes(r.out);
  ASSERT_EQ(es.size(), 1u);
  const v1::Triage& t = es[0].alert().triage();
  EXPECT_EQ(t.status(), "acked");
  ASSERT_EQ(t.history_size(), 1);
  EXPECT_EQ(t.history(0).by(), "alice");
  EXPECT_EQ(t.history(0).note(), "looking at it");
  EXPECT_GE(absl::FromUnixSeconds(t.history(0).time().seconds()), absl::FromUnixSeconds(absl::ToUnixSeconds(before)));

  r = Cli("alert close i1-1 --note='admin backup'", kResponderToken);
  ASSERT_EQ(r.status, 0) << r.err;
  r = Cli("alerts --status=closed");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "closed")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "i1-1")) << r.out;
  r = Cli("alerts --json");
  es = Envelopes(r.out);
  ASSERT_EQ(es.size(), 1u);
  ASSERT_EQ(es[0].alert().triage().history_size(), 2);
  EXPECT_EQ(es[0].alert().triage().history(1).status(), "closed");
  EXPECT_EQ(es[0].alert().triage().history(1).note(), "admin backup");

  r = Cli("alert reopen i1-1", kResponderToken);
  ASSERT_EQ(r.status, 0) << r.err;
  r = Cli("alerts --status=open --json");
  EXPECT_EQ(Envelopes(r.out).size(), 1u);

  r = Cli("alert ack no-such-1", kResponderToken);
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(absl::StrContains(r.err, "no alert with id no-such-1")) << r.err;
  EXPECT_EQ(Cli("alert resolve i1-1", kResponderToken).status, 2);
  EXPECT_EQ(Cli("alert ack", kResponderToken).status, 2);
  EXPECT_EQ(Cli("alerts --status=done").status, 1);
}

TEST_P(QueryTest, ClientCertificateWithARole) {
  const std::string bob = absl::StrCat(" --tls_cert=", pki_->agent_cert("bob"),
                                       " --tls_key=", pki_->agent_key("bob"));
  Result r = Cli("alert ack i1-1 --note='via certificate'" + bob, "");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "cert:bob")) << r.out;
  r = Cli("alerts --json" + bob, "");
  ASSERT_EQ(r.status, 0) << r.err;
  ASSERT_EQ(Envelopes(r.out).size(), 1u);
  // An agent's certificate is no person's: it has no role.
  r = Cli(absl::StrCat("alerts --tls_cert=", pki_->agent_cert("host-a"),
                       " --tls_key=", pki_->agent_key("host-a")),
          "");
  EXPECT_EQ(r.status, 3);
  EXPECT_TRUE(absl::StrContains(r.err, "certificate CN 'host-a' has no role")) << r.err;
  EXPECT_EQ(Cli("alerts --tls_cert=" + pki_->agent_cert("bob"), "").status, 2);  // no key
}

TEST_P(QueryTest, PrevalenceFleetWideAndPerImage) {
  Result r = Cli("prevalence --json");
  ASSERT_EQ(r.status, 0) << r.err;
  v1::PrevalenceResponse p;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &p).ok()) << r.out;
  EXPECT_EQ(p.fleet_hosts(), 2u);
  std::vector<std::string> images;
  for (const auto& i : p.images()) images.push_back(absl::StrCat(i.exe(), "=", i.hosts()));
  EXPECT_EQ(images, (std::vector<std::string>{"/usr/bin/python3=1", "/usr/bin/ssh=1",
                                              "/usr/bin/curl=2"}));
  std::vector<std::string> pairs;
  for (const auto& i : p.pairs()) pairs.push_back(absl::StrCat(i.exe(), ":", i.port(), "=", i.hosts()));
  EXPECT_EQ(pairs, (std::vector<std::string>{"/usr/bin/curl:80=1", "/usr/bin/curl:443=1",
                                             "/usr/bin/python3:8080=1", "/usr/bin/ssh:22=1"}));

  // Which hosts ran curl and talked to 198.51.100.0/24?
  r = Cli("prevalence --exe=/usr/bin/curl --remote=198.51.100.0/24 --json");
  ASSERT_EQ(r.status, 0) << r.err;
  p.Clear();
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &p).ok()) << r.out;
  ASSERT_EQ(p.hosts_size(), 1);
  EXPECT_EQ(p.hosts(0), "host-b");
  ASSERT_EQ(p.images_size(), 1);
  EXPECT_EQ(p.images(0).hosts(), 2u);

  r = Cli("prevalence");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "Fleet: 2 hosts")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "/usr/bin/python3")) << r.out;
  EXPECT_EQ(Cli("prevalence --remote=10.0.0.0/8").status, 2);
  EXPECT_EQ(Cli("prevalence --exe=/usr/bin/curl --remote=nope").status, 1);

  // The alert was stamped with the fleet's prevalence when it was stored.
  r = Cli("alerts --json");
  auto es = Envelopes(r.out);
  ASSERT_EQ(es.size(), 1u);
  const v1::FleetPrevalence& f = es[0].alert().fleet();
  EXPECT_EQ(f.image_hosts(), 1u);
  EXPECT_EQ(f.behavior_hosts(), 1u);
  EXPECT_GE(f.fleet_hosts(), 1u);  // host-b may have said hello after
  r = Cli("alerts");
  EXPECT_TRUE(absl::StrContains(r.out, "image 1/")) << r.out;
}

INSTANTIATE_TEST_SUITE_P(Backends, QueryTest, ::testing::ValuesIn(TestStoreBackends()),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

}  // namespace
}  // namespace sockwatch::testing
