#include "agent/snapshot.h"

#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sockwatch {
namespace {

namespace fs = std::filesystem;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

// Closes the fd at scope exit so failed ASSERTs do not leak sockets.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const fs::path& path, absl::string_view data) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary).write(data.data(), data.size());
}

// The test needs a cgroup2 mount point; /proc/mounts says where it is.
std::string FindCgroup2Mount() {
  for (absl::string_view line : absl::StrSplit(ReadAll("/proc/mounts"), '\n')) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ');
    if (f.size() >= 3 && f[2] == "cgroup2") return std::string(f[1]);
  }
  return "";
}

const SnapshotProcess* FindPid(const std::vector<SnapshotProcess>& procs,
                               uint32_t pid) {
  for (const SnapshotProcess& p : procs) {
    if (p.pid == pid) return &p;
  }
  return nullptr;
}

const SnapshotSocket* FindInode(const std::vector<SnapshotSocket>& socks,
                                int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return nullptr;
  for (const SnapshotSocket& s : socks) {
    if (s.inode == st.st_ino) return &s;
  }
  return nullptr;
}

uint16_t LocalPort(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  return ntohs(ss.ss_family == AF_INET
                   ? reinterpret_cast<sockaddr_in*>(&ss)->sin_port
                   : reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

uint64_t BoottimeNowNs() {
  timespec ts;
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

TEST(SnapshotProcessesTest, FindsSelf) {
  auto procs = SnapshotProcesses(FindCgroup2Mount());
  ASSERT_TRUE(procs.ok()) << procs.status();
  const SnapshotProcess* self = FindPid(*procs, getpid());
  ASSERT_NE(self, nullptr);
  EXPECT_EQ(self->exe, fs::read_symlink("/proc/self/exe").string());
  EXPECT_FALSE(self->exe_deleted);
  ASSERT_FALSE(self->argv.empty());
  EXPECT_EQ(self->argv[0], testing::internal::GetArgvs()[0]);
  EXPECT_EQ(self->argv.size(), testing::internal::GetArgvs().size());
  EXPECT_EQ(self->ppid, static_cast<uint32_t>(getppid()));
  EXPECT_EQ(self->uid, getuid());
  EXPECT_EQ(self->gid, getgid());
  EXPECT_GT(self->start_boottime_ns, 0u);
  EXPECT_LE(self->start_boottime_ns, BoottimeNowNs());
  char comm[17] = {};
  prctl(PR_GET_NAME, comm);
  EXPECT_EQ(self->comm, comm);
  if (const SnapshotProcess* parent = FindPid(*procs, getppid())) {
    EXPECT_EQ(self->parent_start_boottime_ns, parent->start_boottime_ns);
    EXPECT_LE(self->parent_start_boottime_ns, self->start_boottime_ns);
  }
}

TEST(SnapshotProcessesTest, FindsForkedChild) {
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    for (;;) pause();  // Killed below; never returns into gtest.
  }
  auto procs = SnapshotProcesses(FindCgroup2Mount());
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  ASSERT_TRUE(procs.ok()) << procs.status();
  const SnapshotProcess* c = FindPid(*procs, child);
  const SnapshotProcess* self = FindPid(*procs, getpid());
  ASSERT_NE(c, nullptr);
  ASSERT_NE(self, nullptr);
  EXPECT_EQ(c->ppid, static_cast<uint32_t>(getpid()));
  EXPECT_EQ(c->parent_start_boottime_ns, self->start_boottime_ns);
  EXPECT_GE(c->start_boottime_ns, self->start_boottime_ns);
  EXPECT_EQ(c->exe, self->exe);
  EXPECT_EQ(c->cgroup_id, self->cgroup_id);
}

TEST(SnapshotProcessesTest, CgroupIdMatchesCgroup2Directory) {
  const std::string mount = FindCgroup2Mount();
  if (mount.empty()) GTEST_SKIP() << "no cgroup2 mount";
  std::string path;
  for (absl::string_view line :
       absl::StrSplit(ReadAll("/proc/self/cgroup"), '\n')) {
    if (absl::ConsumePrefix(&line, "0::")) path = std::string(line);
  }
  ASSERT_FALSE(path.empty());
  struct stat st;
  ASSERT_EQ(stat((mount + path).c_str(), &st), 0) << mount << path;
  auto procs = SnapshotProcesses(mount);
  ASSERT_TRUE(procs.ok()) << procs.status();
  const SnapshotProcess* self = FindPid(*procs, getpid());
  ASSERT_NE(self, nullptr);
  EXPECT_NE(self->cgroup_id, 0u);
  EXPECT_EQ(self->cgroup_id, st.st_ino);
}

TEST(SnapshotProcessesTest, MissingProcRootIsAnError) {
  EXPECT_FALSE(SnapshotProcesses("", "/nonexistent/proc").ok());
  EXPECT_THAT(SocketInodeOwners("/nonexistent/proc"), IsEmpty());
}

// A fake /proc tree exercises parsing edge cases deterministically.
class FakeProcTest : public testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/snapshot_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    proc_ = root_ / "proc";
    fs::create_directories(proc_);
  }
  void TearDown() override { fs::remove_all(root_); }

  static std::string Stat(absl::string_view pid_comm, uint32_t ppid,
                          uint64_t start) {
    return absl::StrCat(pid_comm, " S ", ppid,
                        " 1 1 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 ", start,
                        " 1000 200 18446744073709551615\n");
  }
  void AddProcess(const std::string& pid, absl::string_view stat) {
    WriteFile(proc_ / pid / "stat", stat);
    WriteFile(proc_ / pid / "status",
              "Name:\tx\nUid:\t1000\t1001\t1002\t1003\n"
              "Gid:\t2000\t2001\t2002\t2003\n");
  }
  uint64_t TicksNs(uint64_t ticks) {
    return ticks * 1'000'000'000 / sysconf(_SC_CLK_TCK);
  }

  fs::path root_, proc_;
};

TEST_F(FakeProcTest, ParsesProcessFields) {
  AddProcess("7", Stat("7 (init)", 0, 5));
  AddProcess("4242", Stat("4242 (we ird) x)", 7, 12345));
  const fs::path p = proc_ / "4242";
  WriteFile(p / "cmdline", std::string("a\0b c\0\xff\xfe\0", 9));
  WriteFile(p / "comm", "we ird) x\n");
  fs::create_symlink("/opt/app/bin (deleted)", p / "exe");
  fs::create_directories(root_ / "cg" / "app.slice");
  WriteFile(p / "cgroup", "1:cpu:/\n0::/app.slice\n");
  AddProcess("2", Stat("2 (kthreadd)", 0, 1));  // Kernel thread: no exe.
  WriteFile(proc_ / "2" / "cmdline", "");
  AddProcess("10", Stat("10 (t)", 1, 1));  // Rewrote argv, no final NUL.
  WriteFile(proc_ / "10" / "cmdline", "rewritten title");
  fs::create_directories(proc_ / "99");  // Vanished: no stat.
  fs::create_directories(proc_ / "net");

  auto procs = SnapshotProcesses((root_ / "cg").string(), proc_.string());
  ASSERT_TRUE(procs.ok()) << procs.status();
  ASSERT_EQ(procs->size(), 4u);
  const SnapshotProcess* x = FindPid(*procs, 4242);
  ASSERT_NE(x, nullptr);
  EXPECT_EQ(x->ppid, 7u);
  EXPECT_EQ(x->uid, 1000u);
  EXPECT_EQ(x->gid, 2000u);
  EXPECT_EQ(x->start_boottime_ns, TicksNs(12345));
  EXPECT_EQ(x->parent_start_boottime_ns, TicksNs(5));
  EXPECT_EQ(x->exe, "/opt/app/bin");
  EXPECT_TRUE(x->exe_deleted);
  EXPECT_THAT(x->argv, ElementsAre("a", "b c", "\xff\xfe"));
  EXPECT_EQ(x->comm, "we ird) x");
  struct stat st;
  ASSERT_EQ(stat((root_ / "cg" / "app.slice").c_str(), &st), 0);
  EXPECT_EQ(x->cgroup_id, st.st_ino);

  const SnapshotProcess* k = FindPid(*procs, 2);
  ASSERT_NE(k, nullptr);
  EXPECT_THAT(k->exe, IsEmpty());
  EXPECT_THAT(k->argv, IsEmpty());
  EXPECT_EQ(k->comm, "");
  EXPECT_EQ(k->cgroup_id, 0u);
  EXPECT_EQ(k->parent_start_boottime_ns, 0u);  // ppid 0 is not a process.
  ASSERT_NE(FindPid(*procs, 10), nullptr);
  EXPECT_THAT(FindPid(*procs, 10)->argv, ElementsAre("rewritten title"));
}

// Every truncation of a valid stat (and of status) must be rejected or
// parsed, never crash; run under ASan/UBSan to make that meaningful.
TEST_F(FakeProcTest, TruncatedFilesNeverCrash) {
  const std::string stat = Stat("5 (a) b)", 1, 77);
  const std::string status = "Uid:\t1\t1\t1\t1\nGid:\t2\t2\t2\t2\n";
  for (size_t i = 0; i <= stat.size(); ++i) {
    AddProcess("5", stat.substr(0, i));
    auto procs = SnapshotProcesses("", proc_.string());
    ASSERT_TRUE(procs.ok());
    EXPECT_LE(procs->size(), 1u);
  }
  for (size_t i = 0; i <= status.size(); ++i) {
    AddProcess("5", stat);
    WriteFile(proc_ / "5" / "status", status.substr(0, i));
    ASSERT_TRUE(SnapshotProcesses("", proc_.string()).ok());
  }
}

TEST_F(FakeProcTest, SocketInodeOwners) {
  fs::create_directories(proc_ / "4242" / "fd");
  fs::create_directories(proc_ / "7" / "fd");
  fs::create_symlink("socket:[555]", proc_ / "4242" / "fd" / "3");
  fs::create_symlink("socket:[555]", proc_ / "4242" / "fd" / "4");
  fs::create_symlink("/dev/null", proc_ / "4242" / "fd" / "5");
  fs::create_symlink("socket:[555]", proc_ / "7" / "fd" / "0");
  fs::create_symlink("socket:[66]", proc_ / "7" / "fd" / "1");
  fs::create_symlink("socket:[x]", proc_ / "7" / "fd" / "2");
  fs::create_symlink("socket:[99999999999]", proc_ / "7" / "fd" / "3");
  fs::create_symlink("pipe:[9]", proc_ / "7" / "fd" / "4");
  const auto owners = SocketInodeOwners(proc_.string());
  ASSERT_EQ(owners.size(), 2u);
  EXPECT_THAT(owners.at(555), ElementsAre(7u, 4242u));
  EXPECT_THAT(owners.at(66), ElementsAre(7u));
}

using Ip = std::array<uint8_t, 16>;

// Binds `fd` to loopback on an ephemeral port, or with a `connect_port`
// connects it to that loopback port.
bool Loopback(int fd, int family, uint16_t connect_port = 0) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(connect_port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(connect_port);
  sin6.sin6_addr = in6addr_loopback;
  auto* addr = family == AF_INET ? reinterpret_cast<sockaddr*>(&sin)
                                 : reinterpret_cast<sockaddr*>(&sin6);
  const socklen_t len = family == AF_INET ? sizeof(sin) : sizeof(sin6);
  return (connect_port ? connect(fd, addr, len) : bind(fd, addr, len)) == 0;
}

// Expects `fd` in `socks` as a socket of this process with the given state and
// ports, and the loopback address of `family` at the ends that are set.
void ExpectSocket(const std::vector<SnapshotSocket>& socks, int fd,
                  uint8_t protocol, uint16_t family, uint8_t state,
                  uint16_t local_port, uint16_t remote_port) {
  SCOPED_TRACE(absl::StrCat("fd ", fd, " state ", state));
  const SnapshotSocket* s = FindInode(socks, fd);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->protocol, protocol);
  EXPECT_EQ(s->family, family);
  EXPECT_EQ(s->state, state);
  EXPECT_EQ(s->local_port, local_port);
  EXPECT_EQ(s->remote_port, remote_port);
  EXPECT_EQ(s->uid, getuid());
  EXPECT_THAT(s->pids, Contains(static_cast<uint32_t>(getpid())));
  EXPECT_TRUE(std::is_sorted(s->pids.begin(), s->pids.end()));
  const Ip loopback = family == AF_INET
                          ? Ip{127, 0, 0, 1}
                          : Ip{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  EXPECT_EQ(s->local_ip, loopback);
  EXPECT_EQ(s->remote_ip, remote_port != 0 ? loopback : Ip{});
  uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  ASSERT_EQ(getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len), 0);
  EXPECT_EQ(s->cookie, cookie);
}

class SnapshotSocketsTest : public testing::TestWithParam<int> {};

TEST_P(SnapshotSocketsTest, FindsTcpListenerAndBothEnds) {
  const int family = GetParam();
  Fd listener(socket(family, SOCK_STREAM, 0));
  ASSERT_GE(listener.fd, 0);
  if (!Loopback(listener.fd, family)) {
    GTEST_SKIP() << "no loopback for family " << family;
  }
  ASSERT_EQ(listen(listener.fd, 4), 0);
  const uint16_t port = LocalPort(listener.fd);
  Fd client(socket(family, SOCK_STREAM, 0));
  ASSERT_TRUE(Loopback(client.fd, family));
  ASSERT_TRUE(Loopback(client.fd, family, port));
  Fd server(accept(listener.fd, nullptr, nullptr));
  ASSERT_GE(server.fd, 0);
  const uint16_t client_port = LocalPort(client.fd);

  auto socks = SnapshotSockets();
  ASSERT_TRUE(socks.ok()) << socks.status();
  ExpectSocket(*socks, listener.fd, IPPROTO_TCP, family, 10, port, 0);
  ExpectSocket(*socks, client.fd, IPPROTO_TCP, family, 1, client_port, port);
  ExpectSocket(*socks, server.fd, IPPROTO_TCP, family, 1, port, client_port);
}

TEST_P(SnapshotSocketsTest, FindsUdpBoundAndConnected) {
  const int family = GetParam();
  Fd bound(socket(family, SOCK_DGRAM, 0));
  ASSERT_GE(bound.fd, 0);
  if (!Loopback(bound.fd, family)) {
    GTEST_SKIP() << "no loopback for family " << family;
  }
  const uint16_t port = LocalPort(bound.fd);
  Fd connected(socket(family, SOCK_DGRAM, 0));
  ASSERT_TRUE(Loopback(connected.fd, family));
  ASSERT_TRUE(Loopback(connected.fd, family, port));

  auto socks = SnapshotSockets();
  ASSERT_TRUE(socks.ok()) << socks.status();
  ExpectSocket(*socks, bound.fd, IPPROTO_UDP, family, 7, port, 0);
  ExpectSocket(*socks, connected.fd, IPPROTO_UDP, family, 1,
               LocalPort(connected.fd), port);
}

INSTANTIATE_TEST_SUITE_P(Families, SnapshotSocketsTest,
                         testing::Values(AF_INET, AF_INET6),
                         [](const testing::TestParamInfo<int>& info) {
                           return info.param == AF_INET ? "IPv4" : "IPv6";
                         });

TEST(SnapshotSocketsCookieTest, NonEmptyAndListenerCookieMatches) {
  Fd listener(socket(AF_INET, SOCK_STREAM, 0));
  ASSERT_TRUE(Loopback(listener.fd, AF_INET));
  ASSERT_EQ(listen(listener.fd, 1), 0);
  uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  ASSERT_EQ(getsockopt(listener.fd, SOL_SOCKET, SO_COOKIE, &cookie, &len), 0);

  auto socks = SnapshotSockets();
  ASSERT_TRUE(socks.ok()) << socks.status();
  ASSERT_FALSE(socks->empty());
  const SnapshotSocket* s = FindInode(*socks, listener.fd);
  ASSERT_NE(s, nullptr);
  EXPECT_NE(s->cookie, 0u);
  EXPECT_EQ(s->cookie, cookie);
  for (const SnapshotSocket& sock : *socks) {
    EXPECT_NE(sock.state, 6) << "TIME_WAIT must be excluded";
    EXPECT_TRUE(sock.protocol == IPPROTO_TCP || sock.protocol == IPPROTO_UDP);
  }
}

// One netlink message of `type` carrying `payload`, padded like the kernel's.
std::string NlMsg(uint16_t type, uint32_t seq, absl::string_view payload) {
  nlmsghdr h{};
  h.nlmsg_len = NLMSG_HDRLEN + payload.size();
  h.nlmsg_type = type;
  h.nlmsg_seq = seq;
  std::string out(reinterpret_cast<const char*>(&h), sizeof(h));
  out.append(payload.data(), payload.size());
  out.resize(NLMSG_ALIGN(out.size()), '\0');
  return out;
}

template <typename T>
std::string Bytes(const T& value) {
  return std::string(reinterpret_cast<const char*>(&value), sizeof(value));
}

std::string DiagMsg(uint8_t state) {
  inet_diag_msg m{};
  m.idiag_family = AF_INET;
  m.idiag_state = state;
  m.id.idiag_sport = htons(80);
  m.id.idiag_dport = htons(5555);
  m.id.idiag_src[0] = htonl(0x0a000001);
  m.id.idiag_dst[0] = htonl(0x0a000002);
  m.id.idiag_cookie[0] = 0x11223344;
  m.id.idiag_cookie[1] = 0x55;
  m.idiag_uid = 1000;
  m.idiag_inode = 77;
  return Bytes(m);
}

constexpr uint32_t kEstablishedOrListen = (1u << 1) | (1u << 10);

absl::StatusOr<bool> Parse(absl::string_view data,
                           std::vector<SnapshotSocket>* out) {
  return internal::ParseSockDiagReplies(data, 3, IPPROTO_TCP,
                                        kEstablishedOrListen, out);
}

TEST(ParseSockDiagRepliesTest, ParsesSocketsUntilDone) {
  std::vector<SnapshotSocket> out;
  auto done = Parse(NlMsg(SOCK_DIAG_BY_FAMILY, 3, DiagMsg(1)) +
                        NlMsg(SOCK_DIAG_BY_FAMILY, 3, DiagMsg(6)) +  // State.
                        NlMsg(SOCK_DIAG_BY_FAMILY, 2, DiagMsg(1)) +  // Seq.
                        NlMsg(NLMSG_NOOP, 3, ""),
                    &out);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_FALSE(*done);
  ASSERT_EQ(out.size(), 1u);
  const SnapshotSocket& s = out[0];
  EXPECT_EQ(s.protocol, IPPROTO_TCP);
  EXPECT_EQ(s.family, AF_INET);
  EXPECT_EQ(s.state, 1);
  EXPECT_EQ(s.local_port, 80);
  EXPECT_EQ(s.remote_port, 5555);
  EXPECT_EQ(s.local_ip, (Ip{10, 0, 0, 1}));
  EXPECT_EQ(s.remote_ip, (Ip{10, 0, 0, 2}));
  EXPECT_EQ(s.cookie, 0x5511223344u);
  EXPECT_EQ(s.uid, 1000u);
  EXPECT_EQ(s.inode, 77u);
  done = Parse(NlMsg(NLMSG_DONE, 3, Bytes(0)), &out);
  ASSERT_TRUE(done.ok());
  EXPECT_TRUE(*done);
}

TEST(ParseSockDiagRepliesTest, ReportsErrorsAndMalformedInput) {
  std::vector<SnapshotSocket> out;
  auto error = Parse(NlMsg(NLMSG_ERROR, 3, Bytes(-EPERM)), &out);
  EXPECT_EQ(error.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_FALSE(Parse(NlMsg(NLMSG_DONE, 3, Bytes(-ENOBUFS)), &out).ok());
  EXPECT_FALSE(Parse(NlMsg(NLMSG_ERROR, 3, ""), &out).ok());
  EXPECT_FALSE(Parse(NlMsg(SOCK_DIAG_BY_FAMILY, 3, "short"), &out).ok());
  auto ack = Parse(NlMsg(NLMSG_ERROR, 3, Bytes(0)), &out);
  ASSERT_TRUE(ack.ok());
  EXPECT_FALSE(*ack);
  std::string bad_len = NlMsg(NLMSG_DONE, 3, Bytes(0));
  for (uint32_t len : {0u, 15u, 21u, 0xffffffffu}) {
    std::memcpy(bad_len.data(), &len, sizeof(len));
    EXPECT_FALSE(Parse(bad_len, &out).ok()) << len;
  }
  EXPECT_THAT(out, IsEmpty());
}

// Truncated and randomly corrupted dumps must fail cleanly, never read out of
// bounds: exact-size heap copies let ASan catch any over-read.
TEST(ParseSockDiagRepliesTest, BadInputNeverCrashes) {
  const std::string valid = NlMsg(SOCK_DIAG_BY_FAMILY, 3, DiagMsg(10)) +
                            NlMsg(NLMSG_DONE, 3, Bytes(0));
  std::vector<SnapshotSocket> out;
  for (size_t i = 0; i <= valid.size(); ++i) {
    std::vector<char> copy(valid.begin(), valid.begin() + i);
    auto done = Parse(absl::string_view(copy.data(), copy.size()), &out);
    EXPECT_TRUE(!done.ok() || !*done || i == valid.size()) << i;
  }
  std::mt19937 rng(42);
  for (int i = 0; i < 5000; ++i) {
    std::vector<char> copy(valid.begin(), valid.end());
    for (int flips = rng() % 4 + 1; flips > 0; --flips) {
      copy[rng() % copy.size()] = static_cast<char>(rng());
    }
    copy.resize(rng() % (copy.size() + 1));
    (void)Parse(absl::string_view(copy.data(), copy.size()), &out).ok();
  }
}

}  // namespace
}  // namespace sockwatch
