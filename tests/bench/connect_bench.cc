// What the agent adds to a TCP connection on loopback: one thread does
// socket + connect + accept + close (server side first, then client) N times
// and times each, in phases without the agent and with it running
// (`sockwatch-agent --print=none --snapshot=false` as a child), interleaved
// off, on, off, on, ..., off so that machine noise and drift hit both alike.
// Each phase runs in a fresh network namespace: its TIME_WAIT sockets (one per
// connection) stay under the per-namespace limit (tcp_max_tw_buckets) and no
// phase inherits another's. The agent's probes are global, so it sees them.
// Phases wait while another loader's sockwatch probes are attached (shared
// machines run integration tests), and one that saw them come or go is re-run.
// Target: at most 5% added connect latency. See BENCHMARKS.md.
//
//   sudo connect_bench [--connections=20000] [--rounds=5] [--warmup=1000]
//                      [--agent=PATH] [--agent-arg=FLAG]... [--settle-ms=500]
//                      [--cpu=N]
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifndef SOCKWATCH_AGENT_PATH
#define SOCKWATCH_AGENT_PATH "build/agent/sockwatch-agent"
#endif

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  int connections = 20000;
  int rounds = 5;
  int warmup = 1000;
  int settle_ms = 500;
  int cpu = -1;
  std::string agent = SOCKWATCH_AGENT_PATH;
  std::vector<std::string> agent_args;
};

pid_t g_agent_pid = -1;  // running child agent, stopped on the way out

[[noreturn]] void Die(const std::string& msg) {
  if (g_agent_pid > 0) kill(g_agent_pid, SIGTERM);
  fprintf(stderr, "connect_bench: %s\n", msg.c_str());
  exit(1);
}

[[noreturn]] void DieErrno(const std::string& what) { Die(what + ": " + strerror(errno)); }

void Usage(FILE* f) {
  fprintf(f,
          "usage: sudo connect_bench [--connections=N] [--rounds=R] [--warmup=N]\n"
          "                          [--agent=PATH] [--agent-arg=FLAG]... [--settle-ms=MS] "
          "[--cpu=N]\n"
          "  --connections  timed connections per phase (default 20000)\n"
          "  --rounds       phases with the agent; there is one more without (default 5)\n"
          "  --warmup       untimed connections before each phase (default 1000)\n"
          "  --agent        agent binary (default %s)\n"
          "  --agent-arg    extra agent flag, repeatable (after --print=none "
          "--snapshot=false)\n"
          "  --settle-ms    pause between phases (default 500)\n"
          "  --cpu          pin the timed thread to this CPU (default: not pinned)\n",
          SOCKWATCH_AGENT_PATH);
}

int IntFlag(const std::string& arg, const std::string& value, int min) {
  char* end = nullptr;
  const long v = strtol(value.c_str(), &end, 10);
  if (value.empty() || *end || v < min || v > 100'000'000) Die("bad value in " + arg);
  return int(v);
}

Options ParseFlags(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const size_t eq = a.find('=');
    const std::string name = a.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : a.substr(eq + 1);
    if (a == "--help" || a == "-h") {
      Usage(stdout);
      exit(0);
    } else if (name == "--connections") {
      o.connections = IntFlag(a, value, 1);
    } else if (name == "--rounds") {
      o.rounds = IntFlag(a, value, 1);
    } else if (name == "--warmup") {
      o.warmup = IntFlag(a, value, 0);
    } else if (name == "--settle-ms") {
      o.settle_ms = IntFlag(a, value, 0);
    } else if (name == "--cpu") {
      o.cpu = IntFlag(a, value, 0);
    } else if (name == "--agent" && !value.empty()) {
      o.agent = value;
    } else if (name == "--agent-arg" && !value.empty()) {
      o.agent_args.push_back(value);
    } else {
      Usage(stderr);
      Die("unknown argument " + a);
    }
  }
  return o;
}

// The agent as a child: stdout to /dev/null, stderr read by a thread so that
// it can never block on a full pipe.
class AgentProcess {
 public:
  explicit AgentProcess(const Options& o) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) DieErrno("pipe");
    std::vector<std::string> args = {o.agent, "--print=none", "--snapshot=false"};
    args.insert(args.end(), o.agent_args.begin(), o.agent_args.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ < 0) DieErrno("fork");
    if (pid_ == 0) {
      // The agent must not outlive us, however we end.
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      const int null_fd = open("/dev/null", O_RDWR);
      dup2(null_fd, 0);
      dup2(null_fd, 1);
      dup2(fds[1], 2);
      execv(argv[0], argv.data());
      static const char kMsg[] = "connect_bench: exec of the agent failed\n";
      (void)!write(2, kMsg, sizeof(kMsg) - 1);
      _exit(127);
    }
    g_agent_pid = pid_;
    close(fds[1]);
    reader_ = std::thread([this, fd = fds[0]] {
      char buf[4096];
      ssize_t n;
      while ((n = read(fd, buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR)) {
        if (n <= 0) continue;
        std::lock_guard<std::mutex> l(mu_);
        err_.append(buf, n);
        cv_.notify_all();
      }
      close(fd);
      std::lock_guard<std::mutex> l(mu_);
      eof_ = true;
      cv_.notify_all();
    });
  }

  ~AgentProcess() {
    if (pid_ > 0) Stop();
  }

  // Until its stderr says "running" (probes attached): true; false if it
  // exited or took longer than the timeout.
  bool WaitRunning(std::chrono::seconds timeout) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, timeout, [this] {
      return eof_ || err_.find("running") != std::string::npos;
    }) && !eof_;
  }

  // SIGTERM, wait; returns the exit status.
  int Stop() {
    kill(pid_, SIGTERM);
    g_agent_pid = -1;
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    if (reader_.joinable()) reader_.join();
    return status;
  }

  // utime + stime, seconds, from /proc/PID/stat.
  double CpuSeconds() const {
    std::ifstream f("/proc/" + std::to_string(pid_) + "/stat");
    std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const size_t paren = s.rfind(')');
    if (paren == std::string::npos) return 0;
    std::istringstream in(s.substr(paren + 2));
    std::string field;
    unsigned long long utime = 0, stime = 0;
    for (int i = 3; i <= 15 && in >> field; ++i) {  // fields 14 and 15
      if (i == 14) utime = std::stoull(field);
      if (i == 15) stime = std::stoull(field);
    }
    return double(utime + stime) / sysconf(_SC_CLK_TCK);
  }

  std::string Stderr() {
    std::lock_guard<std::mutex> l(mu_);
    return err_;
  }

 private:
  pid_t pid_ = -1;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string err_;
  bool eof_ = false;
};

// Loaded BPF programs of any sockwatch loader: an agent, ours or another, or
// a test that loads the probes in-process. Their names all start with "sw_".
// On a shared machine (integration tests load them) phases wait until there
// are none, and a phase during which the count changed is run again.
int SockwatchPrograms() {
  int n = 0;
  for (__u32 id = 0; bpf_prog_get_next_id(id, &id) == 0;) {
    const int fd = bpf_prog_get_fd_by_id(id);
    if (fd < 0) continue;  // unloaded meanwhile
    bpf_prog_info info = {};
    __u32 len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && strncmp(info.name, "sw_", 3) == 0) ++n;
    close(fd);
  }
  return n;
}

void WaitNoSockwatchPrograms() {
  for (int tenths = 0;; ++tenths) {
    const int n = SockwatchPrograms();
    if (n == 0) return;
    if (tenths == 20) printf("  (%d sockwatch BPF programs of another loader are attached: waiting)\n", n);
    if (tenths == 3000) Die("another sockwatch loader kept its probes attached for 5 minutes");
    usleep(100'000);
  }
}

// A new network namespace for the calling thread, loopback up.
void EnterFreshNetns() {
  if (unshare(CLONE_NEWNET) != 0) DieErrno("unshare(CLONE_NEWNET)");
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) DieErrno("socket");
  ifreq ifr = {};
  strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (ioctl(fd, SIOCGIFFLAGS, &ifr) != 0) DieErrno("SIOCGIFFLAGS lo");
  ifr.ifr_flags |= IFF_UP;
  if (ioctl(fd, SIOCSIFFLAGS, &ifr) != 0) DieErrno("SIOCSIFFLAGS lo");
  close(fd);
}

struct Stats {
  double p50 = 0, p90 = 0, p99 = 0;
};

Stats Percentiles(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[std::min(v.size() - 1, size_t(q * v.size()))]; };
  return {at(0.5), at(0.9), at(0.99)};
}

struct PhaseResult {
  bool agent = false;
  Stats connect, cycle;  // microseconds
  double conn_per_s = 0;
  double agent_cpu_s = 0;
  long long agent_events = -1;
  std::string agent_losses;
  bool disturbed = false;  // another loader's probes came or went
};

// socket + connect (timed as "connect"), then accept, close server side,
// close client side (all of it timed as "cycle").
void RunConnections(int listener, const sockaddr_in& addr, int n, std::vector<double>* connect_us,
                    std::vector<double>* cycle_us) {
  for (int i = 0; i < n; ++i) {
    const auto t0 = Clock::now();
    const int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0) DieErrno("socket");
    if (connect(c, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0)
      DieErrno("connect");
    const auto t1 = Clock::now();
    const int s = accept(listener, nullptr, nullptr);
    if (s < 0) DieErrno("accept");
    close(s);
    close(c);
    const auto t2 = Clock::now();
    if (connect_us) {
      connect_us->push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
      cycle_us->push_back(std::chrono::duration<double, std::micro>(t2 - t0).count());
    }
  }
}

PhaseResult RunPhase(const Options& o, bool with_agent, int orig_netns, int connections) {
  PhaseResult r;
  r.agent = with_agent;
  std::unique_ptr<AgentProcess> agent;
  if (with_agent) {
    agent = std::make_unique<AgentProcess>(o);
    if (!agent->WaitRunning(std::chrono::seconds(60))) {
      agent->Stop();
      Die("the agent did not start:\n" + agent->Stderr());
    }
  }

  EnterFreshNetns();
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) DieErrno("socket");
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) DieErrno("bind");
  if (listen(listener, 4096) != 0) DieErrno("listen");
  if (getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    DieErrno("getsockname");

  const int programs = SockwatchPrograms();  // 0, or our agent's
  r.disturbed = with_agent && programs == 0;
  RunConnections(listener, addr, o.warmup, nullptr, nullptr);
  std::vector<double> connect_us, cycle_us;
  connect_us.reserve(connections);
  cycle_us.reserve(connections);
  const double cpu0 = agent ? agent->CpuSeconds() : 0;
  const auto start = Clock::now();
  RunConnections(listener, addr, connections, &connect_us, &cycle_us);
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  if (agent) r.agent_cpu_s = agent->CpuSeconds() - cpu0;
  r.disturbed |= SockwatchPrograms() != programs;
  close(listener);
  if (setns(orig_netns, CLONE_NEWNET) != 0) DieErrno("setns back");

  if (agent) {
    const int status = agent->Stop();
    const std::string err = agent->Stderr();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      Die("the agent failed (status " + std::to_string(status) + "):\n" + err);
    if (size_t p = err.find("stopped after "); p != std::string::npos)
      r.agent_events = atoll(err.c_str() + p + sizeof("stopped after ") - 1);
    std::istringstream lines(err);
    for (std::string line; std::getline(lines, line);)
      if (size_t p = line.find(": lost "); p != std::string::npos)
        r.agent_losses += (r.agent_losses.empty() ? "" : ", ") + line.substr(p + 7);
  }
  r.connect = Percentiles(connect_us);
  r.cycle = Percentiles(cycle_us);
  r.conn_per_s = connections / secs;
  return r;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = ParseFlags(argc, argv);
  setvbuf(stdout, nullptr, _IOLBF, 0);
  if (geteuid() != 0) {
    fprintf(stderr,
            "connect_bench: needs root: it starts the agent (which loads BPF programs) and makes "
            "network namespaces.\nRun: sudo %s\n",
            argv[0]);
    return 2;
  }
  if (access(o.agent.c_str(), X_OK) != 0)
    Die("agent " + o.agent + " is not executable (build it, or pass --agent=PATH)");
  signal(SIGPIPE, SIG_IGN);
  if (o.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(o.cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0) DieErrno("sched_setaffinity");
  }
  const int orig_netns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  if (orig_netns < 0) DieErrno("open /proc/self/ns/net");

  utsname u = {};
  uname(&u);
  printf("connect_bench: TCP socket+connect+accept+close on loopback, one thread\n");
  printf("  kernel %s, %ld CPUs online, %d timed connections per phase (+%d warmup), "
         "%d rounds%s\n",
         u.release, sysconf(_SC_NPROCESSORS_ONLN), o.connections, o.warmup, o.rounds,
         o.cpu >= 0 ? (", timed thread on CPU " + std::to_string(o.cpu)).c_str() : "");
  std::string agent_cmd = o.agent + " --print=none --snapshot=false";
  for (const std::string& a : o.agent_args) agent_cmd += " " + a;
  printf("  agent: %s\n", agent_cmd.c_str());
  printf("  connect = socket()+connect(); cycle = connect + accept() + close() both ends; "
         "microseconds\n\n");

  WaitNoSockwatchPrograms();
  RunPhase(o, false, orig_netns, std::max(1, o.connections / 4));  // untimed: warm everything

  printf("%-5s %-5s | %-22s | %-22s | %8s | %9s %8s  %s\n", "phase", "agent",
         "connect p50 p90 p99", "cycle p50 p90 p99", "conn/s", "agent CPU", "ev/conn",
         "agent losses");
  std::vector<PhaseResult> results;
  int disturbed = 0;
  for (int i = 0; i < 2 * o.rounds + 1; ++i) {
    const bool on = i % 2 == 1;
    PhaseResult r;
    for (int attempt = 1;; ++attempt) {
      WaitNoSockwatchPrograms();
      usleep(o.settle_ms * 1000);
      r = RunPhase(o, on, orig_netns, o.connections);
      if (!r.disturbed) break;
      if (attempt == 3) {
        printf("  (phase %d: disturbed 3 times by another sockwatch loader: kept anyway)\n", i + 1);
        ++disturbed;
        break;
      }
      printf("  (phase %d: another sockwatch loader attached or detached probes during it: run again)\n", i + 1);
    }
    char agent_cols[64] = "";
    if (on)
      snprintf(agent_cols, sizeof(agent_cols), "%7.2fs %8.2f", r.agent_cpu_s,
               r.agent_events < 0 ? -1.0 : double(r.agent_events) / (o.connections + o.warmup));
    printf("%-5d %-5s | %6.1f %6.1f %7.1f | %6.1f %6.1f %7.1f | %8.0f | %18s  %s\n", i + 1,
           on ? "on" : "off", r.connect.p50, r.connect.p90, r.connect.p99, r.cycle.p50,
           r.cycle.p90, r.cycle.p99, r.conn_per_s, agent_cols,
           on ? (r.agent_losses.empty() ? "none" : r.agent_losses.c_str()) : "");
    results.push_back(r);
  }

  struct Metric {
    const char* name;
    double (*get)(const PhaseResult&);
    bool higher_is_better;
  };
  const Metric metrics[] = {
      {"connect p50 (us)", [](const PhaseResult& r) { return r.connect.p50; }, false},
      {"connect p90 (us)", [](const PhaseResult& r) { return r.connect.p90; }, false},
      {"connect p99 (us)", [](const PhaseResult& r) { return r.connect.p99; }, false},
      {"cycle p50 (us)", [](const PhaseResult& r) { return r.cycle.p50; }, false},
      {"cycle p90 (us)", [](const PhaseResult& r) { return r.cycle.p90; }, false},
      {"cycle p99 (us)", [](const PhaseResult& r) { return r.cycle.p99; }, false},
      {"throughput (conn/s)", [](const PhaseResult& r) { return r.conn_per_s; }, true},
  };
  printf("\nmedian over phases (%d off, %d on); 'bracketed' = median over rounds of\n"
         "on / mean(off before, off after), which cancels drift\n",
         o.rounds + 1, o.rounds);
  printf("%-20s %10s %10s %8s %10s\n", "", "off", "on", "on/off", "bracketed");
  double connect_bracketed = 0;
  for (const Metric& m : metrics) {
    std::vector<double> off, on, bracketed;
    for (size_t i = 0; i < results.size(); ++i) {
      (results[i].agent ? on : off).push_back(m.get(results[i]));
      if (results[i].agent)
        bracketed.push_back(m.get(results[i]) /
                            ((m.get(results[i - 1]) + m.get(results[i + 1])) / 2));
    }
    const double b = Median(bracketed);
    if (m.get == metrics[0].get) connect_bracketed = b;
    printf("%-20s %10.1f %10.1f %8.3f %10.3f\n", m.name, Median(off), Median(on),
           Median(on) / Median(off), b);
  }
  std::vector<double> cpu_per_conn;
  for (const PhaseResult& r : results)
    if (r.agent) cpu_per_conn.push_back(r.agent_cpu_s * 1e6 / o.connections);
  printf("agent process CPU (user + system) per connection, median: %.2f us; its BPF programs "
         "run inside the timed syscalls and are not in this figure\n",
         Median(cpu_per_conn));
  if (disturbed)
    printf("WARNING: %d phases ran while another sockwatch loader changed its probes\n", disturbed);
  const double added = (connect_bracketed - 1) * 100;
  printf("\ntarget: at most 5%% added connect latency (p50, bracketed): %+.1f%% -> %s\n", added,
         added <= 5.0 ? "MET" : "NOT MET");
  return 0;
}
