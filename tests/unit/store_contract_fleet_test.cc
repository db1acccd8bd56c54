// The store contract, part 3: prevalence over a small hand-built fleet,
// with the exact numbers a SOC analyst would read, against every backend.
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "collector/store.h"
#include "gtest/gtest.h"
#include "tests/unit/store_backends.h"
#include "tests/unit/store_test_util.h"

namespace sockwatch {
namespace {

using namespace store_test;  // NOLINT: shared test fixtures

constexpr int kOut = v1::DIRECTION_OUTBOUND;
constexpr int kIn = v1::DIRECTION_INBOUND;
constexpr int kTcp = v1::PROTOCOL_TCP;
constexpr int kUdp = v1::PROTOCOL_UDP;

// A network event of host (instance "i") at kBase + sec + 0.25 s.
v1::Envelope Flow(const std::string& host, uint64_t seq, int64_t sec, const std::string& exe,
                  int protocol, const std::string& remote_ip, uint32_t remote_port,
                  const std::string& sha256 = "") {
  v1::Envelope e = Network(host, "i", seq, sec);
  v1::NetworkEvent* n = e.mutable_network();
  n->set_protocol(static_cast<v1::Protocol>(protocol));
  n->set_remote_ip(remote_ip);
  n->set_remote_port(remote_port);
  n->mutable_process()->set_exe(exe);
  n->mutable_process()->set_sha256(sha256);
  return e;
}

// Seconds after kBase of an event time (they all have .25).
std::string At(absl::Time t) { return absl::StrCat(absl::ToDoubleSeconds(t - kBase)); }

//   /usr/bin/curl   h1 (no digest) tcp/443 to 93.184.216.34 @10, 10.0.0.7 @20
//                   h2 (aaa) tcp/443 to 93.184.216.34 @30 and @33 (one fact),
//                      udp/53 to 10.0.0.53 @35
//                   h3 (bbb) tcp/443 to 10.1.1.1 @40, 2001:db8::1 @45,
//                      tcp/80 to 10.1.1.2 @46, tcp/1000 to 10.1.1.3 @47
//   /usr/sbin/sshd  h1 listens on tcp/22 @15; h4 (ddd) accepts on tcp/22
//                      from 192.168.1.5 @60
//   /usr/bin/wget   h2 tcp/80 to 10.0.0.80 @36
//   /tmp/x          h3 alert (image ccc) tcp/4444 to 10.9.9.9 @50
// and events that are no facts: a flow end, an exec, an unknown process.
class StoreContractFleetTest : public StoreBackendTest {
 protected:
  void SetUp() override {
    StoreBackendTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    v1::Envelope listen = Flow("h1", 3, 15, "/usr/sbin/sshd", kTcp, "", 0);
    listen.mutable_network()->set_kind(v1::NETWORK_KIND_LISTEN);
    listen.mutable_network()->set_direction(v1::DIRECTION_INBOUND);
    listen.mutable_network()->set_local_port(22);
    v1::Envelope accept = Flow("h4", 1, 60, "/usr/sbin/sshd", kTcp, "192.168.1.5", 50000, "ddd");
    accept.mutable_network()->set_kind(v1::NETWORK_KIND_ACCEPT);
    accept.mutable_network()->set_direction(v1::DIRECTION_INBOUND);
    accept.mutable_network()->set_local_port(22);
    v1::Envelope alert;
    alert.set_host_id("h3");
    alert.set_agent_instance("i");
    alert.set_seq(6);
    SetTime(alert, 50);
    alert.mutable_alert()->set_id("h3/i/6");
    alert.mutable_alert()->mutable_image()->set_sha256("ccc");
    *alert.mutable_alert()->mutable_network() =
        Flow("h3", 6, 50, "/tmp/x", kTcp, "10.9.9.9", 4444).network();
    v1::Envelope flow_end = Flow("h4", 2, 61, "/usr/bin/curl", kTcp, "1.2.3.4", 443);
    flow_end.mutable_network()->set_kind(v1::NETWORK_KIND_FLOW_END);
    const std::vector<v1::Envelope> fleet = {
        Flow("h1", 1, 10, "/usr/bin/curl", kTcp, "93.184.216.34", 443),
        Flow("h1", 2, 20, "/usr/bin/curl", kTcp, "10.0.0.7", 443),
        listen,
        Flow("h2", 1, 30, "/usr/bin/curl", kTcp, "93.184.216.34", 443, "aaa"),
        Flow("h2", 2, 33, "/usr/bin/curl", kTcp, "93.184.216.34", 443, "aaa"),
        Flow("h2", 3, 35, "/usr/bin/curl", kUdp, "10.0.0.53", 53, "aaa"),
        Flow("h2", 4, 36, "/usr/bin/wget", kTcp, "10.0.0.80", 80),
        Flow("h3", 1, 40, "/usr/bin/curl", kTcp, "10.1.1.1", 443, "bbb"),
        Flow("h3", 2, 45, "/usr/bin/curl", kTcp, "2001:db8::1", 443, "bbb"),
        Flow("h3", 3, 46, "/usr/bin/curl", kTcp, "10.1.1.2", 80, "bbb"),
        Flow("h3", 4, 47, "/usr/bin/curl", kTcp, "10.1.1.3", 1000, "bbb"),
        alert,
        accept,
        flow_end,
        Exec("h4", "i", 3, 62),
        Flow("h4", 4, 63, "", kUdp, "8.8.8.8", 53),
    };
    // In two calls, so facts of one image come from several writes; the
    // second call is replayed whole.
    const std::vector<v1::Envelope> first(fleet.begin(), fleet.begin() + 7);
    const std::vector<v1::Envelope> second(fleet.begin() + 7, fleet.end());
    Write(first);
    Write(second);
    EXPECT_EQ(Write(second).duplicates, second.size());
  }

  uint64_t Hosts(const PrevalenceQuery& q) {
    absl::StatusOr<uint64_t> n = store().CountFactHosts(q);
    EXPECT_TRUE(n.ok()) << n.status();
    return n.ok() ? *n : 999;
  }
  std::string HostList(const PrevalenceQuery& q, size_t limit = 0) {
    absl::StatusOr<std::vector<std::string>> hosts = store().FactHosts(q, limit);
    EXPECT_TRUE(hosts.ok()) << hosts.status();
    return hosts.ok() ? absl::StrJoin(*hosts, ",") : "<error>";
  }
  // "exe sha256 sha256_count hosts first last" per image, in order.
  Strings Images(const PrevalenceQuery& q, size_t limit = 0) {
    absl::StatusOr<std::vector<ImageCount>> images = store().RarestImages(q, limit);
    EXPECT_TRUE(images.ok()) << images.status();
    Strings out;
    for (const ImageCount& c : images.ok() ? *images : std::vector<ImageCount>{})
      out.push_back(absl::StrCat(c.exe, " ", c.sha256.empty() ? "-" : c.sha256, " ", c.sha256_count,
                                 " ", c.hosts, " ", At(c.first_seen), " ", At(c.last_seen)));
    return out;
  }
  // "exe direction protocol port hosts first last" per pair, in order.
  Strings Pairs(const PrevalenceQuery& q, size_t limit = 0) {
    absl::StatusOr<std::vector<PairCount>> pairs = store().RarestPairs(q, limit);
    EXPECT_TRUE(pairs.ok()) << pairs.status();
    Strings out;
    for (const PairCount& c : pairs.ok() ? *pairs : std::vector<PairCount>{})
      out.push_back(absl::StrCat(c.exe, " ", c.direction, " ", c.protocol, " ", c.port, " ",
                                 c.hosts, " ", At(c.first_seen), " ", At(c.last_seen)));
    return out;
  }
};

PrevalenceQuery Exe(const std::string& exe) {
  PrevalenceQuery q;
  q.exe = exe;
  return q;
}

TEST_P(StoreContractFleetTest, CountsAndListsHosts) {
  EXPECT_EQ(Hosts({}), 4u);
  EXPECT_EQ(HostList({}), "h1,h2,h3,h4");
  EXPECT_EQ(Hosts(Exe("/usr/bin/curl")), 3u);
  EXPECT_EQ(HostList(Exe("/usr/bin/curl")), "h1,h2,h3");
  EXPECT_EQ(HostList(Exe("/usr/bin/curl"), 2), "h1,h2");
  PrevalenceQuery q = Exe("/usr/bin/curl");
  q.protocol = kUdp;
  EXPECT_EQ(HostList(q), "h2");
  q.protocol = kTcp;
  q.direction = kOut;
  q.port = 443;
  EXPECT_EQ(Hosts(q), 3u);
  q.port = 80;
  EXPECT_EQ(HostList(q), "h3");                         // wget's port 80 is another image
  EXPECT_EQ(HostList(Exe("/usr/sbin/sshd")), "h1,h4");  // a listener counts
  q = {};
  q.sha256 = "aaa";
  EXPECT_EQ(HostList(q), "h2");
  q.sha256 = "ccc";  // an alert's image digest
  EXPECT_EQ(HostList(q), "h3");
  q = Exe("/usr/bin/curl");
  q.exclude_host = "h1";
  EXPECT_EQ(Hosts(q), 2u);
  EXPECT_EQ(HostList(q), "h2,h3");
  EXPECT_EQ(Hosts(Exe("/usr/bin/nope")), 0u);
}

TEST_P(StoreContractFleetTest, FiltersByRemoteAddressOrNetwork) {
  PrevalenceQuery q;
  q.remote = "10.0.0.0/8";  // h1 .0.7, h2 .0.53 and .0.80, h3 .1.1.x and the alert's 10.9.9.9
  EXPECT_EQ(HostList(q), "h1,h2,h3");
  EXPECT_EQ(Hosts(q), 3u);
  EXPECT_EQ(HostList(q, 1), "h1");
  q.remote = "10.0.0.0/24";
  EXPECT_EQ(HostList(q), "h1,h2");
  q.exe = "/usr/bin/wget";
  EXPECT_EQ(HostList(q), "h2");
  q = {};
  q.remote = "93.184.216.34";
  EXPECT_EQ(Hosts(q), 2u);
  q.remote = "2001:db8::/32";
  EXPECT_EQ(HostList(q), "h3");
  q.remote = "192.168.1.5/32";
  EXPECT_EQ(HostList(q), "h4");
  q.remote = "0.0.0.0/0";  // every IPv4 address; the listener has none
  EXPECT_EQ(HostList(q), "h1,h2,h3,h4");
  q.exe = "/usr/sbin/sshd";
  EXPECT_EQ(HostList(q), "h4");
  q.remote = "10.0.0.0/33";
  EXPECT_EQ(store().CountFactHosts(q).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store().FactHosts(q, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(StoreContractFleetTest, RarestImages) {
  const Strings all = {
      "/tmp/x ccc 1 1 50.25 50.25",
      "/usr/bin/wget - 0 1 36.25 36.25",
      "/usr/sbin/sshd ddd 1 2 15.25 60.25",
      "/usr/bin/curl bbb 2 3 10.25 47.25",
  };
  EXPECT_EQ(Images({}), all);
  EXPECT_EQ(Images({}, 2), Strings(all.begin(), all.begin() + 2));
  // Behaviour filters do not apply to images.
  PrevalenceQuery q;
  q.direction = kIn;
  q.protocol = kUdp;
  q.port = 9;
  q.remote = "192.0.2.0/24";
  EXPECT_EQ(Images(q), all);
  q = {};
  q.exclude_host = "h3";
  EXPECT_EQ(Images(q),
            (Strings{"/usr/bin/wget - 0 1 36.25 36.25", "/usr/bin/curl aaa 1 2 10.25 35.25",
                     "/usr/sbin/sshd ddd 1 2 15.25 60.25"}));
  q = {};
  q.sha256 = "aaa";
  EXPECT_EQ(Images(q), (Strings{"/usr/bin/curl aaa 1 1 30.25 35.25"}));
  EXPECT_EQ(Images(Exe("/usr/sbin/sshd")), (Strings{"/usr/sbin/sshd ddd 1 2 15.25 60.25"}));
}

TEST_P(StoreContractFleetTest, RarestPairs) {
  const std::string out = absl::StrCat(" ", kOut, " "), in = absl::StrCat(" ", kIn, " ");
  const std::string tcp = absl::StrCat(kTcp, " "), udp = absl::StrCat(kUdp, " ");
  // Ties: exe, then direction, protocol, and port as a number (80 < 1000).
  const Strings all = {
      "/tmp/x" + out + tcp + "4444 1 50.25 50.25",
      "/usr/bin/curl" + out + tcp + "80 1 46.25 46.25",
      "/usr/bin/curl" + out + tcp + "1000 1 47.25 47.25",
      "/usr/bin/curl" + out + udp + "53 1 35.25 35.25",
      "/usr/bin/wget" + out + tcp + "80 1 36.25 36.25",
      "/usr/sbin/sshd" + in + tcp + "22 2 15.25 60.25",
      "/usr/bin/curl" + out + tcp + "443 3 10.25 45.25",
  };
  EXPECT_EQ(Pairs({}), all);
  EXPECT_EQ(Pairs({}, 3), Strings(all.begin(), all.begin() + 3));
  PrevalenceQuery q;
  q.remote = "192.0.2.0/24";  // ignored by pairs
  EXPECT_EQ(Pairs(q), all);
  q = Exe("/usr/bin/curl");
  q.protocol = kTcp;
  EXPECT_EQ(Pairs(q), (Strings{"/usr/bin/curl" + out + tcp + "80 1 46.25 46.25",
                               "/usr/bin/curl" + out + tcp + "1000 1 47.25 47.25",
                               "/usr/bin/curl" + out + tcp + "443 3 10.25 45.25"}));
  q.port = 443;
  q.exclude_host = "h2";
  EXPECT_EQ(Pairs(q), (Strings{"/usr/bin/curl" + out + tcp + "443 2 10.25 45.25"}));
  q = {};
  q.direction = kIn;
  EXPECT_EQ(Pairs(q), (Strings{"/usr/sbin/sshd" + in + tcp + "22 2 15.25 60.25"}));
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreContractFleetTest, ::testing::ValuesIn(StoreBackends()),
                         BackendName);

}  // namespace
}  // namespace sockwatch
