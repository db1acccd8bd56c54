#include "tests/integration/collector_harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "collector/store.h"
#include "tests/integration/harness.h"

namespace sockwatch::testing {

std::string CollectorPath() { return SW_COLLECTOR_PATH; }
std::string MakeCertsPath() { return SW_MAKE_CERTS_PATH; }

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

TestPki::TestPki(const std::vector<std::string>& hosts) {
  char tmpl[] = "/tmp/sw_pki_XXXXXX";
  dir = mkdtemp(tmpl);
  std::string cmd = absl::StrCat(MakeCertsPath(), " --out ", dir);
  for (const std::string& h : hosts) absl::StrAppend(&cmd, " ", h);
  ok_ = Run(cmd + " >/dev/null") == 0;
}

TestPki::~TestPki() { std::filesystem::remove_all(dir); }

std::vector<std::string> TestPki::CollectorFlags() const {
  return {"--tls_ca=" + ca(), "--tls_cert=" + dir + "/collector.pem",
          "--tls_key=" + dir + "/collector.key"};
}

std::vector<std::string> TestPki::AgentFlags(const std::string& host) const {
  return {"--host_id=" + host, "--tls_ca=" + ca(), "--tls_cert=" + agent_cert(host),
          "--tls_key=" + agent_key(host)};
}

std::unique_ptr<CollectorProcess> CollectorProcess::Start(int port, const std::string& db_path,
                                                          const std::vector<std::string>& flags) {
  auto c = std::unique_ptr<CollectorProcess>(new CollectorProcess());
  c->port_ = port;
  char tmpl[] = "/tmp/sw_collector_stderr_XXXXXX";
  int err_fd = mkstemp(tmpl);
  c->stderr_path_ = tmpl;
  std::vector<std::string> argv = {CollectorPath(), absl::StrCat("--listen=127.0.0.1:", port),
                                   "--store=sqlite:" + db_path, "--stats_interval=1s"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  std::vector<char*> args;
  for (auto& s : argv) args.push_back(s.data());
  args.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(err_fd, 2);
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, 0);
    dup2(devnull, 1);
    execv(args[0], args.data());
    _exit(127);
  }
  close(err_fd);
  c->pid_ = pid;
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    if (absl::StrContains(c->Stderr(), "listening on")) return c;
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      c->stopped_ = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  fprintf(stderr, "collector did not start:\n%s\n", c->Stderr().c_str());
  return nullptr;
}

CollectorProcess::~CollectorProcess() {
  Stop(SIGKILL);
  unlink(stderr_path_.c_str());
}

int CollectorProcess::Stop(int sig) {
  if (stopped_) return exit_status_;
  stopped_ = true;
  kill(pid_, sig);
  int st = 0;
  waitpid(pid_, &st, 0);
  exit_status_ = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return exit_status_;
}

std::string CollectorProcess::Stderr() const {
  std::ifstream f(stderr_path_);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string CollectorProcess::address() const { return absl::StrCat("127.0.0.1:", port_); }

std::map<std::string, StoredInstance> ReadStore(const std::string& db_path,
                                                const std::string& host_id) {
  std::map<std::string, StoredInstance> out;
  auto store = OpenStore("sqlite:" + db_path);
  if (!store.ok()) {
    fprintf(stderr, "store: %s\n", store.status().ToString().c_str());
    return out;
  }
  EventQuery q;
  q.host_id = host_id;
  q.limit = 100000000;
  auto events = (*store)->Events(q);
  if (!events.ok()) {
    fprintf(stderr, "store: %s\n", events.status().ToString().c_str());
    return out;
  }
  for (v1::Envelope& e : *events) {
    StoredInstance& s = out[e.agent_instance()];
    s.seqs.push_back(e.seq());
    if (e.has_loss() && e.loss().reason() == "spool") s.loss_spool += e.loss().count();
    if (e.has_network()) s.network.push_back(std::move(e));
  }
  for (auto& [_, s] : out) std::sort(s.seqs.begin(), s.seqs.end());
  return out;
}

uint64_t MissingSeqs(const std::vector<uint64_t>& seqs) {
  if (seqs.empty()) return 0;
  uint64_t distinct = 1;
  for (size_t i = 1; i < seqs.size(); ++i) distinct += seqs[i] != seqs[i - 1];
  return seqs.back() - distinct;
}

uint64_t RepeatedSeqs(const std::vector<uint64_t>& seqs) {
  uint64_t n = 0;
  for (size_t i = 1; i < seqs.size(); ++i) n += seqs[i] == seqs[i - 1];
  return n;
}

}  // namespace sockwatch::testing
