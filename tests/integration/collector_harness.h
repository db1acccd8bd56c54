// A real sockwatch-collector for tests, a development PKI made by
// deploy/certs/make-certs.sh, and readers of the collector's SQLite store.
#ifndef SOCKWATCH_TESTS_INTEGRATION_COLLECTOR_HARNESS_H_
#define SOCKWATCH_TESTS_INTEGRATION_COLLECTOR_HARNESS_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "sockwatch/v1/event.pb.h"

namespace sockwatch::testing {

std::string CollectorPath();
std::string MakeCertsPath();

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

class CollectorProcess {
 public:
  // Starts sockwatch-collector on 127.0.0.1:port with a store at db_path and
  // the given flags; waits until it listens. nullptr if it does not start.
  static std::unique_ptr<CollectorProcess> Start(int port, const std::string& db_path,
                                                 const std::vector<std::string>& flags);
  ~CollectorProcess();
  // Signal (SIGTERM: clean stop; SIGKILL: crash); returns the exit status or
  // -1 when killed.
  int Stop(int sig = 15);
  std::string Stderr() const;
  std::string address() const;

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  std::string stderr_path_;
  bool stopped_ = false;
  int exit_status_ = -1;
};

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
