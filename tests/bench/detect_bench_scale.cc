// detect_bench, part 2: the baseline at scale (100k images x 10 behaviours):
// memory, first flush to SQLite, reload, Observe on a full baseline.
// A plain timed section that detect_bench runs once before its benchmarks.
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

namespace {

using sockwatch::Baseline;
using sockwatch::BaselineOptions;
using sockwatch::Behavior;
namespace v1 = sockwatch::v1;

}  // namespace

// ---------------------------------------------------------------------------
// The baseline at scale: a plain timed section, run once before the
// benchmarks. Wall and thread CPU time are both printed (the CPU figure holds
// up better on a loaded machine; Flush and close also wait on the disk).

namespace scale {

struct Clock {
  std::chrono::steady_clock::time_point wall = std::chrono::steady_clock::now();
  double cpu = CpuNow();
  static double CpuNow() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + ts.tv_nsec / 1e9;
  }
  double Wall() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - wall).count();
  }
  double Cpu() const { return CpuNow() - cpu; }
};

// VmRSS of this process, bytes.
int64_t Rss() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  return -1;
}

double MiB(double bytes) { return bytes / (1024.0 * 1024.0); }

int64_t FileSize(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? int64_t(st.st_size) : 0;
}

std::string Key(uint32_t i) { return absl::StrCat("/usr/lib/app", i, "/bin"); }

// A 64-hex-digit digest, distinct per image (the agent holds one per hashed image).
std::string Sha(uint32_t i) {
  std::string s;
  uint64_t x = 0x9e3779b97f4a7c15ULL * (i + 1);
  for (int k = 0; k < 4; ++k, x = x * 6364136223846793005ULL + 1442695040888963407ULL)
    absl::StrAppend(&s, absl::Hex(x, absl::kZeroPad16));
  return s;
}

// Behaviour j (0..9) of image i: mostly outbound flows to varied ports and
// address classes, some inbound, some UDP, one listener. Distinct per j.
Behavior Synth(uint32_t i, uint32_t j) {
  static constexpr sockwatch::AddrClass kClasses[] = {
      sockwatch::AddrClass::kPublic, sockwatch::AddrClass::kPrivate, sockwatch::AddrClass::kLoopback,
      sockwatch::AddrClass::kSameSubnet, sockwatch::AddrClass::kLinkLocal};
  Behavior b;
  b.kind = j == 9 ? Behavior::kListen : Behavior::kFlow;
  b.direction = j >= 7 ? v1::DIRECTION_INBOUND : v1::DIRECTION_OUTBOUND;
  b.protocol = j % 3 == 2 ? v1::PROTOCOL_UDP : v1::PROTOCOL_TCP;
  b.port = uint16_t(1024 + (i % 3000) * 16 + j);
  b.addr_class = b.kind == Behavior::kListen ? sockwatch::AddrClass::kUnspecified : kClasses[(i + j) % 5];
  return b;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void Row(const char* step, const Clock* c, const std::string& result) {
  if (c)
    printf("  %-44s %8.3f s %8.3f s   %s\n", step, c->Wall(), c->Cpu(), result.c_str());
  else
    printf("  %-44s %10s %10s   %s\n", step, "", "", result.c_str());
  fflush(stdout);
}

std::unique_ptr<Baseline> OpenOrDie(const BaselineOptions& bo) {
  auto b = Baseline::Open(bo);
  if (!b.ok()) {
    fprintf(stderr, "detect_bench: %s\n", b.status().ToString().c_str());
    exit(1);
  }
  return std::move(*b);
}

void FlushOrDie(Baseline* b) {
  if (absl::Status s = b->Flush(); !s.ok()) {
    fprintf(stderr, "detect_bench: flush: %s\n", s.ToString().c_str());
    exit(1);
  }
}

bool Run(uint32_t images, const std::string& parent) {
  constexpr uint32_t kPer = 10;
  const uint64_t total = uint64_t(images) * kPer;
  std::string tmpl = parent + "/detect_bench.XXXXXX";
  if (!mkdtemp(tmpl.data())) {
    fprintf(stderr, "detect_bench: mkdtemp %s: %s\n", tmpl.c_str(), strerror(errno));
    return false;
  }
  const std::string dir = tmpl, db = dir + "/baseline.db";
  printf("baseline at scale: %u images x %u behaviours = %llu behaviours (keys /usr/lib/app<i>/bin, "
         "a sha256 on every image)\n  SQLite file %s (removed at the end)\n",
         images, kPer, static_cast<unsigned long long>(total), db.c_str());
  printf("  %-44s %10s %10s   %s\n", "step", "wall", "cpu", "result");

  std::vector<std::string> keys, shas;
  keys.reserve(images);
  shas.reserve(images);
  for (uint32_t i = 0; i < images; ++i) {
    keys.push_back(Key(i));
    shas.push_back(Sha(i));
  }
  BaselineOptions bo;
  bo.path = db;
  bo.learning_period = absl::ZeroDuration();
  bo.max_images = std::max<size_t>(bo.max_images, images * 2);
  bo.max_behaviors = std::max<size_t>(bo.max_behaviors, total * 2);
  const absl::Time t0 = absl::FromUnixSeconds(1'700'000'000);

  malloc_trim(0);
  auto base = OpenOrDie(bo);
  const int64_t rss0 = Rss();
  {
    Clock c;
    for (uint32_t j = 0; j < kPer; ++j)
      for (uint32_t i = 0; i < images; ++i)
        base->Observe(keys[i], shas[i], Synth(i, j), t0 + absl::Milliseconds(i + j));
    Row(absl::StrCat("fill: ", total, " Observe()").c_str(), &c,
        absl::StrFormat("%.0f ns/op (wall)", c.Wall() * 1e9 / total));
  }
  if (base->behaviors() != total || base->images() != images) {
    fprintf(stderr, "detect_bench: baseline holds %zu images, %zu behaviours after the fill\n",
            base->images(), base->behaviors());
    return false;
  }
  const int64_t rss1 = Rss();
  Row("resident memory added (VmRSS)", nullptr,
      absl::StrFormat("%.1f MiB = %.0f bytes/behaviour", MiB(rss1 - rss0), double(rss1 - rss0) / total));
  {
    Clock c;
    FlushOrDie(base.get());
    Row("first Flush() (one transaction)", &c,
        absl::StrFormat("db %.1f MiB + WAL %.1f MiB", MiB(FileSize(db)), MiB(FileSize(db + "-wal"))));
  }
  {
    Clock c;
    base.reset();  // sqlite3_close: checkpoints the WAL into the db
    Row("close (WAL checkpoint)", &c, absl::StrFormat("db %.1f MiB", MiB(FileSize(db))));
  }
  malloc_trim(0);
  const int64_t rss2 = Rss();
  {
    Clock c;
    base = OpenOrDie(bo);
    Row("re-open: Baseline::Open (load)", &c,
        absl::StrFormat("%zu images, %zu behaviours", base->images(), base->behaviors()));
  }
  const int64_t rss3 = Rss();
  Row("resident memory of the loaded baseline", nullptr,
      absl::StrFormat("%.1f MiB = %.0f bytes/behaviour", MiB(rss3 - rss2), double(rss3 - rss2) / total));
  if (base->behaviors() != total) {
    fprintf(stderr, "detect_bench: reloaded %zu behaviours of %llu\n", base->behaviors(),
            static_cast<unsigned long long>(total));
    return false;
  }

  // Observe on the full baseline: random images (no locality), known
  // behaviours, then behaviours each image never showed. Median of 3 rounds.
  std::mt19937 rng(42);
  const absl::Time t1 = t0 + absl::Hours(1);
  constexpr int kRounds = 3;
  const uint32_t known_ops = 300'000, new_ops = std::min<uint32_t>(images, 100'000);
  std::vector<double> known_ns, known_cpu, new_ns, new_cpu;
  uint64_t wrong = 0;
  for (int r = 0; r < kRounds; ++r) {
    std::vector<std::pair<uint32_t, uint32_t>> ops(known_ops);
    for (auto& [i, j] : ops) i = rng() % images, j = rng() % kPer;
    Clock c;
    for (const auto& [i, j] : ops) wrong += base->Observe(keys[i], shas[i], Synth(i, j), t1).new_behavior;
    known_ns.push_back(c.Wall() * 1e9 / known_ops);
    known_cpu.push_back(c.Cpu() * 1e9 / known_ops);
  }
  for (int r = 0; r < kRounds; ++r) {
    std::vector<uint32_t> ops(images);
    std::iota(ops.begin(), ops.end(), 0);
    std::shuffle(ops.begin(), ops.end(), rng);
    ops.resize(new_ops);
    Clock c;
    for (uint32_t i : ops) {
      Behavior b = Synth(i, 0);
      b.port = uint16_t(60000 + r);  // never used by the fill
      wrong += !base->Observe(keys[i], shas[i], b, t1).new_behavior;
    }
    new_ns.push_back(c.Wall() * 1e9 / new_ops);
    new_cpu.push_back(c.Cpu() * 1e9 / new_ops);
  }
  if (wrong) {
    fprintf(stderr, "detect_bench: %llu observations judged wrongly (known as new or new as known)\n",
            static_cast<unsigned long long>(wrong));
    return false;
  }
  Row(absl::StrCat("Observe() known behaviour, random image").c_str(), nullptr,
      absl::StrFormat("%.0f ns/op wall, %.0f ns/op cpu (median of %d x %u)", Median(known_ns),
                      Median(known_cpu), kRounds, known_ops));
  Row(absl::StrCat("Observe() new behaviour, random image").c_str(), nullptr,
      absl::StrFormat("%.0f ns/op wall, %.0f ns/op cpu (median of %d x %u)", Median(new_ns),
                      Median(new_cpu), kRounds, new_ops));
  {
    Clock c;
    FlushOrDie(base.get());
    Row("Flush() after those (most images dirty)", &c, absl::StrFormat("%zu behaviours", base->behaviors()));
  }
  {
    for (uint32_t i = 0; i < std::min<uint32_t>(images, 1000); ++i)
      base->Observe(keys[i], shas[i], Synth(i, 1), t1 + absl::Seconds(5));
    Clock c;
    FlushOrDie(base.get());
    Row("Flush() after 1000 images were seen again", &c, "the agent flushes every 5 s");
  }
  {
    Clock c;
    FlushOrDie(base.get());
    Row("Flush() with nothing dirty", &c, "");
  }
  base.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  printf("\n");
  fflush(stdout);
  return true;
}

}  // namespace scale

namespace detect_bench_scale {
bool Run(uint32_t images, const std::string& dir) { return scale::Run(images, dir); }
}  // namespace detect_bench_scale
