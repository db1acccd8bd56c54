// Fleet prevalence on a synthetic fleet of 1,000 hosts, against every store
// backend: which images used the network on how many hosts, the rarest
// (image, direction, protocol, port) pairs, "which hosts ran this sha256 and
// talked to this address", and the prevalence the collector stamps on
// incoming alerts (StoreWriter).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "collector/writer.h"
#include "gtest/gtest.h"
#include "tests/unit/store_backends.h"
#include "tests/unit/store_test_util.h"

namespace sockwatch::store_test {
namespace {

constexpr int kHosts = 1000;
const std::string kCurlSha(64, 'a');
const std::string kDropperSha(64, 'b');
const std::string kOtherDropperSha(64, 'c');

std::string HostId(int i) { return absl::StrFormat("host-%04d", i); }

// One network event of host i.
v1::Envelope Net(int host, uint64_t seq, int64_t sec, const std::string& exe,
                 const std::string& sha, v1::Direction dir, v1::Protocol proto, uint32_t port,
                 const std::string& remote, v1::NetworkKind kind = v1::NETWORK_KIND_CONNECT) {
  v1::Envelope e = Network(HostId(host), "inst", seq, sec);
  v1::NetworkEvent* n = e.mutable_network();
  n->set_kind(kind);
  n->set_direction(dir);
  n->set_protocol(proto);
  n->set_remote_ip(remote);
  if (dir == v1::DIRECTION_INBOUND) {
    n->set_local_port(port);
    n->set_remote_port(50000 + static_cast<uint32_t>(seq % 1000));  // the client's
  } else {
    n->set_remote_port(port);
  }
  n->mutable_process()->set_exe(exe);
  n->mutable_process()->set_sha256(sha);
  return e;
}

// The fleet (comments give the expected prevalence):
//   /usr/bin/curl      every host, out tcp 443; first event without sha256
//   /usr/sbin/sshd     even hosts (500), in tcp 22, clients vary
//   /opt/rare/agent    hosts 7, 107, ..., 907 (10), out tcp 4444 to 203.0.113.(i % 7)
//   /tmp/x             host 999 (sha b, udp 53 to 198.51.100.9) and host 1
//                      (sha c, tcp 8080 to 10.1.2.3): 2 hosts, 2 digests
//   /usr/bin/flowonly  only flow ends (5 hosts): not a fact, never counted
class StoreFleetTest : public StoreBackendTest {
 protected:
  void SetUp() override {
    StoreBackendTest::SetUp();
    if (HasFatalFailure()) return;
    std::vector<v1::Envelope> batch;
    for (int i = 0; i < kHosts; ++i) {
      v1::Hello hello;
      hello.set_host_id(HostId(i));
      hello.set_agent_instance("inst");
      ASSERT_TRUE(store().UpsertHost(hello, kBase).ok());
      uint64_t seq = 0;
      const int64_t t = i;  // host i's events start i seconds after kBase
      batch.push_back(Net(i, ++seq, t, "/usr/bin/curl", "", v1::DIRECTION_OUTBOUND,
                          v1::PROTOCOL_TCP, 443, "93.184.216.34"));
      batch.push_back(Net(i, ++seq, t + 1, "/usr/bin/curl", kCurlSha, v1::DIRECTION_OUTBOUND,
                          v1::PROTOCOL_TCP, 443, "93.184.216.34"));
      if (i % 2 == 0) {
        for (int c = 0; c < 3; ++c)
          batch.push_back(Net(i, ++seq, t + 2, "/usr/sbin/sshd", "", v1::DIRECTION_INBOUND,
                              v1::PROTOCOL_TCP, 22, absl::StrCat("192.0.2.", c + i % 50)));
      }
      if (i % 100 == 7)
        batch.push_back(Net(i, ++seq, t + 3, "/opt/rare/agent", "", v1::DIRECTION_OUTBOUND,
                            v1::PROTOCOL_TCP, 4444, absl::StrCat("203.0.113.", i % 7)));
      if (i == 999)
        batch.push_back(Net(i, ++seq, t + 4, "/tmp/x", kDropperSha, v1::DIRECTION_OUTBOUND,
                            v1::PROTOCOL_UDP, 53, "198.51.100.9"));
      if (i == 1)
        batch.push_back(Net(i, ++seq, t + 4, "/tmp/x", kOtherDropperSha, v1::DIRECTION_OUTBOUND,
                            v1::PROTOCOL_TCP, 8080, "10.1.2.3"));
      if (i % 200 == 3)
        batch.push_back(Net(i, ++seq, t + 5, "/usr/bin/flowonly", "", v1::DIRECTION_OUTBOUND,
                            v1::PROTOCOL_TCP, 80, "10.0.0.1", v1::NETWORK_KIND_FLOW_END));
      // A few thousand events per write, as the collector groups them.
      if (batch.size() >= 2000 || i == kHosts - 1) {
        ASSERT_EQ(MustWrite(batch).stored, batch.size());
        written_.insert(written_.end(), batch.begin(), batch.end());
        batch.clear();
      }
    }
  }

  WriteResult MustWrite(const std::vector<v1::Envelope>& batch) {
    absl::StatusOr<WriteResult> r = store().Write(Ptrs(batch));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : WriteResult{};
  }
  uint64_t Count(const PrevalenceQuery& q) {
    absl::StatusOr<uint64_t> n = store().CountFactHosts(q);
    EXPECT_TRUE(n.ok()) << n.status();
    return n.ok() ? *n : 999999;
  }
  std::vector<std::string> HostsOf(const PrevalenceQuery& q, size_t limit = 0) {
    absl::StatusOr<std::vector<std::string>> h = store().FactHosts(q, limit);
    EXPECT_TRUE(h.ok()) << h.status();
    return h.ok() ? *h : std::vector<std::string>{"<error>"};
  }

  std::vector<v1::Envelope> written_;
};

PrevalenceQuery Image(std::string exe, std::string sha256 = "") {
  PrevalenceQuery q;
  q.exe = std::move(exe);
  q.sha256 = std::move(sha256);
  return q;
}

TEST_P(StoreFleetTest, ImagesRarestFirstWithHostCountsDigestsAndTimes) {
  absl::StatusOr<std::vector<ImageCount>> images = store().RarestImages({}, 0);
  ASSERT_TRUE(images.ok()) << images.status();
  ASSERT_EQ(images->size(), 4u);  // flow ends alone make no image
  const ImageCount& x = (*images)[0];
  EXPECT_EQ(x.exe, "/tmp/x");
  EXPECT_EQ(x.hosts, 2u);
  EXPECT_EQ(x.sha256_count, 2u);
  EXPECT_EQ(x.sha256, kOtherDropperSha);  // the greatest digest
  EXPECT_EQ(x.first_seen, kBase + absl::Seconds(1 + 4) + absl::Milliseconds(250));
  EXPECT_EQ(x.last_seen, kBase + absl::Seconds(999 + 4) + absl::Milliseconds(250));
  EXPECT_EQ((*images)[1].exe, "/opt/rare/agent");
  EXPECT_EQ((*images)[1].hosts, 10u);
  EXPECT_EQ((*images)[1].sha256_count, 0u);
  EXPECT_EQ((*images)[1].sha256, "");
  EXPECT_EQ((*images)[2].exe, "/usr/sbin/sshd");
  EXPECT_EQ((*images)[2].hosts, 500u);
  const ImageCount& curl = (*images)[3];
  EXPECT_EQ(curl.exe, "/usr/bin/curl");
  EXPECT_EQ(curl.hosts, 1000u);
  EXPECT_EQ(curl.sha256_count, 1u);  // the event before hashing adds no digest
  EXPECT_EQ(curl.sha256, kCurlSha);
  EXPECT_EQ(curl.first_seen, kBase + absl::Milliseconds(250));
  EXPECT_EQ(curl.last_seen, kBase + absl::Seconds(1000) + absl::Milliseconds(250));

  // Limits keep the rarest; an image filter keeps its own row.
  images = store().RarestImages({}, 2);
  ASSERT_TRUE(images.ok()) << images.status();
  ASSERT_EQ(images->size(), 2u);
  EXPECT_EQ((*images)[1].exe, "/opt/rare/agent");
  images = store().RarestImages(Image("", kDropperSha), 0);
  ASSERT_TRUE(images.ok()) << images.status();
  ASSERT_EQ(images->size(), 1u);
  EXPECT_EQ((*images)[0].exe, "/tmp/x");
  EXPECT_EQ((*images)[0].hosts, 1u);
}

TEST_P(StoreFleetTest, PairsRarestFirstWithServicePorts) {
  absl::StatusOr<std::vector<PairCount>> pairs = store().RarestPairs({}, 0);
  ASSERT_TRUE(pairs.ok()) << pairs.status();
  ASSERT_EQ(pairs->size(), 5u);
  struct Want {
    const char* exe;
    v1::Direction dir;
    v1::Protocol proto;
    uint32_t port;
    uint64_t hosts;
  } const want[] = {
      {"/tmp/x", v1::DIRECTION_OUTBOUND, v1::PROTOCOL_TCP, 8080, 1},
      {"/tmp/x", v1::DIRECTION_OUTBOUND, v1::PROTOCOL_UDP, 53, 1},
      {"/opt/rare/agent", v1::DIRECTION_OUTBOUND, v1::PROTOCOL_TCP, 4444, 10},
      // Inbound: the local (service) port, not the clients' ephemeral ones.
      {"/usr/sbin/sshd", v1::DIRECTION_INBOUND, v1::PROTOCOL_TCP, 22, 500},
      {"/usr/bin/curl", v1::DIRECTION_OUTBOUND, v1::PROTOCOL_TCP, 443, 1000},
  };
  for (size_t i = 0; i < std::size(want); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ((*pairs)[i].exe, want[i].exe);
    EXPECT_EQ((*pairs)[i].direction, want[i].dir);
    EXPECT_EQ((*pairs)[i].protocol, want[i].proto);
    EXPECT_EQ((*pairs)[i].port, want[i].port);
    EXPECT_EQ((*pairs)[i].hosts, want[i].hosts);
  }
  PrevalenceQuery https = Image("/usr/bin/curl");
  https.exclude_host = HostId(0);
  pairs = store().RarestPairs(https, 0);
  ASSERT_TRUE(pairs.ok()) << pairs.status();
  ASSERT_EQ(pairs->size(), 1u);
  EXPECT_EQ((*pairs)[0].hosts, 999u);
}

TEST_P(StoreFleetTest, CountsHostsByPathDigestBehaviourAndExclusion) {
  EXPECT_EQ(Count(Image("/usr/sbin/sshd")), 500u);
  EXPECT_EQ(Count(Image("", kCurlSha)), 1000u);
  EXPECT_EQ(Count(Image("", kDropperSha)), 1u);
  EXPECT_EQ(Count(Image("/usr/bin/flowonly")), 0u);
  EXPECT_EQ(Count(Image("/nowhere")), 0u);
  PrevalenceQuery q = Image("/usr/sbin/sshd");
  q.exclude_host = HostId(0);
  EXPECT_EQ(Count(q), 499u);
  q.exclude_host = HostId(1);  // runs no sshd
  EXPECT_EQ(Count(q), 500u);
  q = Image("/usr/sbin/sshd");
  q.direction = v1::DIRECTION_INBOUND;
  q.protocol = v1::PROTOCOL_TCP;
  q.port = 22;
  EXPECT_EQ(Count(q), 500u);
  q.port = 50001;  // a client's port is not sshd's behaviour
  EXPECT_EQ(Count(q), 0u);
  EXPECT_EQ(Count({}), 1000u);
}

TEST_P(StoreFleetTest, WhichHostsRanThisImageAndTalkedToThisAddress) {
  PrevalenceQuery q = Image("", kOtherDropperSha);
  q.remote = "10.0.0.0/8";
  EXPECT_EQ(HostsOf(q), std::vector<std::string>{HostId(1)});
  q.remote = "198.51.100.9";  // the other digest's address
  EXPECT_TRUE(HostsOf(q).empty());

  q = Image("/opt/rare/agent");
  q.remote = "203.0.113.3";
  std::vector<std::string> want;
  for (int i = 7; i < kHosts; i += 100)
    if (i % 7 == 3) want.push_back(HostId(i));
  ASSERT_FALSE(want.empty());
  EXPECT_EQ(HostsOf(q), want);
  EXPECT_EQ(Count(q), want.size());
  q.remote = "203.0.113.0/29";
  EXPECT_EQ(HostsOf(q).size(), 10u);
  EXPECT_EQ(HostsOf(q, 3).size(), 3u);
  EXPECT_EQ(HostsOf(q, 3)[0], HostId(7));  // sorted
  q.remote = "2001:db8::/32";  // other family
  EXPECT_TRUE(HostsOf(q).empty());
  q.remote = "203.0.113.0/33";
  EXPECT_FALSE(store().FactHosts(q, 0).ok());
}

TEST_P(StoreFleetTest, ReplaysChangeNoCount) {
  const WriteResult again = MustWrite(written_);
  EXPECT_EQ(again.stored, 0u);
  EXPECT_EQ(again.duplicates, written_.size());
  EXPECT_EQ(Count(Image("/usr/sbin/sshd")), 500u);
  absl::StatusOr<std::vector<ImageCount>> images = store().RarestImages(Image("/usr/bin/curl"), 0);
  ASSERT_TRUE(images.ok()) << images.status();
  ASSERT_EQ(images->size(), 1u);
  EXPECT_EQ((*images)[0].hosts, 1000u);
  EXPECT_EQ((*images)[0].first_seen, kBase + absl::Milliseconds(250));
}

// The collector's writer stamps each incoming alert with the fleet's
// prevalence of its image and behaviour, counting the alert's own host.
TEST_P(StoreFleetTest, WriterStampsAlertsWithFleetPrevalence) {
  auto alert = [](int host, uint64_t seq, const std::string& id, const v1::Envelope& evidence,
                  const std::string& sha) {
    v1::Envelope e;
    e.set_host_id(HostId(host));
    e.set_agent_instance("inst");
    e.set_seq(seq);
    SetTime(e, 5000);
    v1::Alert* a = e.mutable_alert();
    a->set_id(id);
    a->set_rule("first_network_use");
    *a->mutable_process() = evidence.network().process();
    *a->mutable_network() = evidence.network();
    a->mutable_image()->set_sha256(sha);
    return e;
  };
  // host 500 runs the rare agent for the first time (10 others did).
  const v1::Envelope rare = alert(500, 100, "rare-1",
                                  Net(500, 99, 5000, "/opt/rare/agent", "", v1::DIRECTION_OUTBOUND,
                                      v1::PROTOCOL_TCP, 4444, "203.0.113.1"),
                                  "");
  // host 999's dropper: nobody else has its digest; by path one other host.
  const v1::Envelope dropper = alert(999, 100, "dropper-1",
                                     Net(999, 99, 5000, "/tmp/x", kDropperSha,
                                         v1::DIRECTION_OUTBOUND, v1::PROTOCOL_UDP, 53, "9.9.9.9"),
                                     kDropperSha);
  {
    StoreWriter writer(&store());
    absl::Notification done;
    absl::Status status;
    auto batch = std::make_unique<v1::Batch>();
    *batch->add_envelopes() = rare;
    *batch->add_envelopes() = dropper;
    writer.Submit(std::nullopt, std::move(batch), [&](const absl::Status& s) {
      status = s;
      done.Notify();
    });
    done.WaitForNotification();
    ASSERT_TRUE(status.ok()) << status;
  }
  EventQuery q;
  q.kind = "alert";
  absl::StatusOr<std::vector<v1::Envelope>> stored = store().Events(q);
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_EQ(stored->size(), 2u);
  for (const v1::Envelope& e : *stored) {
    SCOPED_TRACE(e.alert().id());
    const v1::FleetPrevalence& f = e.alert().fleet();
    EXPECT_EQ(f.fleet_hosts(), 1000u);
    if (e.alert().id() == "rare-1") {
      EXPECT_FALSE(f.by_sha256());
      EXPECT_EQ(f.image_hosts(), 11u);
      EXPECT_EQ(f.behavior_hosts(), 11u);
    } else {
      EXPECT_TRUE(f.by_sha256());
      EXPECT_EQ(f.image_hosts(), 1u);
      EXPECT_EQ(f.behavior_hosts(), 1u);  // host 1's /tmp/x used tcp 8080, not udp 53
    }
  }
  // The alerts' evidence now counts too.
  EXPECT_EQ(Count(Image("/opt/rare/agent")), 11u);
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreFleetTest, ::testing::ValuesIn(StoreBackends()),
                         BackendName);

}  // namespace
}  // namespace sockwatch::store_test
