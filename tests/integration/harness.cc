#include "tests/integration/harness.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <linux/sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <filesystem>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace sockwatch::testing {

int Run(const std::string& cmd) {
  int rc = system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string Capture(const std::string& cmd) {
  std::string out;
  FILE* f = popen(cmd.c_str(), "r");
  if (!f) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  pclose(f);
  return out;
}

uint64_t BootNs() {
  timespec t;
  clock_gettime(CLOCK_BOOTTIME, &t);
  return uint64_t(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

uint64_t OwnCgroupId() {
  std::ifstream cg("/proc/self/cgroup");
  std::string line, path;
  while (std::getline(cg, line))
    if (absl::StartsWith(line, "0::")) path = line.substr(3);
  std::ifstream mounts("/proc/mounts");
  std::string mount;
  while (std::getline(mounts, line)) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (f.size() > 2 && f[2] == "cgroup2") mount = f[1];
  }
  struct stat st;
  if (mount.empty() || stat((mount + path).c_str(), &st) != 0) return 0;
  return st.st_ino;
}

std::string TestPeerPath() {
  char buf[PATH_MAX];
  return realpath(SW_TESTPEER_PATH, buf) ? buf : SW_TESTPEER_PATH;
}

std::string AgentPath() { return SW_AGENT_PATH; }

NetPair::NetPair() {
  const std::string id = std::to_string(getpid());
  client_ns = "swc" + id;
  server_ns = "sws" + id;
  // Leftovers of earlier runs that died before cleaning up.
  for (const auto& line : absl::StrSplit(Capture("ip netns list"), '\n')) {
    std::string name(absl::StripAsciiWhitespace(std::string(line).substr(0, line.find(' '))));
    if (name.size() > 3 && (absl::StartsWith(name, "swc") || absl::StartsWith(name, "sws"))) {
      const std::string pid = name.substr(3);
      if (access(("/proc/" + pid).c_str(), F_OK) != 0) Run("ip netns del " + name + " 2>/dev/null");
    }
  }
  const std::string c = client_ns, s = server_ns;
  const std::string script = absl::StrCat(
      "set -e\n",
      "ip netns add ", c, "\n",
      "ip netns add ", s, "\n",
      "ip link add ", c, " netns ", c, " type veth peer name ", s, " netns ", s, "\n",
      "ip -n ", c, " link set lo up\n",
      "ip -n ", s, " link set lo up\n",
      "ip -n ", c, " addr add ", client_v4, "/24 dev ", c, "\n",
      "ip -n ", c, " addr add ", client_v4_blackholed, "/24 dev ", c, "\n",
      "ip -n ", s, " addr add ", server_v4, "/24 dev ", s, "\n",
      "ip -n ", c, " -6 addr add ", client_v6, "/64 dev ", c, " nodad\n",
      "ip -n ", s, " -6 addr add ", server_v6, "/64 dev ", s, " nodad\n",
      "ip -n ", c, " link set ", c, " up\n",
      "ip -n ", s, " link set ", s, " up\n",
      // Replies to this client address vanish: its connects time out.
      "ip -n ", s, " route add blackhole ", client_v4_blackholed, "/32\n",
      // Two SYN retries: a timeout takes ~3 s instead of ~2 min.
      "ip netns exec ", c, " sysctl -qw net.ipv4.tcp_syn_retries=1\n");
  ok_ = Run("bash -c '" + script + "'") == 0;
}

static uint32_t NsInode(const std::string& name) {
  struct stat st;
  return stat(("/run/netns/" + name).c_str(), &st) == 0 ? st.st_ino : 0;
}
uint32_t NetPair::client_netns() const { return NsInode(client_ns); }
uint32_t NetPair::server_netns() const { return NsInode(server_ns); }

NetPair::~NetPair() {
  Run("ip netns del " + client_ns + " 2>/dev/null");
  Run("ip netns del " + server_ns + " 2>/dev/null");
}

std::unique_ptr<Child> Child::Spawn(const std::string& netns, const std::vector<std::string>& argv,
                                    const std::string& cwd, pid_t want_pid, int exec_fd,
                                    const std::string& cgroup_dir) {
  int out[2], in[2];
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(in, O_CLOEXEC) != 0) return nullptr;
  int ns_fd = -1;
  if (!netns.empty()) {
    ns_fd = open(("/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
    if (ns_fd < 0) return nullptr;
  }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int cg_fd = -1;
  if (!cgroup_dir.empty()) {
    cg_fd = open((cgroup_dir + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC);
    if (cg_fd < 0) return nullptr;
  }
  auto child = std::make_unique<Child>();
  child->argv = argv;
  child->boot_before = BootNs();
  pid_t pid;
  if (want_pid) {
    clone_args ca = {};
    ca.exit_signal = SIGCHLD;
    ca.set_tid = reinterpret_cast<uint64_t>(&want_pid);
    ca.set_tid_size = 1;
    pid = syscall(SYS_clone3, &ca, sizeof(ca));
  } else {
    pid = fork();
  }
  if (pid < 0) return nullptr;
  if (pid == 0) {
    // Only async-signal-safe calls between fork and exec.
    if (ns_fd >= 0 && setns(ns_fd, CLONE_NEWNET) != 0) _exit(126);
    if (cg_fd >= 0 && write(cg_fd, "0", 1) != 1) _exit(126);
    if (!cwd.empty() && chdir(cwd.c_str()) != 0) _exit(126);
    dup2(in[0], 0);
    dup2(out[1], 1);
    if (exec_fd >= 0)
      fexecve(exec_fd, args.data(), environ);
    else
      execv(args[0], args.data());
    _exit(127);
  }
  child->boot_after = BootNs();
  if (ns_fd >= 0) close(ns_fd);
  if (cg_fd >= 0) close(cg_fd);
  close(out[1]);
  close(in[0]);
  child->pid = pid;
  child->out_ = out[0];
  child->in_ = in[1];
  return child;
}

Child::~Child() {
  if (!reaped_ && pid > 0) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
  if (out_ >= 0) close(out_);
  if (in_ >= 0) close(in_);
}

std::string Child::ReadLine(absl::Duration timeout) {
  std::string line;
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    pollfd p = {out_, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    char c;
    if (read(out_, &c, 1) != 1) break;
    if (c == '\n') return line;
    line += c;
  }
  return line;
}

void Child::CloseStdin() {
  if (in_ >= 0) close(in_);
  in_ = -1;
}

int Child::Wait(absl::Duration timeout) {
  if (reaped_) return status_;
  const absl::Time deadline = absl::Now() + timeout;
  int st = 0;
  while (absl::Now() < deadline) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      reaped_ = true;
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
      return status_;
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  return -1;
}

std::unique_ptr<AgentProcess> AgentProcess::Start(const std::vector<std::string>& flags) {
  auto a = std::unique_ptr<AgentProcess>(new AgentProcess());
  char tmpl[] = "/tmp/sw_agent_stderr_XXXXXX";
  int err_fd = mkstemp(tmpl);
  a->stderr_path_ = tmpl;
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return nullptr;
  std::vector<std::string> argv = {AgentPath(), "--print=json"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  if (std::none_of(flags.begin(), flags.end(),
                   [](const std::string& f) { return absl::StartsWith(f, "--state_dir"); })) {
    char dir[] = "/tmp/sw_state_XXXXXX";
    a->own_state_dir_ = mkdtemp(dir);
    argv.push_back("--state_dir=" + a->own_state_dir_);
  }
  std::vector<char*> args;
  for (auto& s : argv) args.push_back(s.data());
  args.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(err_fd, 2);
    execv(args[0], args.data());
    _exit(127);
  }
  close(out[1]);
  close(err_fd);
  a->pid_ = pid;
  a->out_ = out[0];
  a->reader_ = std::thread([p = a.get()] { p->ReadLoop(); });
  if (!a->WaitFor([](const v1::Envelope& e) { return e.has_coverage(); }, absl::Seconds(30))) {
    fprintf(stderr, "agent did not start:\n%s\n", a->Stderr().c_str());
    return nullptr;
  }
  return a;
}

void AgentProcess::ReadLoop() {
  std::string buf;
  char chunk[65536];
  for (;;) {
    ssize_t n = read(out_, chunk, sizeof(chunk));
    if (n <= 0) break;
    buf.append(chunk, n);
    size_t start = 0, nl;
    while ((nl = buf.find('\n', start)) != std::string::npos) {
      v1::Envelope env;
      const std::string line = buf.substr(start, nl - start);
      start = nl + 1;
      const bool ok = google::protobuf::util::JsonStringToMessage(line, &env).ok();
      std::lock_guard<std::mutex> l(mu_);
      if (ok)
        events_.push_back(std::move(env));
      else
        ++parse_errors_;
    }
    buf.erase(0, start);
    cv_.notify_all();
  }
  std::lock_guard<std::mutex> l(mu_);
  eof_ = true;
  cv_.notify_all();
}

std::optional<v1::Envelope> AgentProcess::WaitFor(const Pred& pred, absl::Duration timeout) {
  std::unique_lock<std::mutex> l(mu_);
  size_t checked = 0;
  const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(timeout);
  for (;;) {
    for (; checked < events_.size(); ++checked)
      if (pred(events_[checked])) return events_[checked];
    if (eof_) return std::nullopt;
    if (cv_.wait_until(l, deadline) == std::cv_status::timeout) {
      for (; checked < events_.size(); ++checked)
        if (pred(events_[checked])) return events_[checked];
      return std::nullopt;
    }
  }
}

std::vector<v1::Envelope> AgentProcess::All(const Pred& pred) {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<v1::Envelope> out;
  for (const auto& e : events_)
    if (pred(e)) out.push_back(e);
  return out;
}

int AgentProcess::Stop(int sig) {
  if (stopped_) return exit_status_;
  stopped_ = true;
  kill(pid_, sig);
  int st = 0;
  waitpid(pid_, &st, 0);
  if (reader_.joinable()) reader_.join();
  exit_status_ = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return exit_status_;
}

AgentProcess::~AgentProcess() {
  Stop();
  if (out_ >= 0) close(out_);
  unlink(stderr_path_.c_str());
  if (!own_state_dir_.empty()) std::filesystem::remove_all(own_state_dir_);
}

std::string AgentProcess::Stderr() const {
  std::ifstream f(stderr_path_);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

AgentProcess::Pred NetEvent(v1::NetworkKind kind, pid_t pid) {
  return [=](const v1::Envelope& e) {
    return e.has_network() && e.network().kind() == kind &&
           e.network().process().pid() == static_cast<uint32_t>(pid);
  };
}

AgentProcess::Pred ExecOf(pid_t pid) {
  return [=](const v1::Envelope& e) {
    return e.has_exec() && e.exec().process().pid() == static_cast<uint32_t>(pid);
  };
}

}  // namespace sockwatch::testing
