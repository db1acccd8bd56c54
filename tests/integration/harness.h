// Privileged integration test harness: two network namespaces joined by veth,
// child processes started inside them, and a real sockwatch-agent whose JSON
// lines are parsed back into envelopes.
#ifndef SOCKWATCH_TESTS_INTEGRATION_HARNESS_H_
#define SOCKWATCH_TESTS_INTEGRATION_HARNESS_H_

#include <sys/types.h>

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "sockwatch/v1/event.pb.h"

namespace sockwatch::testing {

// Runs a shell command; returns its exit status (stdout/stderr pass through).
int Run(const std::string& cmd);
// Runs a shell command and returns its stdout; "" on failure.
std::string Capture(const std::string& cmd);

uint64_t BootNs();
// cgroup v2 id (directory inode) of this process.
uint64_t OwnCgroupId();
std::string TestPeerPath();  // canonical path of sw_testpeer
std::string AgentPath();

// A client host and a server host: namespaces "swc<pid>" and "sws<pid>",
// joined by veth, with IPv4 and IPv6 addresses. Deleted on destruction (and
// leftovers of dead test runs are deleted on creation).
class NetPair {
 public:
  NetPair();
  ~NetPair();
  bool ok() const { return ok_; }
  // Inode of each namespace, as events report it in `netns`.
  uint32_t client_netns() const;
  uint32_t server_netns() const;

  std::string client_ns, server_ns;
  std::string client_v4 = "10.231.0.1", server_v4 = "10.231.0.2";
  std::string client_v6 = "fd00:231::1", server_v6 = "fd00:231::2";
  // An extra client address whose replies the server blackholes (timeouts).
  std::string client_v4_blackholed = "10.231.0.3";

 private:
  bool ok_ = false;
};

// A process started by the test, optionally inside a network namespace.
class Child {
 public:
  // netns "" = this namespace. argv[0] is the program (absolute or relative
  // to cwd). stdin is a pipe the test may close; stdout is a pipe.
  // want_pid != 0 asks the kernel for that pid (clone3 set_tid): pid reuse.
  // exec_fd >= 0 runs that open file (fexecve) instead of argv[0]: deleted
  // and memfd executables. cgroup_dir: a cgroup v2 directory the child joins
  // before exec (containers).
  static std::unique_ptr<Child> Spawn(const std::string& netns, const std::vector<std::string>& argv,
                                      const std::string& cwd = "", pid_t want_pid = 0,
                                      int exec_fd = -1, const std::string& cgroup_dir = "");
  ~Child();
  // Reads one line of stdout ("" on EOF or timeout).
  std::string ReadLine(absl::Duration timeout = absl::Seconds(10));
  void CloseStdin();
  // Exit status (WEXITSTATUS), or -1 when killed / timed out.
  int Wait(absl::Duration timeout = absl::Seconds(30));

  pid_t pid = -1;
  uint64_t boot_before = 0, boot_after = 0;  // CLOCK_BOOTTIME around the fork
  std::vector<std::string> argv;

 private:
  int out_ = -1, in_ = -1;
  bool reaped_ = false;
  int status_ = -1;
};

// A running sockwatch-agent. Waits for its coverage event before returning.
class AgentProcess {
 public:
  // Unless flags name a --state_dir, the agent gets a fresh one of its own
  // (removed with it).
  static std::unique_ptr<AgentProcess> Start(const std::vector<std::string>& flags);
  ~AgentProcess();

  using Pred = std::function<bool(const v1::Envelope&)>;
  // First envelope (seen so far or arriving) matching pred.
  std::optional<v1::Envelope> WaitFor(const Pred& pred, absl::Duration timeout = absl::Seconds(10));
  std::vector<v1::Envelope> All(const Pred& pred);
  // SIGTERM (or sig), wait for the final drain; returns the exit status (-1
  // if killed by a signal).
  int Stop(int sig = 15);
  std::string Stderr() const;
  size_t parse_errors() const { return parse_errors_; }

 private:
  void ReadLoop();

  pid_t pid_ = -1;
  int out_ = -1;
  std::string stderr_path_;
  std::string own_state_dir_;
  std::thread reader_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<v1::Envelope> events_;
  size_t parse_errors_ = 0;
  bool eof_ = false;
  bool stopped_ = false;
  int exit_status_ = -1;
};

// Predicates.
AgentProcess::Pred NetEvent(v1::NetworkKind kind, pid_t pid);
AgentProcess::Pred ExecOf(pid_t pid);

}  // namespace sockwatch::testing

#endif  // SOCKWATCH_TESTS_INTEGRATION_HARNESS_H_
