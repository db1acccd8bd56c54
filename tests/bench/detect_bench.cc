// Userspace cost of local detection on one core: Detector::Observe (image
// identity, Baseline, detectors, alert building, de-duplication) over the
// events of a real recording, decoded once up front (tests/bench/data/sample.rec,
// as decode_bench uses it). Target: >= 1M events/s per core for detection
// on a warm baseline. Also the baseline's memory and SQLite persistence at
// 1M behaviours. See BENCHMARKS.md.
//
//   detect_bench [--recording=PATH] [--scale-images=N] [--scale-dir=DIR]
//                [Google Benchmark flags]
//
// Before the benchmarks, a timed section (not a Google Benchmark) fills a
// Baseline with N images x 10 behaviours (default N = 100000; 0 skips it) and
// prints resident memory, first Flush() to a SQLite file in a temp directory
// under DIR (default $TMPDIR or /tmp; removed afterwards), re-open (load)
// time, and Observe() ns/op on the full baseline.
//
// Benchmarks (every envelope of the recording per iteration, fed as
// Pipeline::OnEnvelope feeds them; alerts are counted, not emitted):
//   FirstPass         fresh in-memory Baseline (learning_period 0), Detector
//                     and identity cache every pass: everything is new
//   Warm              the same Baseline/Detector/cache across passes, after
//                     one untimed pass: known behaviour, the steady state
//   Repeat            warm, and every image carries a suspicious mark: every
//                     network event builds a suspicious_image_network alert
//                     that de-duplication folds into its open window
//   */StatCached      as above, with SuspiciousMarks' stat() calls answered
//                     from a memo (to show what the syscalls cost)
//   Part/...          breakdown: identity hit/miss, Behavior::Of, Describe,
//                     Baseline::Observe on the recording's keys
//
// The identity function mimics Pipeline::Identify: a flat_hash_map keyed by
// (pid, start tick) of ClassifyImage(exe, argv) + SuspiciousMarks(exe,
// exe_deleted), erased on exec/exit as OnEnvelope does, cleared at 65536; no
// SHA-256 lookup, no /proc/<pid>/cwd readlink, no cgroup path resolution.
#include <benchmark/benchmark.h>
#include <malloc.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "agent/baseline.h"
#include "agent/decoder.h"
#include "agent/detector.h"
#include "agent/identity.h"
#include "agent/process_table.h"
#include "tests/bench/detect_bench_scale.h"

#ifndef SOCKWATCH_BENCH_RECORDING
#define SOCKWATCH_BENCH_RECORDING "tests/bench/data/sample.rec"
#endif

namespace {

using sockwatch::Baseline;
using sockwatch::BaselineOptions;
using sockwatch::Behavior;
using sockwatch::BootClock;
using sockwatch::Decoder;
using sockwatch::Detector;
using sockwatch::ProcessTable;
namespace v1 = sockwatch::v1;

const BootClock g_clock(0);

// ---------------------------------------------------------------------------
// The recording, decoded once.

struct Events {
  std::string path;
  size_t records = 0, bytes = 0;
  ProcessTable table;  // as the decode left it: ancestors for alerts
  std::vector<v1::Envelope> envs;
  std::vector<sockwatch::Subnet> subnets;
};
Events* g_ev = nullptr;

bool LoadEvents(const std::string& path, Events* ev, std::string* err) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *err = "cannot open " + path;
    return false;
  }
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ev->path = path;
  ev->bytes = bytes.size();
  Decoder dec(&ev->table, &g_clock);
  size_t off = 0, errors = 0;
  while (off < bytes.size()) {
    uint32_t len;
    if (bytes.size() - off < sizeof(len)) {
      *err = "truncated length at byte " + std::to_string(off);
      return false;
    }
    std::memcpy(&len, bytes.data() + off, sizeof(len));
    off += sizeof(len);
    if (bytes.size() - off < len) {
      *err = "bad record of " + std::to_string(len) + " bytes at byte " + std::to_string(off);
      return false;
    }
    ++ev->records;
    v1::Envelope env;
    auto ok = dec.Decode(absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()) + off, len), &env);
    off += len;
    if (!ok.ok()) {
      if (errors++ < 3) fprintf(stderr, "decode error: %s\n", ok.status().ToString().c_str());
      continue;
    }
    if (*ok) ev->envs.push_back(std::move(env));
  }
  if (errors) {
    *err = "the recording does not decode with this agent; re-make it with "
           "sudo tests/bench/record_sample.sh";
    return false;
  }
  if (ev->envs.empty()) {
    *err = "no events in " + path;
    return false;
  }
  // Fixed, so results do not depend on this machine's interfaces.
  sockwatch::Subnet lan;
  lan.addr = {10, 0, 0, 0};
  lan.prefix_len = 24;
  ev->subnets.push_back(lan);
  return true;
}

// ---------------------------------------------------------------------------
// Identity, as Pipeline::Identify builds it (minus sha256, cwd and cgroup).

struct IdentityOptions {
  bool stat_cached = false;  // memoize SuspiciousMarks' stat() calls
  bool force_suspicious = false;  // every image looks planted (Repeat)
};

class Identities {
 public:
  explicit Identities(IdentityOptions opts) : opts_(opts) {
    // StatCached: the agent's own StatModeCache (10 s expiry), as Pipeline uses.
    stat_ = opts_.stat_cached ? stat_cache_.AsFn() : sockwatch::StatModeFn(sockwatch::StatMode);
  }

  v1::ImageIdentity Identify(const v1::Process& p) {
    ++lookups_;
    auto it = cache_.find(Key(p));
    if (it == cache_.end()) {
      ++misses_;
      std::vector<std::string> argv(p.argv().begin(), p.argv().end());
      v1::ImageIdentity id = sockwatch::ClassifyImage(p.exe(), argv);
      for (std::string& m : sockwatch::SuspiciousMarks(p.exe(), p.exe_deleted(), stat_))
        id.add_suspicious(std::move(m));
      if (opts_.force_suspicious && id.suspicious().empty()) id.add_suspicious("world_writable_dir");
      if (cache_.size() >= kMaxIdentities) cache_.clear();
      it = cache_.emplace(Key(p), std::move(id)).first;
    }
    return it->second;
  }

  // What Pipeline::OnEnvelope does before the detector sees the envelope.
  void OnEnvelope(const v1::Envelope& env) {
    if (env.has_exec()) cache_.erase(Key(env.exec().process()));
    if (env.has_exit()) cache_.erase(Key(env.exit().process()));
  }

  uint64_t lookups() const { return lookups_; }
  uint64_t misses() const { return misses_; }

 private:
  static constexpr size_t kMaxIdentities = 65536;
  static std::pair<uint32_t, uint64_t> Key(const v1::Process& p) {
    return {p.pid(), p.start_boottime_ns() / ProcessTable::kTickNs};
  }

  IdentityOptions opts_;
  sockwatch::StatModeCache stat_cache_;
  sockwatch::StatModeFn stat_;
  absl::flat_hash_map<std::pair<uint32_t, uint64_t>, v1::ImageIdentity> cache_;
  uint64_t lookups_ = 0, misses_ = 0;
};

// One agent's detection state: baseline, identity cache, detector.
struct Rig {
  std::unique_ptr<Baseline> baseline;
  std::unique_ptr<Identities> ids;
  std::unique_ptr<Detector> detector;
  std::vector<v1::Alert> alerts;
  std::map<std::string, uint64_t> by_rule;  // filled when count_rules
  bool count_rules = false;

  explicit Rig(IdentityOptions io) {
    BaselineOptions bo;
    bo.path = "";  // in memory
    bo.learning_period = absl::ZeroDuration();  // judge from the first event
    auto b = Baseline::Open(bo);
    if (!b.ok()) {
      fprintf(stderr, "detect_bench: %s\n", b.status().ToString().c_str());
      exit(1);
    }
    baseline = std::move(*b);
    ids = std::make_unique<Identities>(io);
    Identities* raw = ids.get();
    sockwatch::DetectorOptions d;
    d.id_prefix = "bench";
    detector = std::make_unique<Detector>(
        baseline.get(), &g_ev->table, &g_clock,
        [raw](const v1::Process& p) { return raw->Identify(p); }, g_ev->subnets, d);
  }

  // One pass over the recording, as Pipeline::OnEnvelope would feed it.
  void Pass() {
    for (const v1::Envelope& env : g_ev->envs) {
      ids->OnEnvelope(env);
      if (!env.has_exec() && !env.has_network()) continue;
      detector->Observe(env, &alerts);
      if (count_rules)
        for (const v1::Alert& a : alerts) ++by_rule[a.rule()];
      alerts.clear();
    }
  }
};

// ---------------------------------------------------------------------------
// What one pass does, printed before the benchmarks; fails when the first
// pass raises nothing (the benchmark would then measure the quiet path only).

bool DescribeDetection() {
  std::map<std::string, size_t> kinds;
  size_t judged = 0;
  for (const v1::Envelope& env : g_ev->envs) {
    std::string k = env.has_exec()      ? "exec"
                    : env.has_fork()    ? "fork"
                    : env.has_exit()    ? "exit"
                    : env.has_network() ? v1::NetworkKind_Name(env.network().kind())
                                        : "other";
    if (absl::StartsWith(k, "NETWORK_KIND_")) k = absl::AsciiStrToLower(k.substr(13));
    ++kinds[k];
    if (env.has_network() && Behavior::Of(env.network(), g_ev->subnets) && !env.network().process().unknown())
      ++judged;
  }
  printf("recording: %s\n  %zu records, %zu bytes -> %zu envelopes (decoded once, up front); "
         "%zu network events carry a behaviour\n  ",
         g_ev->path.c_str(), g_ev->records, g_ev->bytes, g_ev->envs.size(), judged);
  for (const auto& [k, n] : kinds) printf("%s %zu  ", k.c_str(), n);
  printf("\n");

  bool ok = true;
  auto show = [&](const char* what, IdentityOptions io, int passes) {
    Rig rig(io);
    for (int i = 0; i < passes; ++i) {
      const uint64_t raised0 = rig.detector->raised(), dedup0 = rig.detector->deduplicated();
      const uint64_t look0 = rig.ids->lookups(), miss0 = rig.ids->misses();
      rig.by_rule.clear();
      rig.count_rules = true;
      rig.Pass();
      printf("  %-10s pass %d: %4llu alerts raised, %4llu deduplicated; identity %llu lookups, %llu misses",
             what, i + 1, static_cast<unsigned long long>(rig.detector->raised() - raised0),
             static_cast<unsigned long long>(rig.detector->deduplicated() - dedup0),
             static_cast<unsigned long long>(rig.ids->lookups() - look0),
             static_cast<unsigned long long>(rig.ids->misses() - miss0));
      for (const auto& [rule, n] : rig.by_rule)
        printf("%s %s %llu", &rule == &rig.by_rule.begin()->first ? ";" : ",", rule.c_str(),
               static_cast<unsigned long long>(n));
      printf("\n");
      if (i == 0 && rig.detector->raised() == 0) ok = false;
    }
    printf("  %-10s baseline after: %zu images, %zu behaviours\n", what, rig.baseline->images(),
           rig.baseline->behaviors());
  };
  show("normal", {}, 2);
  show("suspicious", {.stat_cached = false, .force_suspicious = true}, 2);
  printf("\n");
  if (!ok) fprintf(stderr, "detect_bench: the first pass raised no alert; nothing is being detected\n");
  return ok;
}

// ---------------------------------------------------------------------------
// Benchmarks.

void SetRates(benchmark::State& state, size_t events_per_iter) {
  state.SetItemsProcessed(int64_t(state.iterations()) * events_per_iter);
  state.counters["per_event"] = benchmark::Counter(
      double(events_per_iter), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void SetAlerts(benchmark::State& state, uint64_t raised, uint64_t dedup) {
  state.counters["alerts/pass"] = benchmark::Counter(double(raised), benchmark::Counter::kAvgIterations);
  state.counters["dedup/pass"] = benchmark::Counter(double(dedup), benchmark::Counter::kAvgIterations);
}

// Everything new: a fresh baseline, detector and identity cache each pass
// (made and destroyed outside the timing).
void BM_FirstPass(benchmark::State& state, IdentityOptions io) {
  uint64_t raised = 0, dedup = 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto rig = std::make_unique<Rig>(io);
    state.ResumeTiming();
    rig->Pass();
    state.PauseTiming();
    raised += rig->detector->raised();
    dedup += rig->detector->deduplicated();
    const bool none = rig->detector->raised() == 0;
    rig.reset();
    state.ResumeTiming();
    if (none) {
      state.SkipWithError("first pass raised no alert");
      break;
    }
  }
  SetRates(state, g_ev->envs.size());
  SetAlerts(state, raised, dedup);
}

// The same rig across passes after one untimed pass: Warm (known behaviour)
// or, with force_suspicious, Repeat (every alert folded by de-duplication).
void BM_Steady(benchmark::State& state, IdentityOptions io) {
  Rig rig(io);
  rig.Pass();
  const uint64_t raised0 = rig.detector->raised(), dedup0 = rig.detector->deduplicated();
  for (auto _ : state) rig.Pass();
  SetRates(state, g_ev->envs.size());
  SetAlerts(state, rig.detector->raised() - raised0, rig.detector->deduplicated() - dedup0);
  state.counters["behaviours"] = double(rig.baseline->behaviors());
}

// --- Parts: pieces of the per-event work, on the recording's own inputs.

std::vector<const v1::Process*> NetworkProcesses() {
  std::vector<const v1::Process*> out;
  for (const v1::Envelope& env : g_ev->envs)
    if (env.has_network() && !env.network().process().unknown()) out.push_back(&env.network().process());
  return out;
}

// Identity cache hit: hash lookup + copy of the ImageIdentity (what every
// judged network event pays).
void BM_PartIdentifyHit(benchmark::State& state) {
  Identities ids({});
  const auto procs = NetworkProcesses();
  for (const v1::Process* p : procs) ids.Identify(*p);
  for (auto _ : state)
    for (const v1::Process* p : procs) {
      v1::ImageIdentity id = ids.Identify(*p);
      benchmark::DoNotOptimize(id);
    }
  SetRates(state, procs.size());
}

// Identity miss (every exec): ClassifyImage + SuspiciousMarks, with real
// stat() calls or memoized ones.
void BM_PartClassify(benchmark::State& state, bool stat_cached) {
  std::vector<const v1::Process*> procs;
  for (const v1::Envelope& env : g_ev->envs)
    if (env.has_exec()) procs.push_back(&env.exec().process());
  absl::flat_hash_map<std::string, std::optional<mode_t>> memo;
  sockwatch::StatModeFn stat = sockwatch::StatMode;
  if (stat_cached)
    stat = [&memo](const std::string& path) {
      auto it = memo.find(path);
      if (it == memo.end()) it = memo.emplace(path, sockwatch::StatMode(path)).first;
      return it->second;
    };
  for (auto _ : state)
    for (const v1::Process* p : procs) {
      std::vector<std::string> argv(p->argv().begin(), p->argv().end());
      v1::ImageIdentity id = sockwatch::ClassifyImage(p->exe(), argv);
      for (std::string& m : sockwatch::SuspiciousMarks(p->exe(), p->exe_deleted(), stat))
        id.add_suspicious(std::move(m));
      benchmark::DoNotOptimize(id);
    }
  SetRates(state, procs.size());
}

void BM_PartBehaviorOf(benchmark::State& state) {
  std::vector<const v1::NetworkEvent*> nets;
  for (const v1::Envelope& env : g_ev->envs)
    if (env.has_network()) nets.push_back(&env.network());
  for (auto _ : state)
    for (const v1::NetworkEvent* n : nets) {
      auto b = Behavior::Of(*n, g_ev->subnets);
      benchmark::DoNotOptimize(b);
    }
  SetRates(state, nets.size());
}

void BM_PartDescribe(benchmark::State& state) {
  std::vector<Behavior> bs;
  for (const v1::Envelope& env : g_ev->envs)
    if (env.has_network())
      if (auto b = Behavior::Of(env.network(), g_ev->subnets)) bs.push_back(*b);
  for (auto _ : state)
    for (const Behavior& b : bs) {
      std::string s = b.Describe();
      benchmark::DoNotOptimize(s);
    }
  SetRates(state, bs.size());
}

// Baseline::Observe alone on the recording's (key, behaviour) pairs, warm.
void BM_PartBaselineObserve(benchmark::State& state) {
  Identities ids({.stat_cached = true, .force_suspicious = false});
  std::vector<std::pair<std::string, Behavior>> obs;
  for (const v1::Envelope& env : g_ev->envs) {
    ids.OnEnvelope(env);
    if (!env.has_network() || env.network().process().unknown()) continue;
    if (auto b = Behavior::Of(env.network(), g_ev->subnets))
      obs.emplace_back(ids.Identify(env.network().process()).key(), *b);
  }
  BaselineOptions bo;
  bo.learning_period = absl::ZeroDuration();
  auto base = std::move(*Baseline::Open(bo));
  const absl::Time now = absl::FromUnixSeconds(1'700'000'000);
  for (const auto& [k, b] : obs) base->Observe(k, "", b, now);
  for (auto _ : state)
    for (const auto& [k, b] : obs) {
      auto o = base->Observe(k, "", b, now);
      benchmark::DoNotOptimize(o);
    }
  SetRates(state, obs.size());
}

void Register() {
  const IdentityOptions real{}, cached{.stat_cached = true, .force_suspicious = false};
  const IdentityOptions susp{.stat_cached = false, .force_suspicious = true};
  const IdentityOptions susp_cached{.stat_cached = true, .force_suspicious = true};
  benchmark::RegisterBenchmark("FirstPass", BM_FirstPass, real)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("Warm", BM_Steady, real)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("Repeat", BM_Steady, susp)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("FirstPass/StatCached", BM_FirstPass, cached)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("Warm/StatCached", BM_Steady, cached)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("Repeat/StatCached", BM_Steady, susp_cached)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("Part/IdentifyHit", BM_PartIdentifyHit)->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("Part/IdentifyMiss", BM_PartClassify, false)->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("Part/IdentifyMiss/StatCached", BM_PartClassify, true)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("Part/BehaviorOf", BM_PartBehaviorOf)->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("Part/Describe", BM_PartDescribe)->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("Part/BaselineObserve", BM_PartBaselineObserve)->Unit(benchmark::kMicrosecond);
}


}  // namespace

int main(int argc, char** argv) {
  std::string path = SOCKWATCH_BENCH_RECORDING;
  long scale_images = 100'000;
  std::string scale_dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--recording=", 0) == 0) {
      path = a.substr(sizeof("--recording=") - 1);
    } else if (a.rfind("--scale-images=", 0) == 0) {
      scale_images = std::stol(a.substr(sizeof("--scale-images=") - 1));
    } else if (a.rfind("--scale-dir=", 0) == 0) {
      scale_dir = a.substr(sizeof("--scale-dir=") - 1);
    } else {
      if (a == "--help" || a == "-h")
        printf("detect_bench [--recording=PATH] (default %s) [--scale-images=N] (default 100000, 0 "
               "skips the scale section) [--scale-dir=DIR] (default $TMPDIR or /tmp), then Google "
               "Benchmark's flags:\n\n",
               SOCKWATCH_BENCH_RECORDING);
      args.push_back(argv[i]);
    }
  }
  int n = int(args.size());
  args.push_back(nullptr);
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;

  // First, while the heap is still small, so VmRSS deltas are the baseline's.
  if (scale_images > 0 && !detect_bench_scale::Run(uint32_t(scale_images), scale_dir)) return 1;

  static Events ev;
  std::string err;
  if (!LoadEvents(path, &ev, &err)) {
    fprintf(stderr, "detect_bench: %s\n", err.c_str());
    return 1;
  }
  g_ev = &ev;
  if (!DescribeDetection()) return 1;
  fflush(stdout);
  benchmark::AddCustomContext("recording", path);
  Register();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
