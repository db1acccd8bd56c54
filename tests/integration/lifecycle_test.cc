// Process identity under stress (short lives, relative paths, symlinks, long
// command lines, pid reuse), connections older than the agent, loss
// reporting, clean detach and start-up errors.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "tests/integration/harness.h"

namespace sockwatch::testing {
namespace {

using v1::Envelope;

class LifecycleTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(net_.ok()); }

  // A server in the server namespace that accepts one connection.
  std::unique_ptr<Child> Server(int port) {
    auto s = Child::Spawn(net_.server_ns, {TestPeerPath(), "tcp-server", net_.server_v4, std::to_string(port)});
    EXPECT_EQ(s->ReadLine(), "ready");
    return s;
  }

  NetPair net_;
};

TEST_F(LifecycleTest, ProcessThatExitsRightAfterConnectingIsAttributed) {
  auto agent = AgentProcess::Start({"--snapshot=false"});
  ASSERT_NE(agent, nullptr);
  auto server = Server(7001);
  auto client = Child::Spawn(net_.client_ns,
                             {TestPeerPath(), "tcp-connect-exit", net_.server_v4, "7001", "--tag=short"});
  ASSERT_EQ(client->Wait(), 0);
  auto e = agent->WaitFor(NetEvent(v1::NETWORK_KIND_CONNECT, client->pid));
  ASSERT_TRUE(e.has_value());
  const v1::Process& p = e->network().process();
  EXPECT_EQ(p.exe(), TestPeerPath());
  ASSERT_EQ(p.argv_size(), 5);
  EXPECT_EQ(p.argv(4), "--tag=short");
  EXPECT_EQ(p.ppid(), static_cast<uint32_t>(getpid()));
  EXPECT_FALSE(p.unknown());
  EXPECT_EQ(e->network().outcome(), v1::OUTCOME_ESTABLISHED);
  // The exit comes after the connect, and names the same process.
  auto x = agent->WaitFor([&](const Envelope& env) {
    return env.has_exit() && env.exit().process().pid() == static_cast<uint32_t>(client->pid);
  });
  ASSERT_TRUE(x.has_value());
  EXPECT_GT(x->seq(), e->seq());
  EXPECT_EQ(x->exit().process().exe(), TestPeerPath());
}

TEST_F(LifecycleTest, RelativePathAndSymlinkResolveToTheCanonicalExe) {
  auto agent = AgentProcess::Start({"--snapshot=false"});
  ASSERT_NE(agent, nullptr);
  const std::string real = TestPeerPath();
  const std::string dir = std::filesystem::path(real).parent_path();
  char tmpl[] = "/tmp/sw_link_XXXXXX";
  const std::string linkdir = mkdtemp(tmpl);
  const std::string link = linkdir + "/peer-link";
  ASSERT_EQ(symlink(real.c_str(), link.c_str()), 0);

  auto s1 = Server(7002);
  auto rel = Child::Spawn(net_.client_ns, {"./sw_testpeer", "tcp-client", net_.server_v4, "7002"}, dir);
  ASSERT_EQ(rel->Wait(), 0);
  auto s2 = Server(7003);
  auto sym = Child::Spawn(net_.client_ns, {link, "tcp-client", net_.server_v4, "7003"});
  ASSERT_EQ(sym->Wait(), 0);

  for (const Child* c : {rel.get(), sym.get()}) {
    auto e = agent->WaitFor(NetEvent(v1::NETWORK_KIND_CONNECT, c->pid));
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->network().process().exe(), real);           // canonical, resolved in the kernel
    EXPECT_EQ(e->network().process().argv(0), c->argv[0]);   // argv as typed
  }
  unlink(link.c_str());
  rmdir(linkdir.c_str());
}

// Copies sw_testpeer's bytes into fd.
bool CopyPeer(int fd) {
  std::ifstream in(TestPeerPath(), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return !bytes.empty() && write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size());
}

TEST_F(LifecycleTest, DeletedAndMemfdExecutablesAreMarked) {
  auto agent = AgentProcess::Start({"--snapshot=false"});
  ASSERT_NE(agent, nullptr);
  // A binary unlinked before it runs: open it, delete it, exec the fd.
  char tmpl[] = "/tmp/sw_del_XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  const std::string path = dir + "/dropper";
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0755);
  ASSERT_TRUE(CopyPeer(fd));
  close(fd);
  fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_EQ(unlink(path.c_str()), 0);
  auto s1 = Server(7010);
  auto deleted = Child::Spawn(net_.client_ns, {"dropper", "tcp-client", net_.server_v4, "7010"}, "", 0, fd);
  ASSERT_EQ(deleted->Wait(), 0);
  close(fd);
  rmdir(dir.c_str());

  // A binary that never had a path: memfd.
  int mfd = memfd_create("sw-implant", MFD_CLOEXEC);
  ASSERT_TRUE(CopyPeer(mfd));
  auto s2 = Server(7011);
  auto memfd = Child::Spawn(net_.client_ns, {"implant", "tcp-client", net_.server_v4, "7011"}, "", 0, mfd);
  ASSERT_EQ(memfd->Wait(), 0);
  close(mfd);

  auto e = agent->WaitFor(NetEvent(v1::NETWORK_KIND_CONNECT, deleted->pid));
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->network().process().exe(), path);
  EXPECT_TRUE(e->network().process().exe_deleted());
  EXPECT_EQ(e->network().process().argv(0), "dropper");
  auto m = agent->WaitFor(NetEvent(v1::NETWORK_KIND_CONNECT, memfd->pid));
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->network().process().exe(), "/memfd:sw-implant");
  EXPECT_TRUE(m->network().process().exe_deleted());
}

TEST_F(LifecycleTest, ContainerIdIsOnEveryEvent) {
  // A cgroup shaped like the one docker makes for a container.
  const std::string mount = Capture("awk '$3 == \"cgroup2\" {print $2; exit}' /proc/mounts");
  ASSERT_FALSE(mount.empty());
  const std::string id(64, 'c');
  const std::string dir = std::string(absl::StripTrailingAsciiWhitespace(mount)) +
                          "/sw-test.slice/docker-" + id + ".scope";
  ASSERT_EQ(testing::Run("mkdir -p " + dir), 0);
  const std::string slice = std::string(absl::StripTrailingAsciiWhitespace(mount)) + "/sw-test.slice";
  absl::Cleanup remove = [&] { testing::Run("rmdir " + dir + " " + slice + " 2>/dev/null"); };
  struct stat st;
  ASSERT_EQ(stat(dir.c_str(), &st), 0);
  auto agent = AgentProcess::Start({"--snapshot=false"});
  ASSERT_NE(agent, nullptr);
  auto server = Server(7012);
  auto client = Child::Spawn(net_.client_ns, {TestPeerPath(), "tcp-client", net_.server_v4, "7012"}, "", 0,
                             -1, dir);
  ASSERT_NE(client, nullptr);
  ASSERT_EQ(client->Wait(), 0);
  auto c = agent->WaitFor(NetEvent(v1::NETWORK_KIND_CONNECT, client->pid));
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->network().process().cgroup_id(), st.st_ino);
  EXPECT_EQ(c->network().process().container_id(), id);
  auto x = agent->WaitFor([&](const Envelope& e) {
    return e.has_exit() && e.exit().process().pid() == static_cast<uint32_t>(client->pid);
  });
  ASSERT_TRUE(x.has_value());
  EXPECT_EQ(x->exit().process().container_id(), id);
  // The server runs on the host: no container.
  auto a = agent->WaitFor(NetEvent(v1::NETWORK_KIND_ACCEPT, server->pid));
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->network().process().container_id(), "");
  client.reset();  // a cgroup with no process left can be removed
}

TEST_F(LifecycleTest, LongCommandLines) {
  auto agent = AgentProcess::Start({"--snapshot=false"});
  ASSERT_NE(agent, nullptr);
  // 6 KiB of arguments fit whole; 20 KiB are cut at 8 KiB and flagged.
  const std::string a(3000, 'a'), b(3000, 'b');
  auto s1 = Server(7004);
  auto fits = Child::Spawn(net_.client_ns, {TestPeerPath(), "tcp-client", net_.server_v4, "7004", a, b});
  ASSERT_EQ(fits->Wait(), 0);
  auto e = agent->WaitFor(NetEvent(v1::NETWORK_KIND_CONNECT, fits->pid));
  ASSERT_TRUE(e.has_value());
  const v1::Process& p = e->network().process();
  ASSERT_EQ(p.argv_size(), 6);
  EXPECT_EQ(p.argv(4), a);
  EXPECT_EQ(p.argv(5), b);
  EXPECT_FALSE(p.argv_truncated());

  const std::string big(10000, 'x');
  auto s2 = Server(7005);
  auto cut = Child::Spawn(net_.client_ns,
                          {TestPeerPath(), "tcp-client", net_.server_v4, "7005", big, big});
  ASSERT_EQ(cut->Wait(), 0);
  e = agent->WaitFor(NetEvent(v1::NETWORK_KIND_CONNECT, cut->pid));
  ASSERT_TRUE(e.has_value());
  const v1::Process& q = e->network().process();
  EXPECT_TRUE(q.argv_truncated());
  size_t full = 0;
  for (const auto& arg : cut->argv) full += arg.size() + 1;
  EXPECT_EQ(q.argv_full_len(), full);
  ASSERT_GE(q.argv_size(), 5);
  EXPECT_EQ(q.argv(1), "tcp-client");
  EXPECT_EQ(q.argv(3), "7005");
  size_t kept = 0;
  for (const auto& arg : q.argv()) kept += arg.size() + 1;
  EXPECT_GE(kept, 8000u);  // at least 4 KiB kept, as promised: here 8 KiB
  EXPECT_LE(kept, 8193u);
}

TEST_F(LifecycleTest, PidReuseIsToldApart) {
  auto agent = AgentProcess::Start({"--snapshot=false"});
  ASSERT_NE(agent, nullptr);
  auto s1 = Server(7006);
  auto first = Child::Spawn(net_.client_ns, {TestPeerPath(), "tcp-client", net_.server_v4, "7006", "--first"});
  ASSERT_EQ(first->Wait(), 0);
  const pid_t pid = first->pid;
  auto s2 = Server(7007);
  // The same pid again, for a different command line.
  auto second = Child::Spawn(net_.client_ns, {TestPeerPath(), "tcp-client", net_.server_v4, "7007", "--second"},
                             "", pid);
  ASSERT_NE(second, nullptr) << "clone3(set_tid) failed: " << strerror(errno);
  ASSERT_EQ(second->pid, pid);
  ASSERT_EQ(second->Wait(), 0);

  ASSERT_TRUE(agent->WaitFor([&](const Envelope& e) {
    return NetEvent(v1::NETWORK_KIND_CONNECT, pid)(e) && e.network().remote_port() == 7007;
  }).has_value());
  auto connects = agent->All(NetEvent(v1::NETWORK_KIND_CONNECT, pid));
  ASSERT_EQ(connects.size(), 2u);
  EXPECT_EQ(connects[0].network().remote_port(), 7006u);
  EXPECT_EQ(connects[0].network().process().argv(4), "--first");
  EXPECT_EQ(connects[1].network().remote_port(), 7007u);
  EXPECT_EQ(connects[1].network().process().argv(4), "--second");
  EXPECT_LT(connects[0].network().process().start_boottime_ns(),
            connects[1].network().process().start_boottime_ns());
}

TEST_F(LifecycleTest, ConnectionOlderThanTheAgentIsInTheSnapshot) {
  auto server = Server(7008);
  auto holder = Child::Spawn(net_.client_ns, {TestPeerPath(), "tcp-hold", net_.server_v4, "7008", "--old"});
  ASSERT_EQ(holder->ReadLine(), "ready");

  auto agent = AgentProcess::Start({});  // snapshot on: the default
  ASSERT_NE(agent, nullptr);
  auto e = agent->WaitFor([&](const Envelope& env) {
    return env.has_network() && env.network().snapshot() &&
           env.network().process().pid() == static_cast<uint32_t>(holder->pid);
  });
  ASSERT_TRUE(e.has_value());
  const v1::NetworkEvent& n = e->network();
  EXPECT_EQ(n.kind(), v1::NETWORK_KIND_EXISTING);
  EXPECT_EQ(n.socket_state(), "ESTABLISHED");
  EXPECT_EQ(n.protocol(), v1::PROTOCOL_TCP);
  EXPECT_EQ(n.local_ip(), net_.client_v4);
  EXPECT_EQ(n.remote_ip(), net_.server_v4);
  EXPECT_EQ(n.remote_port(), 7008u);
  EXPECT_EQ(n.direction(), v1::DIRECTION_OUTBOUND);
  EXPECT_EQ(n.netns(), net_.client_netns());
  EXPECT_EQ(n.process().exe(), TestPeerPath());
  EXPECT_EQ(n.process().argv(4), "--old");
  EXPECT_TRUE(n.process().from_snapshot());
  EXPECT_NE(n.community_id(), "");
  // The server side, accepted before the agent: inbound, owned by the server.
  auto s = agent->WaitFor([&](const Envelope& env) {
    return env.has_network() && env.network().snapshot() &&
           env.network().process().pid() == static_cast<uint32_t>(server->pid) &&
           env.network().socket_state() == "ESTABLISHED";
  });
  std::string seen;
  for (const auto& env : agent->All([](const Envelope& e) { return e.has_network(); }))
    seen += env.network().ShortDebugString() + "\n";
  ASSERT_TRUE(s.has_value()) << "server pid " << server->pid << ", snapshot:\n" << seen;
  EXPECT_EQ(s->network().direction(), v1::DIRECTION_INBOUND);
  EXPECT_EQ(s->network().remote_port(), n.local_port());
  // And the process is known for what it does next: its close is attributed.
  holder->CloseStdin();
  ASSERT_EQ(holder->Wait(), 0);
  auto end = agent->WaitFor(NetEvent(v1::NETWORK_KIND_FLOW_END, holder->pid));
  ASSERT_TRUE(end.has_value());
  EXPECT_EQ(end->network().process().exe(), TestPeerPath());
}

TEST_F(LifecycleTest, RingBufferOverflowIsReportedAsLoss) {
  // A one-page ring drained every 2 s, never woken early: a burst must overflow.
  auto agent = AgentProcess::Start({"--snapshot=false", "--ring_buffer_size=4096",
                                    "--drain_interval=2s", "--wakeup_bytes=1000000000"});
  ASSERT_NE(agent, nullptr);
  constexpr int kBurst = 400;
  auto spray = Child::Spawn(net_.client_ns,
                            {TestPeerPath(), "udp-spray", net_.server_v4, "20000", std::to_string(kBurst)});
  ASSERT_EQ(spray->Wait(), 0);
  auto loss = agent->WaitFor(
      [](const Envelope& e) { return e.has_loss() && e.loss().reason() == "ringbuf_full"; },
      absl::Seconds(10));
  ASSERT_TRUE(loss.has_value()) << agent->Stderr();
  EXPECT_GT(loss->loss().count(), 0u);
  EXPECT_TRUE(loss->loss().has_first_time());
  EXPECT_TRUE(loss->loss().has_last_time());
  EXPECT_LE(loss->loss().first_time().seconds(), loss->loss().last_time().seconds());
  agent->Stop();
  // Every datagram is accounted for: delivered as an event, or counted lost.
  const size_t seen = agent->All(NetEvent(v1::NETWORK_KIND_UDP_SEND, spray->pid)).size();
  uint64_t lost = 0;
  for (const auto& l : agent->All([](const Envelope& e) { return e.has_loss() && e.loss().reason() == "ringbuf_full"; }))
    lost += l.loss().count();
  EXPECT_LT(seen, static_cast<size_t>(kBurst));
  EXPECT_GE(seen + lost, static_cast<uint64_t>(kBurst));
}

int CountPrograms(const std::string& name) {
  const std::string out = Capture("bpftool prog show 2>/dev/null");
  int n = 0;
  for (size_t pos = 0; (pos = out.find("name " + name + " ", pos)) != std::string::npos; ++pos) ++n;
  return n;
}

TEST_F(LifecycleTest, SigtermDetachesEverything) {
  const int before = CountPrograms("sw_tcp_state");
  auto agent = AgentProcess::Start({"--snapshot=false"});
  ASSERT_NE(agent, nullptr);
  EXPECT_EQ(CountPrograms("sw_tcp_state"), before + 1);
  EXPECT_EQ(CountPrograms("sw_udp_sendmsg4"), CountPrograms("sw_tcp_state"));
  EXPECT_EQ(agent->Stop(), 0);
  EXPECT_EQ(CountPrograms("sw_tcp_state"), before);
  EXPECT_TRUE(absl::StrContains(agent->Stderr(), "stopped after")) << agent->Stderr();
}

TEST_F(LifecycleTest, NotRootIsAClearError) {
  const std::string out =
      Capture("setpriv --reuid=65534 --regid=65534 --clear-groups " + AgentPath() + " 2>&1; echo rc=$?");
  EXPECT_TRUE(absl::StrContains(out, "must run as root")) << out;
  EXPECT_TRUE(absl::StrContains(out, "rc=1")) << out;
  const std::string bad = Capture(AgentPath() + " --print=yaml 2>&1; echo rc=$?");
  EXPECT_TRUE(absl::StrContains(bad, "--print=yaml: want json, text or none")) << bad;
  EXPECT_TRUE(absl::StrContains(bad, "rc=1")) << bad;
}

}  // namespace
}  // namespace sockwatch::testing
