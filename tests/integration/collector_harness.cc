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
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "agent/exporter.h"
#include "agent/spool.h"
#include "collector/store.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/create_channel.h"
#include "sockwatch/v1/ingest.grpc.pb.h"
#include "tests/integration/harness.h"

namespace sockwatch::testing {

std::string CollectorPath() { return SW_COLLECTOR_PATH; }
std::string MakeCertsPath() { return SW_MAKE_CERTS_PATH; }
#ifdef SW_CLI_PATH
std::string CliPath() { return SW_CLI_PATH; }
#else
std::string CliPath() { return "sockwatch"; }
#endif

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

CliResult RunCli(const std::string& token, int query_port, const std::string& tls_ca,
                 const std::string& scratch, const std::string& args) {
  const std::string out = scratch + "/cli.out", err = scratch + "/cli.err";
  CliResult r;
  // The environment's own credentials must not leak into a test.
  r.status = testing::Run(absl::StrCat("SOCKWATCH_TOKEN='", token,
                                       "' SOCKWATCH_TLS_CERT= SOCKWATCH_TLS_KEY= ", CliPath(),
                                       " --collector=127.0.0.1:", query_port, " --tls_ca=", tls_ca,
                                       " ", args, " >", out, " 2>", err));
  r.out = Capture("cat " + out);
  r.err = Capture("cat " + err);
  return r;
}

std::vector<v1::Envelope> JsonEnvelopes(const std::string& json_lines) {
  std::vector<v1::Envelope> out;
  for (absl::string_view line : absl::StrSplit(json_lines, '\n', absl::SkipEmpty())) {
    v1::Envelope e;
    // (No gtest here: benchmarks link this file.) A line that does not parse
    // becomes an envelope no assertion accepts.
    if (!google::protobuf::util::JsonStringToMessage(std::string(line), &e).ok()) {
      fprintf(stderr, "not an envelope: %s\n", std::string(line).c_str());
      e.Clear();
      e.set_host_id("<unparsable JSON line>");
    }
    out.push_back(e);
  }
  return out;
}

std::vector<std::string> TestStoreBackends() {
  const char* skip = getenv("SOCKWATCH_SKIP_CLICKHOUSE");
  if (skip && std::string(skip) == "1") return {"sqlite"};
  return {"sqlite", "clickhouse"};
}

absl::StatusOr<std::string> TestStoreUrl(const std::string& backend,
                                         const std::string& sqlite_path) {
  if (backend == "sqlite") return "sqlite:" + sqlite_path;
  const char* server = getenv("SOCKWATCH_TEST_CLICKHOUSE");
  if (!server || !*server)
    return absl::FailedPreconditionError(
        "SOCKWATCH_TEST_CLICKHOUSE is not set: run the tests through ctest (which starts a "
        "ClickHouse server on loopback) or set SOCKWATCH_SKIP_CLICKHOUSE=1");
  std::string url = server;
  // Accept "http://HOST:PORT" as well as "clickhouse://HOST:PORT[/DB]".
  if (absl::StartsWith(url, "http://")) url = "clickhouse://" + url.substr(7);
  const size_t authority = url.find("://") + 3;
  if (const size_t slash = url.find('/', authority); slash != std::string::npos)
    url.resize(slash);
  static int counter = 0;
  return absl::StrCat(url, "/sw_it_", getpid(), "_", ++counter);
}

std::unique_ptr<CollectorProcess> CollectorProcess::Start(int port, const std::string& db_path,
                                                          const std::vector<std::string>& flags) {
  auto c = std::unique_ptr<CollectorProcess>(new CollectorProcess());
  c->port_ = port;
  char tmpl[] = "/tmp/sw_collector_stderr_XXXXXX";
  int err_fd = mkstemp(tmpl);
  c->stderr_path_ = tmpl;
  std::vector<std::string> argv = {CollectorPath(), absl::StrCat("--listen=127.0.0.1:", port),
                                   absl::StrContains(db_path, ":") ? "--store=" + db_path
                                                                    : "--store=sqlite:" + db_path,
                                   "--stats_interval=1s"};
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

v1::Envelope SyntheticNetworkEnvelope(const std::string& host, const std::string& instance,
                                      uint64_t seq) {
  v1::Envelope e;
  e.set_host_id(host);
  e.set_agent_instance(instance);
  e.set_seq(seq);
  e.mutable_time()->set_seconds(absl::ToUnixSeconds(absl::Now()));
  v1::NetworkEvent* n = e.mutable_network();
  n->set_kind(v1::NETWORK_KIND_CONNECT);
  n->set_protocol(v1::PROTOCOL_TCP);
  n->set_ip_version(4);
  n->set_local_ip("10.0.0.5");
  n->set_local_port(40000 + seq % 20000);
  n->set_remote_ip(absl::StrCat("192.0.2.", seq % 250));
  n->set_remote_port(443);
  n->set_direction(v1::DIRECTION_OUTBOUND);
  n->set_outcome(v1::OUTCOME_ESTABLISHED);
  n->set_community_id("1:LQU9qZlK+B5F3KDmev6m5PMibrg=");
  v1::Process* p = n->mutable_process();
  p->set_pid(1000 + seq % 100);
  p->set_ppid(1);
  p->set_exe("/usr/bin/curl");
  p->add_argv("curl");
  p->add_argv("-s");
  p->add_argv("https://example.test/");
  p->set_comm("curl");
  return e;
}

FleetRun StreamFleet(const FleetOptions& opts) {
  FleetRun run;
  struct Sim {
    std::unique_ptr<Spool> spool;
    std::unique_ptr<Exporter> exporter;
  };
  const size_t n = opts.hosts.size();
  std::vector<Sim> sims(n);
  const absl::Time fill_start = absl::Now();
  std::string payload;
  for (size_t i = 0; i < n; ++i) {
    SpoolOptions so;
    so.dir = absl::StrCat(opts.dir, "/spool-", i);
    so.segment_bytes = 1 << 20;
    so.max_bytes = 256 << 20;
    auto spool = Spool::Open(so);
    if (!spool.ok()) {
      run.error = spool.status().ToString();
      return run;
    }
    sims[i].spool = *std::move(spool);
    for (int s = 1; s <= opts.events; ++s) {
      payload.clear();
      SyntheticNetworkEnvelope(opts.hosts[i], "sim", s).SerializeToString(&payload);
      if (auto r = sims[i].spool->Append(payload, absl::Now()); !r.ok()) {
        run.error = r.status().ToString();
        return run;
      }
    }
    if (absl::Status st = sims[i].spool->Flush(); !st.ok()) {
      run.error = st.ToString();
      return run;
    }
  }
  const absl::Time start = absl::Now();
  run.fill = start - fill_start;
  for (size_t i = 0; i < n; ++i) {
    ExporterOptions xo;
    xo.address = opts.address;
    if (opts.pki)
      xo.tls = {opts.pki->ca(), opts.pki->agent_cert(opts.hosts[i]), opts.pki->agent_key(opts.hosts[i])};
    else
      xo.insecure = true;
    xo.batch_envelopes = opts.batch;
    xo.log_prefix = opts.hosts[i];
    v1::Hello hello;
    hello.set_host_id(opts.hosts[i]);
    hello.set_agent_instance("sim");
    auto x = Exporter::Create(xo, sims[i].spool.get(), hello);
    if (!x.ok()) {
      run.error = x.status().ToString();
      return run;
    }
    sims[i].exporter = *std::move(x);
    sims[i].exporter->Start();
  }
  const absl::Time deadline = start + opts.timeout;
  while (absl::Now() < deadline) {
    run.agents_done = 0;
    for (const Sim& s : sims)
      run.agents_done += s.exporter->stats().acked_seq >= static_cast<uint64_t>(opts.events);
    if (run.agents_done == static_cast<int>(n)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  run.took = absl::Now() - start;
  std::vector<std::thread> stops;
  for (Sim& s : sims) {
    auto l = s.exporter->TakeAckLatencies();
    run.ack_latencies.insert(run.ack_latencies.end(), l.begin(), l.end());
    stops.emplace_back([&s] { s.exporter->Stop(absl::ZeroDuration()); });
  }
  for (std::thread& t : stops) t.join();
  std::sort(run.ack_latencies.begin(), run.ack_latencies.end());
  return run;
}

std::string LatencySummary(const std::vector<absl::Duration>& l) {
  if (l.empty()) return "no acks";
  return absl::StrFormat("p50 %.1f ms, p99 %.1f ms, max %.1f ms", absl::ToDoubleMilliseconds(l[l.size() / 2]),
                         absl::ToDoubleMilliseconds(l[l.size() * 99 / 100]),
                         absl::ToDoubleMilliseconds(l.back()));
}

// One stream by hand: the messages given, then the status the collector ends it with.
grpc::Status Exchange(const std::shared_ptr<grpc::ChannelCredentials>& creds,
                      const std::string& address, const std::vector<v1::AgentMessage>& msgs,
                      int* acks) {
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(64 << 20);
  auto stub = v1::Ingest::NewStub(grpc::CreateCustomChannel(address, creds, args));
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  auto stream = stub->Stream(&ctx);
  for (const v1::AgentMessage& m : msgs)
    if (!stream->Write(m)) break;
  stream->WritesDone();
  v1::CollectorMessage in;
  int n = 0;
  while (stream->Read(&in)) ++n;
  if (acks) *acks = n;
  return stream->Finish();
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
