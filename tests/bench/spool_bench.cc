// Spool throughput: appends of 300-byte payloads under each fsync policy, and
// sequential replay of 1M records in batches of 1000 (what the exporter does
// after a reconnect). Files live under /var/tmp (a real disk, not tmpfs) and
// are removed at the end. Run: spool_bench --benchmark_repetitions=3
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/spool.h"
#include "benchmark/benchmark.h"

namespace sockwatch {
namespace {

constexpr size_t kPayload = 300;
constexpr uint64_t kReplayRecords = 1000000;
constexpr size_t kReplayBatch = 1000;
// The agent flushes once per drain of the ring buffer; a batch is about this.
constexpr uint64_t kAppendsPerFlush = 1000;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = "/var/tmp/spool_bench_XXXXXX";
    if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string Payload(uint64_t n) {
  std::string p(kPayload, 'x');
  for (size_t i = 0; i < p.size(); i += 8) p[i] = static_cast<char>('a' + (n + i) % 26);
  return p;
}

// acked: the exporter keeps up, acknowledging all but the last batch after
// each Flush (segments are deleted as they are acked). Otherwise the
// collector is away: past 256 MiB the oldest segments are dropped, and that
// cost is part of the figure.
void BM_Append(benchmark::State& state, SpoolFsync policy, bool acked) {
  TempDir tmp;
  SpoolOptions opts;  // the agent's defaults: 256 MiB in 8 MiB segments
  opts.dir = tmp.path() + "/spool";
  opts.fsync = policy;
  absl::StatusOr<std::unique_ptr<Spool>> spool = Spool::Open(opts);
  if (tmp.path().empty() || !spool.ok()) {
    state.SkipWithError(absl::StrCat("open: ", spool.status().ToString()).c_str());
    return;
  }
  std::vector<std::string> payloads;
  for (uint64_t i = 0; i < 64; ++i) payloads.push_back(Payload(i));
  const absl::Time t = absl::Now();
  uint64_t n = 0;
  for (auto _ : state) {
    absl::StatusOr<uint64_t> seq = (*spool)->Append(payloads[n % payloads.size()], t);
    if (!seq.ok()) {
      state.SkipWithError(seq.status().ToString().c_str());
      break;
    }
    if (++n % kAppendsPerFlush == 0) {
      absl::Status s = (*spool)->Flush();
      if (s.ok() && acked) s = (*spool)->Ack(*seq - kAppendsPerFlush);
      if (!s.ok()) {
        state.SkipWithError(s.ToString().c_str());
        break;
      }
    }
  }
  (void)(*spool)->Flush();
  const SpoolStats st = (*spool)->stats();
  const double records = static_cast<double>(state.iterations());
  state.counters["records/s"] = benchmark::Counter(records, benchmark::Counter::kIsRate);
  state.counters["MB/s"] =
      benchmark::Counter(records * kPayload / 1e6, benchmark::Counter::kIsRate);
  state.counters["dropped"] = static_cast<double>(st.dropped);
}

// One spool of 1M records shared by the replay runs; removed in main.
struct ReplayFixture {
  TempDir tmp;
  std::unique_ptr<Spool> spool;
};
std::unique_ptr<ReplayFixture> replay_fixture;

absl::Status PrepareReplay() {
  if (replay_fixture) return absl::OkStatus();
  auto f = std::make_unique<ReplayFixture>();
  SpoolOptions opts;
  opts.dir = f->tmp.path() + "/spool";
  opts.max_bytes = 1ull << 30;  // room for all 1M records
  opts.fsync = SpoolFsync::kNever;
  absl::StatusOr<std::unique_ptr<Spool>> spool = Spool::Open(opts);
  if (!spool.ok()) return spool.status();
  const absl::Time t = absl::Now();
  for (uint64_t n = 1; n <= kReplayRecords; ++n) {
    absl::StatusOr<uint64_t> seq = (*spool)->Append(Payload(n), t);
    if (!seq.ok()) return seq.status();
  }
  if (absl::Status s = (*spool)->Flush(); !s.ok()) return s;
  f->spool = std::move(*spool);
  replay_fixture = std::move(f);
  return absl::OkStatus();
}

void BM_Replay(benchmark::State& state) {
  if (absl::Status s = PrepareReplay(); !s.ok()) {
    state.SkipWithError(s.ToString().c_str());
    return;
  }
  Spool& spool = *replay_fixture->spool;
  std::vector<SpoolRecord> batch;
  for (auto _ : state) {
    uint64_t after = 0, read = 0;
    for (;;) {
      if (absl::Status s = spool.Read(after, kReplayBatch, 1 << 30, &batch); !s.ok()) {
        state.SkipWithError(s.ToString().c_str());
        return;
      }
      if (batch.empty()) break;
      read += batch.size();
      after = batch.back().seq;
    }
    if (read != kReplayRecords) {
      state.SkipWithError(absl::StrCat("replayed ", read, " records").c_str());
      return;
    }
  }
  const double records = static_cast<double>(state.iterations() * kReplayRecords);
  state.counters["records/s"] = benchmark::Counter(records, benchmark::Counter::kIsRate);
  state.counters["MB/s"] =
      benchmark::Counter(records * kPayload / 1e6, benchmark::Counter::kIsRate);
}

BENCHMARK_CAPTURE(BM_Append, never_acked, SpoolFsync::kNever, true)->UseRealTime();
BENCHMARK_CAPTURE(BM_Append, interval_acked, SpoolFsync::kInterval, true)->UseRealTime();
BENCHMARK_CAPTURE(BM_Append, always_acked, SpoolFsync::kAlways, true)->UseRealTime();
BENCHMARK_CAPTURE(BM_Append, never_full, SpoolFsync::kNever, false)->UseRealTime();
BENCHMARK_CAPTURE(BM_Append, interval_full, SpoolFsync::kInterval, false)->UseRealTime();
BENCHMARK_CAPTURE(BM_Append, always_full, SpoolFsync::kAlways, false)->UseRealTime();
// Page cache warm: the records were just written.
BENCHMARK(BM_Replay)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace sockwatch

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  sockwatch::replay_fixture.reset();  // removes its files
  return 0;
}
