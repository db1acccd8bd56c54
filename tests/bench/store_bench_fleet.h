// The synthetic fleet of store_bench (store_bench_fleet.cc): envelopes that
// look like a real fleet's, so the stores' indexes, facts and query plans
// meet the shapes they will meet in the field. Per host a few dozen images
// (system daemons on every host, a role's services, a few rare binaries),
// each talking to a bounded set of remotes and ports; inbound servers; flow
// ends; exec, fork and exit; about one alert per 10,000 events, with network
// evidence; a loss now and then. A day of timestamps, increasing per host.
// Deterministic: the same options give the same envelopes.
#ifndef SOCKWATCH_TESTS_BENCH_STORE_BENCH_FLEET_H_
#define SOCKWATCH_TESTS_BENCH_STORE_BENCH_FLEET_H_

#include <google/protobuf/arena.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "sockwatch/v1/event.pb.h"
#include "sockwatch/v1/ingest.pb.h"

namespace sockwatch::store_bench {

struct FleetOptions {
  uint64_t events = 10'000'000;
  int hosts = 1000;
  // Envelopes per agent batch: the agent's --export_batch default. Under
  // load agents send full batches, and the collector's group commit joins
  // whole batches of different hosts into one Write.
  size_t agent_batch = 1000;
  // A fixed day, so runs (and stores) see the same timestamps.
  absl::Time start = absl::FromUnixSeconds(1'717'200'000);
  absl::Duration span = absl::Hours(24);
};

// What the benchmark's queries ask about, chosen from the fleet so that each
// answer is non-empty (at a size where the fleet has such things at all).
struct FleetTargets {
  std::string history_host;   // a host in the middle of the fleet
  absl::Time history_since;   // the start of an hour in the middle of the day
  std::string rare_exe;       // an image on 3 hosts
  std::string common_exe;     // an image on every host
  std::string common_sha256;  // digest of an image on most hosts
  std::string common_cidr;    // where that image connects to
  std::string exclude_host;   // left out of counts, as alert enrichment does
  v1::Envelope sample_alert;  // an alert with network evidence
};

// How many envelopes of each kind, and their serialized size.
struct FleetCounts {
  uint64_t network = 0, flow_ends = 0, exec = 0, fork = 0, exit = 0, alerts = 0, losses = 0;
  uint64_t bytes = 0;
  uint64_t images = 0;  // host-image pairs
  uint64_t total() const { return network + flow_ends + exec + fork + exit + alerts + losses; }
};

// Envelopes for one Store::Write, owned by one arena.
struct WriteGroup {
  std::unique_ptr<google::protobuf::Arena> arena;
  std::vector<const v1::Envelope*> envelopes;
};

class Fleet {
 public:
  explicit Fleet(const FleetOptions& options);
  ~Fleet();
  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  // Every host's Hello, as its agent sends at stream start.
  std::vector<v1::Hello> Hellos() const;
  // The next envelopes, at most n, as the collector's group commit hands
  // them to Store::Write: whole agent batches, hosts in turn (so a Write
  // holds n / agent_batch hosts). Empty once every event is out.
  WriteGroup Next(size_t n);

  // Complete once Next has returned everything.
  const FleetTargets& targets() const { return targets_; }
  const FleetCounts& counts() const { return counts_; }

 private:
  struct Host;
  // Appends host's next event to group.
  void Emit(Host& host, WriteGroup& group);
  void FillNetwork(Host& host, int64_t now_ns, v1::Envelope& env);
  void FillAlert(Host& host, int64_t now_ns, v1::Envelope& env);

  FleetOptions options_;
  std::vector<std::unique_ptr<Host>> hosts_;
  size_t cursor_ = 0;  // the host whose batch comes next
  uint64_t emitted_ = 0;
  FleetTargets targets_;
  FleetCounts counts_;
};

}  // namespace sockwatch::store_bench

#endif  // SOCKWATCH_TESTS_BENCH_STORE_BENCH_FLEET_H_
