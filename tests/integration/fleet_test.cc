// End to end on every store backend: two real agents (hosts "host-a" and
// "host-b") stream to a collector over mTLS while a process connects
// between two network namespaces; the `sockwatch` CLI then finds its events,
// its place in each host's history, its alerts with fleet prevalence, and
// its prevalence across the fleet, by path and by sha256.
//
// Both agents run on this one kernel, so both see the same traffic: that
// makes each "host" report the same process, which is what prevalence
// across two hosts needs.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "sockwatch/v1/query.pb.h"
#include "tests/integration/collector_harness.h"
#include "tests/integration/harness.h"

namespace sockwatch::testing {
namespace {

constexpr char kToken[] = "fleet-reader-token-0123456789";

class FleetTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(net_.ok()) << "could not create the network namespaces";
    ASSERT_TRUE(pki_.ok()) << "make-certs.sh failed";
    char tmpl[] = "/tmp/sw_fleet_XXXXXX";
    dir_ = mkdtemp(tmpl);
    std::ofstream(dir_ + "/tokens") << "reader " << kToken << " soc\n";
    // A copy of the test peer under a path of its own: the image to follow.
    // Not under /tmp (world-writable): that would make it a suspicious image.
    char img[] = "/root/sw_fleet_img_XXXXXX";
    image_dir_ = mkdtemp(img);
    image_ = image_dir_ + "/uploader";
    std::filesystem::copy_file(TestPeerPath(), image_);
    chmod(image_.c_str(), 0755);
    absl::StatusOr<std::string> store = TestStoreUrl(GetParam(), dir_ + "/c.db");
    ASSERT_TRUE(store.ok()) << store.status();
    query_port_ = FreePort();
    std::vector<std::string> flags = pki_.CollectorFlags();
    flags.push_back(absl::StrCat("--query_listen=127.0.0.1:", query_port_));
    flags.push_back("--tokens=" + dir_ + "/tokens");
    collector_ = CollectorProcess::Start(FreePort(), *store, flags);
    ASSERT_NE(collector_, nullptr);
  }
  void TearDown() override {
    agents_.clear();
    collector_.reset();
    std::filesystem::remove_all(dir_);
    std::filesystem::remove_all(image_dir_);
  }

  AgentProcess* StartAgent(const std::string& host) {
    const std::string state = dir_ + "/state-" + host;
    std::filesystem::create_directories(state);
    std::vector<std::string> flags = pki_.AgentFlags(host);
    flags.push_back("--collector=" + collector_->address());
    flags.push_back("--state_dir=" + state);
    flags.push_back("--learning_period=0s");  // every new image alerts at once
    flags.push_back("--reconnect_max=1s");
    agents_.push_back(AgentProcess::Start(flags));
    return agents_.back().get();
  }

  using Result = CliResult;
  Result Cli(const std::string& args) { return RunCli(kToken, query_port_, pki_.ca(), dir_, args); }
  static std::vector<v1::Envelope> Envelopes(const std::string& json_lines) {
    return JsonEnvelopes(json_lines);
  }
  // Runs the CLI until its --json output has at least n envelopes.
  std::vector<v1::Envelope> WaitForRows(const std::string& args, size_t n) {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    std::vector<v1::Envelope> rows;
    while (absl::Now() < deadline) {
      Result r = Cli(args + " --json");
      EXPECT_EQ(r.status, 0) << r.err;
      rows = Envelopes(r.out);
      if (rows.size() >= n) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
    return rows;
  }
  std::unique_ptr<Child> Connect(int port) {
    auto c = Child::Spawn(net_.client_ns, {image_, "tcp-client", net_.server_v4, std::to_string(port)});
    c->Wait();
    return c;
  }

  NetPair net_;
  TestPki pki_{{"host-a", "host-b"}};
  std::string dir_, image_dir_, image_;
  int query_port_ = 0;
  std::unique_ptr<CollectorProcess> collector_;
  std::vector<std::unique_ptr<AgentProcess>> agents_;
};

TEST_P(FleetTest, TwoHostsStreamAndEveryCommandFindsTheProcess) {
  AgentProcess* a = StartAgent("host-a");
  ASSERT_NE(a, nullptr);
  AgentProcess* b = StartAgent("host-b");
  ASSERT_NE(b, nullptr);
  auto server = Child::Spawn(net_.server_ns, {TestPeerPath(), "tcp-server", net_.server_v4, "7301"});
  ASSERT_EQ(server->ReadLine(), "ready");
  auto first = Connect(7301);
  ASSERT_TRUE(a->WaitFor(NetEvent(v1::NETWORK_KIND_CONNECT, first->pid)).has_value()) << a->Stderr();
  ASSERT_TRUE(b->WaitFor(NetEvent(v1::NETWORK_KIND_CONNECT, first->pid)).has_value()) << b->Stderr();
  server->Wait();
  // Hashing is in the background: a later process of the same image gets
  // its digest on its network events.
  const std::string sha = Capture("sha256sum " + image_).substr(0, 64);
  ASSERT_EQ(sha.find_first_not_of("0123456789abcdef"), std::string::npos) << sha;
  std::optional<v1::Envelope> hashed;
  for (int i = 0; i < 20 && !hashed; ++i) {
    auto again = Connect(7302);  // refused: a network act all the same
    auto e = a->WaitFor(NetEvent(v1::NETWORK_KIND_CONNECT, again->pid));
    ASSERT_TRUE(e.has_value()) << a->Stderr();
    if (!e->network().process().sha256().empty()) hashed = e;
    else std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  ASSERT_TRUE(hashed.has_value()) << "no network event carried the image's sha256";
  EXPECT_EQ(hashed->network().process().sha256(), sha);

  // events: each host's copy of the connect, attributed to the image.
  const std::string by_image = absl::StrCat("events --kind=network --exe=", image_, " --port=7301");
  for (const char* host : {"host-a", "host-b"}) {
    SCOPED_TRACE(host);
    auto rows = WaitForRows(absl::StrCat(by_image, " --host=", host), 1);
    ASSERT_FALSE(rows.empty()) << collector_->Stderr();
    EXPECT_EQ(rows[0].network().process().pid(), static_cast<uint32_t>(first->pid));
    EXPECT_EQ(rows[0].network().remote_ip(), net_.server_v4);
    EXPECT_EQ(rows[0].network().process().argv(1), "tcp-client");
  }
  // history: the process with its command line, and whom it talked to.
  Result r = Cli("history --host=host-a");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, image_ + " tcp-client " + net_.server_v4 + " 7301")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, net_.server_v4 + ":7301")) << r.out;

  // alerts: the new image's first network use, stamped with fleet prevalence.
  auto alerts = WaitForRows(absl::StrCat("alerts --host=host-b --exe=", image_), 1);
  ASSERT_FALSE(alerts.empty()) << b->Stderr();
  const v1::Alert& alert = alerts.back().alert();  // the oldest
  EXPECT_EQ(alert.rule(), "first_network_use");
  EXPECT_GT(alert.ancestors_size(), 0);
  EXPECT_GE(alert.fleet().image_hosts(), 1u);
  EXPECT_EQ(alert.fleet().fleet_hosts(), 2u);
  EXPECT_EQ(alert.triage().status(), "open");

  // prevalence: both hosts ran the image and talked to the server, by path
  // and by digest.
  v1::PrevalenceResponse p;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  do {
    r = Cli(absl::StrCat("prevalence --json --exe=", image_, " --remote=", net_.server_v4));
    ASSERT_EQ(r.status, 0) << r.err;
    p.Clear();
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &p).ok()) << r.out;
  } while (p.hosts_size() < 2 && absl::Now() < deadline &&
           (std::this_thread::sleep_for(std::chrono::milliseconds(300)), true));
  EXPECT_EQ(p.fleet_hosts(), 2u);
  ASSERT_EQ(p.images_size(), 1);
  EXPECT_EQ(p.images(0).hosts(), 2u);
  EXPECT_EQ(p.images(0).sha256(), sha);
  EXPECT_EQ(std::vector<std::string>(p.hosts().begin(), p.hosts().end()),
            (std::vector<std::string>{"host-a", "host-b"}));
  r = Cli(absl::StrCat("prevalence --json --sha256=", sha));
  ASSERT_EQ(r.status, 0) << r.err;
  p.Clear();
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &p).ok()) << r.out;
  // The same bytes under two paths: the copy, and the server's test peer
  // (whose accepts may carry the digest too).
  std::vector<std::string> paths;
  for (const v1::ImagePrevalence& i : p.images()) paths.push_back(i.exe());
  EXPECT_TRUE(std::find(paths.begin(), paths.end(), image_) != paths.end()) << r.out;
  for (const std::string& path : paths)
    EXPECT_TRUE(path == image_ || path == TestPeerPath()) << path;

  // hosts: both agents with their kernel and coverage.
  r = Cli("hosts");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "host-a")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "host-b")) << r.out;
  for (auto& agent : agents_) EXPECT_EQ(agent->Stop(), 0) << agent->Stderr();
}

INSTANTIATE_TEST_SUITE_P(Backends, FleetTest, ::testing::ValuesIn(TestStoreBackends()),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

}  // namespace
}  // namespace sockwatch::testing
