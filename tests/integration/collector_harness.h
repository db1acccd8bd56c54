// A real sockwatch-collector for tests, a development PKI made by
// deploy/certs/make-certs.sh, and readers of the collector's SQLite store.
#ifndef SOCKWATCH_TESTS_INTEGRATION_COLLECTOR_HARNESS_H_
#define SOCKWATCH_TESTS_INTEGRATION_COLLECTOR_HARNESS_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include <vector>

#include "absl/time/time.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/status.h"
#include "sockwatch/v1/event.pb.h"
#include "sockwatch/v1/ingest.pb.h"

namespace sockwatch::testing {

std::string CollectorPath();
std::string MakeCertsPath();
std::string CliPath();

// A free TCP port on 127.0.0.1 (bound and released).
int FreePort();

// CA, collector certificate and agent certificates for the given hosts, in a
// fresh temporary directory (removed on destruction).
class TestPki {
 public:
  explicit TestPki(const std::vector<std::string>& hosts);
  ~TestPki();
  bool ok() const { return ok_; }
  std::string dir;
  std::string ca() const { return dir + "/ca.pem"; }
  std::string agent_cert(const std::string& host) const { return dir + "/agents/" + host + ".pem"; }
  std::string agent_key(const std::string& host) const { return dir + "/agents/" + host + ".key"; }
  // Flags that make the collector serve mTLS with this PKI.
  std::vector<std::string> CollectorFlags() const;
  // Flags that make an agent of `host` use this PKI.
  std::vector<std::string> AgentFlags(const std::string& host) const;

 private:
  bool ok_ = false;
};

// Store backends the end-to-end tests run on: "sqlite" and "clickhouse"
// (the latter left out only with SOCKWATCH_SKIP_CLICKHOUSE=1).
std::vector<std::string> TestStoreBackends();
// The --store URL for a backend: sqlite at sqlite_path; clickhouse on the
// test server named by SOCKWATCH_TEST_CLICKHOUSE (the test command starts
// one), in a fresh database. Error (clear) when that server is not named.
absl::StatusOr<std::string> TestStoreUrl(const std::string& backend,
                                         const std::string& sqlite_path);

// The `sockwatch` CLI, run once against the query port on loopback.
struct CliResult {
  int status = -1;  // exit status
  std::string out, err;
};
// token: SOCKWATCH_TOKEN ("" none); tls_ca: the collector's CA; scratch: a
// directory for the output files; args: the command and its flags.
CliResult RunCli(const std::string& token, int query_port, const std::string& tls_ca,
                 const std::string& scratch, const std::string& args);
// --json output as envelopes (a line that does not parse becomes an
// envelope with host_id "<unparsable JSON line>", and is logged).
std::vector<v1::Envelope> JsonEnvelopes(const std::string& json_lines);

class CollectorProcess {
 public:
  // Starts sockwatch-collector on 127.0.0.1:port with a store at db_path (a
  // file, or a store URL such as TestStoreUrl gives) and
  // the given flags; waits until it listens. nullptr if it does not start.
  static std::unique_ptr<CollectorProcess> Start(int port, const std::string& db_path,
                                                 const std::vector<std::string>& flags);
  ~CollectorProcess();
  // Signal (SIGTERM: clean stop; SIGKILL: crash); returns the exit status or
  // -1 when killed.
  int Stop(int sig = 15);
  std::string Stderr() const;
  std::string address() const;
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  std::string stderr_path_;
  bool stopped_ = false;
  int exit_status_ = -1;
};

// A synthetic network envelope (~200 bytes) of host/instance with seq.
v1::Envelope SyntheticNetworkEnvelope(const std::string& host, const std::string& instance,
                                      uint64_t seq);

// Simulated agents: each host gets the agent's real Spool (filled with
// `events` synthetic envelopes) and Exporter, and all stream at once.
struct FleetRun {
  int agents_done = 0;             // agents whose every event was acknowledged
  absl::Duration took;             // from the first exporter's start to the last ack
  absl::Duration fill;             // filling the spools
  std::vector<absl::Duration> ack_latencies;  // sorted, one per batch
  std::string error;               // set up failure, if any
};
struct FleetOptions {
  std::string address;             // collector
  const TestPki* pki = nullptr;    // null: plaintext (--insecure collector on loopback)
  std::vector<std::string> hosts;
  int events = 1000;               // per host
  size_t batch = 250;              // envelopes per batch
  std::string dir;                 // spools go under it
  absl::Duration timeout = absl::Seconds(90);
};
FleetRun StreamFleet(const FleetOptions& opts);
// "p50 x ms, p99 y ms" of sorted latencies.
std::string LatencySummary(const std::vector<absl::Duration>& sorted);

// One ingest stream by hand: the messages given, then the status the
// collector ends it with; *acks counts the acknowledgements.
grpc::Status Exchange(const std::shared_ptr<grpc::ChannelCredentials>& creds,
                      const std::string& address, const std::vector<v1::AgentMessage>& msgs,
                      int* acks = nullptr);

// What the store holds for one agent instance.
struct StoredInstance {
  std::vector<uint64_t> seqs;       // sorted
  uint64_t loss_spool = 0;          // sum of Loss.count with reason "spool"
  std::vector<v1::Envelope> network;
};

// Reads the collector's SQLite store: per host, per agent instance.
std::map<std::string, StoredInstance> ReadStore(const std::string& db_path,
                                                const std::string& host_id);

// Numbers in [1, max(seqs)] missing from seqs; and how many repeat.
uint64_t MissingSeqs(const std::vector<uint64_t>& seqs);
uint64_t RepeatedSeqs(const std::vector<uint64_t>& seqs);

}  // namespace sockwatch::testing

#endif  // SOCKWATCH_TESTS_INTEGRATION_COLLECTOR_HARNESS_H_
