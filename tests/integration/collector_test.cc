// The collector against clients that misbehave, and under the load of a
// fleet: 200 simulated agents (the agent's real spool and exporter) at once.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "agent/exporter.h"
#include "agent/spool.h"
#include "agent/transport.h"
#include "collector/store.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "sockwatch/v1/ingest.grpc.pb.h"
#include "tests/integration/collector_harness.h"
#include "tests/integration/harness.h"

namespace sockwatch::testing {
namespace {

class CollectorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { pki_ = new TestPki({"host-a", "host-b"}); }
  static void TearDownTestSuite() { delete pki_; }
  void SetUp() override {
    ASSERT_TRUE(pki_->ok());
    char tmpl[] = "/tmp/sw_collector_XXXXXX";
    dir_ = mkdtemp(tmpl);
    db_ = dir_ + "/c.db";
    collector_ = CollectorProcess::Start(FreePort(), db_, pki_->CollectorFlags());
    ASSERT_NE(collector_, nullptr);
  }
  void TearDown() override {
    collector_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::shared_ptr<grpc::ChannelCredentials> Creds(const std::string& host) {
    auto c = ClientTls({pki_->ca(), pki_->agent_cert(host), pki_->agent_key(host)});
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *c : nullptr;
  }

  static v1::AgentMessage Hello(const std::string& host) {
    v1::AgentMessage m;
    m.mutable_hello()->set_host_id(host);
    m.mutable_hello()->set_agent_instance("inst1");
    return m;
  }
  static v1::AgentMessage Batch(const std::string& host, uint64_t first, int n,
                                uint64_t spool_seq) {
    v1::AgentMessage m;
    for (int i = 0; i < n; ++i) *m.mutable_batch()->add_envelopes() = SyntheticNetworkEnvelope(host, "inst1", first + i);
    m.mutable_batch()->set_spool_seq(spool_seq);
    return m;
  }
  uint64_t Stored(const std::string& host) {
    auto store = OpenStore("sqlite:" + db_);
    if (!store.ok()) return ~0ull;
    EventQuery q;
    q.host_id = host;
    auto n = (*store)->CountEvents(q);
    return n.ok() ? *n : ~0ull;
  }

  static TestPki* pki_;
  std::string dir_, db_;
  std::unique_ptr<CollectorProcess> collector_;
};

TestPki* CollectorTest::pki_ = nullptr;

TEST_F(CollectorTest, StoresAGoodStreamAndAcknowledgesIt) {
  int acks = 0;
  grpc::Status s = Exchange(Creds("host-a"), collector_->address(),
                            {Hello("host-a"), Batch("host-a", 1, 10, 10), Batch("host-a", 11, 5, 15)},
                            &acks);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_GE(acks, 1);
  EXPECT_EQ(Stored("host-a"), 15u);
  // A replay of the same envelopes stores nothing new.
  s = Exchange(Creds("host-a"), collector_->address(), {Hello("host-a"), Batch("host-a", 1, 15, 15)});
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(Stored("host-a"), 15u);
}

TEST_F(CollectorTest, StopsCleanlyOnSigtermAndReportsWhatItStored) {
  ASSERT_TRUE(Exchange(Creds("host-a"), collector_->address(),
                       {Hello("host-a"), Batch("host-a", 1, 7, 7)})
                  .ok());
  EXPECT_EQ(collector_->Stop(SIGTERM), 0) << collector_->Stderr();
  EXPECT_TRUE(absl::StrContains(collector_->Stderr(), "stored 7, duplicates 0")) << collector_->Stderr();
  EXPECT_EQ(Stored("host-a"), 7u);
}

TEST_F(CollectorTest, RefusesAnAgentWritingAsAnotherHost) {
  grpc::Status s = Exchange(Creds("host-a"), collector_->address(),
                            {Hello("host-b"), Batch("host-b", 1, 3, 3)});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "certificate is for host 'host-a'")) << s.error_message();
  // An honest hello, then envelopes of another host.
  s = Exchange(Creds("host-a"), collector_->address(), {Hello("host-a"), Batch("host-b", 1, 3, 3)});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Stored("host-b"), 0u);
  EXPECT_EQ(Stored("host-a"), 0u);
  EXPECT_TRUE(absl::StrContains(collector_->Stderr(), "refused")) << collector_->Stderr();
}

TEST_F(CollectorTest, RefusesClientsWithoutAValidCertificate) {
  // No client certificate.
  grpc::SslCredentialsOptions no_cert;
  no_cert.pem_root_certs = *ReadPem(pki_->ca(), "tls_ca");
  grpc::Status s = Exchange(grpc::SslCredentials(no_cert), collector_->address(),
                            {Hello("host-a"), Batch("host-a", 1, 3, 3)});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  // A certificate from another CA, for the right host name.
  TestPki foreign({"host-a"});
  ASSERT_TRUE(foreign.ok());
  auto creds = ClientTls({pki_->ca(), foreign.agent_cert("host-a"), foreign.agent_key("host-a")});
  ASSERT_TRUE(creds.ok());
  s = Exchange(*creds, collector_->address(), {Hello("host-a"), Batch("host-a", 1, 3, 3)});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  // Plaintext to an mTLS collector.
  s = Exchange(grpc::InsecureChannelCredentials(), collector_->address(), {Hello("host-a")});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  EXPECT_EQ(Stored("host-a"), 0u);
}

TEST_F(CollectorTest, RefusesMalformedAndOversizedMessages) {
  struct Case {
    const char* what;
    std::vector<v1::AgentMessage> msgs;
    grpc::StatusCode code;
    const char* message;
  };
  v1::AgentMessage seq0 = Batch("host-a", 0, 1, 1);
  v1::AgentMessage bad_instance = Batch("host-a", 1, 1, 1);
  bad_instance.mutable_batch()->mutable_envelopes(0)->set_agent_instance("a\x1b[2Jb");
  v1::AgentMessage bad_hello = Hello("host-a");
  bad_hello.mutable_hello()->set_agent_instance("");
  v1::AgentMessage empty;
  v1::AgentMessage huge = Batch("host-a", 1, 1, 1);
  huge.mutable_batch()->mutable_envelopes(0)->mutable_network()->mutable_process()->add_argv(
      std::string(17 << 20, 'x'));
  const std::vector<Case> cases = {
      {"batch before hello", {Batch("host-a", 1, 1, 1)}, grpc::StatusCode::INVALID_ARGUMENT, "batch before hello"},
      {"seq 0", {Hello("host-a"), seq0}, grpc::StatusCode::INVALID_ARGUMENT, "seq is 0"},
      {"control bytes", {Hello("host-a"), bad_instance}, grpc::StatusCode::INVALID_ARGUMENT, "printable ASCII"},
      {"empty instance", {bad_hello}, grpc::StatusCode::INVALID_ARGUMENT, "agent_instance is empty"},
      {"empty message", {Hello("host-a"), empty}, grpc::StatusCode::INVALID_ARGUMENT, "neither hello nor batch"},
      {"second hello", {Hello("host-a"), Hello("host-a")}, grpc::StatusCode::INVALID_ARGUMENT, "second hello"},
      {"spool_seq backwards", {Hello("host-a"), Batch("host-a", 1, 1, 5), Batch("host-a", 2, 1, 4)},
       grpc::StatusCode::INVALID_ARGUMENT, "not above the previous"},
      {"too many envelopes", {Hello("host-a"), Batch("host-a", 1, kMaxBatchEnvelopes + 1, 1)},
       grpc::StatusCode::RESOURCE_EXHAUSTED, "envelopes (max"},
      {"message over 16 MiB", {Hello("host-a"), huge}, grpc::StatusCode::RESOURCE_EXHAUSTED, ""},
  };
  for (const Case& c : cases) {
    grpc::Status s = Exchange(Creds("host-a"), collector_->address(), c.msgs);
    EXPECT_EQ(s.error_code(), c.code) << c.what << ": " << s.error_message();
    EXPECT_TRUE(absl::StrContains(s.error_message(), c.message)) << c.what << ": " << s.error_message();
  }
  // The batch before a refused one in the same stream was stored; the refused one was not.
  EXPECT_EQ(Stored("host-a"), 1u);
  // The collector is unharmed: a good stream still works.
  grpc::Status s = Exchange(Creds("host-a"), collector_->address(), {Hello("host-a"), Batch("host-a", 100, 4, 4)});
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(Stored("host-a"), 5u);
  // Nothing of a control sequence reached the log raw.
  EXPECT_FALSE(absl::StrContains(collector_->Stderr(), "\x1b")) << collector_->Stderr();
}

// An envelope with a sound key whose content the collector cannot store (an
// event kind newer than the collector, no time) is stored as a loss under
// its key: the stream goes on instead of being refused, which would make
// the agent resend that batch forever and hold back everything after it.
TEST_F(CollectorTest, StoresUnstorableEnvelopesAsLossesAndGoesOn) {
  v1::AgentMessage first = Batch("host-a", 1, 3, 3);
  first.mutable_batch()->mutable_envelopes(0)->clear_network();
  first.mutable_batch()->mutable_envelopes(2)->clear_time();
  int acks = 0;
  grpc::Status s = Exchange(Creds("host-a"), collector_->address(),
                            {Hello("host-a"), first, Batch("host-a", 4, 2, 5)}, &acks);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_GE(acks, 1);
  EXPECT_EQ(Stored("host-a"), 5u);
  auto store = OpenStore("sqlite:" + db_);
  ASSERT_TRUE(store.ok()) << store.status();
  EventQuery q;
  q.host_id = "host-a";
  q.kind = "loss";
  auto losses = (*store)->Events(q);
  ASSERT_TRUE(losses.ok()) << losses.status();
  ASSERT_EQ(losses->size(), 2u);
  std::vector<std::string> got;
  for (const v1::Envelope& e : *losses)
    got.push_back(absl::StrCat(e.seq(), " ", e.loss().reason(), " ", e.loss().count()));
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<std::string>{"1 collector_refused_unknown_event 1",
                                           "3 collector_refused_no_time 1"}));
  // A replay stores nothing twice: the losses kept the envelopes' keys.
  s = Exchange(Creds("host-a"), collector_->address(), {Hello("host-a"), first});
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(Stored("host-a"), 5u);
  EXPECT_EQ(collector_->Stop(SIGTERM), 0) << collector_->Stderr();
  EXPECT_TRUE(absl::StrContains(collector_->Stderr(),
                                "the first: envelope 0 (seq 1): no event this collector knows"))
      << collector_->Stderr();
  EXPECT_TRUE(absl::StrContains(collector_->Stderr(), "(stored as losses 4)")) << collector_->Stderr();
  EXPECT_TRUE(absl::StrContains(collector_->Stderr(), "stored 5, duplicates 3"))
      << collector_->Stderr();
}

TEST(CollectorFlagsTest, PlaintextOnlyOnLoopback) {
  EXPECT_EQ(testing::Run(absl::StrCat(CollectorPath(), " --listen=0.0.0.0:7999 --insecure --store=sqlite:/tmp/x.db 2>&1 | grep -q 'allowed only on loopback'")), 0);
  EXPECT_EQ(testing::Run(absl::StrCat(CollectorPath(), " --listen=127.0.0.1:7999 2>&1 | grep -q 'tls_ca is required'")), 0);
  EXPECT_EQ(testing::Run(absl::StrCat(CollectorPath(), " --listen=127.0.0.1:7999 --insecure --store=mysql:x 2>&1 | grep -q 'store'")), 0);
}

// 200 agents, each with its own spool, certificate and exporter, stream at
// once to one collector; everything is stored once, in bounded time.
TEST(CollectorLoadTest, TwoHundredAgentsAtOnce) {
  constexpr int kAgents = 200;
  constexpr int kEvents = 1000;
  std::vector<std::string> hosts;
  for (int i = 0; i < kAgents; ++i) hosts.push_back(absl::StrFormat("load-%03d", i));
  const absl::Time setup = absl::Now();
  TestPki pki(hosts);
  ASSERT_TRUE(pki.ok());
  printf("[ load ] %d certificates made in %.1f s\n", kAgents, absl::ToDoubleSeconds(absl::Now() - setup));
  char tmpl[] = "/tmp/sw_load_XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  auto collector = CollectorProcess::Start(FreePort(), dir + "/c.db", pki.CollectorFlags());
  ASSERT_NE(collector, nullptr);

  FleetOptions fo;
  fo.address = collector->address();
  fo.pki = &pki;
  fo.hosts = hosts;
  fo.events = kEvents;
  fo.dir = dir;
  // Bounded: everything acknowledged within 4 minutes (about 5 s here in an
  // optimised build; the sanitizer build is several times slower).
  fo.timeout = absl::Minutes(4);
  const FleetRun run = StreamFleet(fo);
  ASSERT_EQ(run.error, "");
  ASSERT_EQ(run.agents_done, kAgents) << "agents fully acknowledged in time\n" << collector->Stderr();
  const double secs = absl::ToDoubleSeconds(run.took);
  printf("[ load ] %d agents x %d events over mTLS: %.1f s, %.0f events/s; ack latency %s (%zu batches)\n",
         kAgents, kEvents, secs, kAgents * kEvents / secs, LatencySummary(run.ack_latencies).c_str(),
         run.ack_latencies.size());
  ASSERT_FALSE(run.ack_latencies.empty());

  auto store = OpenStore("sqlite:" + dir + "/c.db");
  ASSERT_TRUE(store.ok());
  EventQuery q;
  auto total = (*store)->CountEvents(q);
  ASSERT_TRUE(total.ok());
  EXPECT_EQ(*total, static_cast<uint64_t>(kAgents * kEvents));
  for (int i : {0, 99, 199}) {
    q.host_id = hosts[i];
    EXPECT_EQ(*(*store)->CountEvents(q), static_cast<uint64_t>(kEvents)) << hosts[i];
  }
  auto hosts_stored = (*store)->Hosts();
  ASSERT_TRUE(hosts_stored.ok());
  EXPECT_EQ(hosts_stored->size(), static_cast<size_t>(kAgents));
  collector.reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace sockwatch::testing
