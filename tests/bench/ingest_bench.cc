// Collector ingest: how many envelopes per second the SQLite store commits
// durably (synchronous=FULL), by batch size. Each run writes a fresh file
// under /var/tmp (a real disk; /tmp may be tmpfs) and reports its size per
// million events.
//
//   build/tests/bench/ingest_bench --benchmark_repetitions=3
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "benchmark/benchmark.h"
#include "collector/sqlite_store.h"
#include "collector/store.h"

namespace sockwatch {
namespace {

namespace fs = std::filesystem;

// A collector serves many agents; batches arrive from them in turn (fewer
// for the big batches, to keep the prepared envelopes in memory bounded).
int HostsFor(int batch) { return std::clamp(40'000 / batch, 1, 8); }

struct Image {
  const char* exe;
  std::vector<std::string> argv;
};

const std::vector<Image>& Images() {
  static const auto* images = new std::vector<Image>{
      {"/usr/bin/curl", {"curl", "-fsSL", "https://deb.debian.org/debian/dists/bookworm/Release"}},
      {"/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
       {"java", "-Xmx2g", "-jar", "/opt/app/service.jar", "--spring.profiles.active=prod"}},
      {"/usr/bin/python3.11", {"/usr/bin/python3", "/srv/worker/main.py", "--queue", "ingest"}},
      {"/usr/sbin/nginx", {"nginx: worker process"}},
      {"/usr/lib/postgresql/15/bin/postgres", {"postgres: 15/main: walwriter"}},
  };
  return *images;
}

// A realistic connect event: exe, argv, addresses, ports, community id.
v1::Envelope MakeNetwork(int host, uint64_t i) {
  v1::Envelope e;
  e.set_host_id(absl::StrFormat("4c4c4544-0051-3510-8057-b4c04f4d3%03d", host));
  e.set_agent_instance(absl::StrFormat("a1b2c3d4e5f6%04d", host));
  e.set_hostname(absl::StrCat("web-", host, ".prod.example.net"));
  e.mutable_time()->set_seconds(1'700'000'000 + static_cast<int64_t>(i / 1000));
  e.mutable_time()->set_nanos(static_cast<int32_t>(i % 1000) * 1'000'000 + 417);
  e.set_boottime_ns(86'400'000'000'000 + i * 1'000'000);
  const Image& img = Images()[i % Images().size()];
  v1::NetworkEvent* n = e.mutable_network();
  n->set_kind(v1::NETWORK_KIND_CONNECT);
  n->set_protocol(i % 10 == 0 ? v1::PROTOCOL_UDP : v1::PROTOCOL_TCP);
  n->set_ip_version(4);
  n->set_local_ip("10.20.30.40");
  n->set_local_port(32768 + static_cast<uint32_t>(i % 28000));
  n->set_remote_ip(absl::StrFormat("172.%d.%d.%d", 16 + i % 16, (i / 7) % 256, (i / 3) % 254 + 1));
  n->set_remote_port(i % 3 == 0 ? 443 : i % 3 == 1 ? 5432 : 8080);
  n->set_direction(v1::DIRECTION_OUTBOUND);
  n->set_outcome(v1::OUTCOME_ESTABLISHED);
  n->set_community_id(absl::StrFormat("1:%027dQ=", i * 7919 % 1000000007));
  n->set_socket_cookie(0x4000000 + i);
  n->set_netns(4026531840u);
  v1::Process* p = n->mutable_process();
  p->set_pid(1000 + static_cast<uint32_t>(i % 5000));
  p->set_tid(p->pid());
  p->set_ppid(1);
  p->set_uid(33);
  p->set_gid(33);
  p->set_exe(img.exe);
  for (const std::string& a : img.argv) p->add_argv(a);
  p->mutable_start_time()->set_seconds(1'699'990'000);
  p->set_start_boottime_ns(86'000'000'000'000 + i % 5000);
  p->set_cgroup_id(4242);
  p->set_comm(fs::path(img.exe).filename().string().substr(0, 15));
  return e;
}

std::string BenchPath(int batch) {
  return absl::StrCat("/var/tmp/sockwatch_ingest_bench_", getpid(), "_", batch, ".db");
}

void RemoveDb(const std::string& path) {
  std::error_code ec;
  for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(path + suffix, ec);
}

void BM_SqliteIngest(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  const std::string path = BenchPath(batch);
  RemoveDb(path);
  absl::StatusOr<std::unique_ptr<SqliteStore>> store =
      SqliteStore::Open(SqliteStoreOptions{.path = path, .busy_timeout = absl::Seconds(5)});
  if (!store.ok()) {
    state.SkipWithError(std::string(store.status().message()).c_str());
    return;
  }
  // One prepared batch per host, outside the timed loop; only seq changes.
  const int hosts = HostsFor(batch);
  std::vector<std::vector<v1::Envelope>> envs(hosts);
  std::vector<std::vector<const v1::Envelope*>> ptrs(hosts);
  size_t bytes = 0;
  for (int h = 0; h < hosts; ++h) {
    for (int i = 0; i < batch; ++i) envs[h].push_back(MakeNetwork(h, h * 1'000'003 + i));
    for (const v1::Envelope& e : envs[h]) {
      ptrs[h].push_back(&e);
      bytes += e.ByteSizeLong();
    }
  }
  std::vector<uint64_t> next_seq(hosts, 1);
  uint64_t stored = 0;
  int host = 0;
  for (auto _ : state) {
    state.PauseTiming();
    host = (host + 1) % hosts;
    for (v1::Envelope& e : envs[host]) e.set_seq(next_seq[host]++);
    state.ResumeTiming();
    absl::StatusOr<WriteResult> r = (*store)->Write(ptrs[host]);
    if (!r.ok() || r->stored != static_cast<uint64_t>(batch)) {
      state.SkipWithError(r.ok() ? "duplicates in a fresh batch"
                                 : std::string(r.status().message()).c_str());
      break;
    }
    stored += r->stored;
  }
  state.SetItemsProcessed(static_cast<int64_t>(stored));
  state.counters["envelope_bytes"] = static_cast<double>(bytes) / (hosts * batch);
  store->reset();  // the last connection checkpoints and removes the WAL
  std::error_code ec;
  const uintmax_t file = fs::file_size(path, ec);
  // Bytes per event is MB per million events.
  if (!ec && stored > 0) state.counters["MB_per_M_events"] = static_cast<double>(file) / stored;
  RemoveDb(path);
}

BENCHMARK(BM_SqliteIngest)
    ->Arg(100)
    ->Arg(1000)
    ->Arg(5000)
    ->Arg(20000)  // the collector's group commit joins batches up to 50000
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace sockwatch

BENCHMARK_MAIN();
