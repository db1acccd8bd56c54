// Userspace cost per event on one core: Decoder::Decode + ProcessTable over
// real ring buffer records, replayed from a file written by
// `sockwatch-agent --record` (tests/bench/data/sample.rec, re-made by
// tests/bench/record_sample.sh). Target: >= 1M events/s per core for decode +
// process table. See BENCHMARKS.md.
//
//   decode_bench [--recording=PATH] [Google Benchmark flags]
//
// Benchmarks:
//   Decode            every record, fresh table per pass (what the agent did)
//   Decode+Json       ... and EnvelopeToJson each (--print=json)
//   Decode+Text       ... and EnvelopeToText each (--print=text, the default)
//   AgentPath         as the agent's OnRecord + Emit does it: a new Envelope
//                     per record, host/instance/hostname/seq set
//   Prefilled/N       the recording against a table already holding N
//                     synthetic processes (lookup cost vs table size)
//   NetLookup/N       synthetic TCP connect records owned by random processes
//                     of an N-process table (worst case: no locality)
//   TableFind/N       ProcessTable::Find alone, random hits
//   Kind/<kind>       breakdown: only the records of one kind
//   Part/...          breakdown: FillProcess, CommunityId, Envelope::Clear
#include <benchmark/benchmark.h>
#include <google/protobuf/arena.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "agent/community_id.h"
#include "agent/decoder.h"
#include "agent/output.h"
#include "agent/process_table.h"

extern "C" {
#include "sockwatch_events.h"
}

#ifndef SOCKWATCH_BENCH_RECORDING
#define SOCKWATCH_BENCH_RECORDING "tests/bench/data/sample.rec"
#endif

namespace {

using sockwatch::BootClock;
using sockwatch::Decoder;
using sockwatch::ProcessTable;
using sockwatch::ProcInfo;
namespace v1 = sockwatch::v1;
using Record = absl::Span<const uint8_t>;

const char* KindName(uint16_t kind) {
  switch (kind) {
    case SW_KIND_EXEC: return "exec";
    case SW_KIND_FORK: return "fork";
    case SW_KIND_EXIT: return "exit";
    case SW_KIND_TCP_CONNECT: return "tcp_connect";
    case SW_KIND_TCP_ACCEPT: return "tcp_accept";
    case SW_KIND_TCP_LISTEN: return "tcp_listen";
    case SW_KIND_TCP_CLOSE: return "tcp_close";
    case SW_KIND_UDP_SEND: return "udp_send";
    case SW_KIND_UDP_RECV: return "udp_recv";
    case SW_KIND_UDP_CONNECT: return "udp_connect";
  }
  return "unknown";
}

uint16_t KindOf(Record r) {
  uint16_t k;
  std::memcpy(&k, r.data(), sizeof(k));
  return k;
}

// The file's bytes, and one span per record into them.
struct Recording {
  std::string path;
  std::string bytes;
  std::vector<Record> records;
};

Recording* g_rec = nullptr;
const BootClock g_clock(0);

bool LoadRecording(const std::string& path, Recording* rec, std::string* err) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *err = "cannot open " + path;
    return false;
  }
  rec->path = path;
  rec->bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  size_t off = 0;
  while (off < rec->bytes.size()) {
    uint32_t len;
    if (rec->bytes.size() - off < sizeof(len)) {
      *err = "truncated length at byte " + std::to_string(off);
      return false;
    }
    std::memcpy(&len, rec->bytes.data() + off, sizeof(len));
    off += sizeof(len);
    if (rec->bytes.size() - off < len || len < sizeof(sw_header)) {
      *err = "bad record of " + std::to_string(len) + " bytes at byte " + std::to_string(off);
      return false;
    }
    rec->records.emplace_back(reinterpret_cast<const uint8_t*>(rec->bytes.data()) + off, len);
    off += len;
  }
  if (rec->records.empty()) {
    *err = "no records in " + path;
    return false;
  }
  return true;
}

// Prints the mix of kinds and checks that one pass decodes cleanly, so a
// recording that no longer matches the decoder fails loudly instead of
// benchmarking error paths.
bool DescribeRecording(const Recording& rec) {
  std::map<uint16_t, std::pair<size_t, size_t>> mix;  // kind -> count, bytes
  for (Record r : rec.records) {
    auto& m = mix[KindOf(r)];
    ++m.first;
    m.second += r.size();
  }
  printf("recording: %s\n  %zu records, %zu bytes\n", rec.path.c_str(), rec.records.size(),
         rec.bytes.size());
  printf("  %-12s %7s %7s %9s\n", "kind", "count", "share", "avg bytes");
  for (const auto& [kind, m] : mix)
    printf("  %-12s %7zu %6.1f%% %9.0f\n", KindName(kind), m.first,
           100.0 * m.first / rec.records.size(), double(m.second) / m.first);

  ProcessTable table;
  Decoder dec(&table, &g_clock);
  v1::Envelope env;
  size_t errors = 0, emitted = 0, net = 0;
  for (Record r : rec.records) {
    env.Clear();
    auto ok = dec.Decode(r, &env);
    if (!ok.ok()) {
      if (errors++ < 3) fprintf(stderr, "decode error: %s\n", ok.status().ToString().c_str());
      continue;
    }
    emitted += *ok;
    net += env.has_network();
  }
  printf("  one pass: %zu envelopes, %zu decode errors, %llu unknown kinds, "
         "%llu of %zu network events not attributed (processes older than the recording), "
         "table ends at %zu processes\n\n",
         emitted, errors, static_cast<unsigned long long>(dec.unknown_kinds()),
         static_cast<unsigned long long>(dec.unattributed()), net, table.size());
  if (errors) {
    fprintf(stderr,
            "decode_bench: the recording does not decode with this agent; re-make it with "
            "sudo tests/bench/record_sample.sh\n");
    return false;
  }
  return true;
}

void CheckOk(benchmark::State& state, const absl::StatusOr<bool>& ok) {
  if (!ok.ok()) state.SkipWithError(std::string(ok.status().message()).c_str());
}

void SetRates(benchmark::State& state, size_t events_per_iter, size_t bytes_per_iter) {
  state.SetItemsProcessed(int64_t(state.iterations()) * events_per_iter);
  state.SetBytesProcessed(int64_t(state.iterations()) * bytes_per_iter);
  state.counters["per_event"] = benchmark::Counter(
      double(events_per_iter),
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

// Decode (and optionally print) every record of the recording once per
// iteration, into one reused envelope, with a fresh table each pass: exactly
// the work the agent did for these records, minus the ring buffer.
enum class Print { kNone, kJson, kText };

void BM_Decode(benchmark::State& state, Print print) {
  const auto& recs = g_rec->records;
  v1::Envelope env;
  size_t out_bytes = 0;
  for (auto _ : state) {
    ProcessTable table;
    Decoder dec(&table, &g_clock);
    for (Record r : recs) {
      // Decode() does not clear what it is given: a reused envelope must be
      // cleared, or repeated fields (argv) pile up across records.
      env.Clear();
      auto ok = dec.Decode(r, &env);
      CheckOk(state, ok);
      if (print == Print::kJson) {
        out_bytes += sockwatch::EnvelopeToJson(env).size();
      } else if (print == Print::kText) {
        out_bytes += sockwatch::EnvelopeToText(env).size();
      }
    }
    benchmark::DoNotOptimize(env);
  }
  SetRates(state, recs.size(), g_rec->bytes.size());
  if (print != Print::kNone)
    state.counters["out_bytes/event"] =
        double(out_bytes) / (double(state.iterations()) * recs.size());
}

// As Agent::OnRecord + Agent::Emit with --print=none: a new envelope per
// record, on a stack arena as the agent does, and the four fields Emit sets.
void BM_AgentPath(benchmark::State& state) {
  const auto& recs = g_rec->records;
  const std::string host_id = "0123456789abcdef0123456789abcdef";
  const std::string instance = "00c0ffee00c0ffee00c0ffee00c0ffee";
  const std::string hostname = "bench-host";
  uint64_t seq = 0;
  for (auto _ : state) {
    ProcessTable table;
    Decoder dec(&table, &g_clock);
    for (Record r : recs) {
      alignas(16) char block[16384];
      google::protobuf::ArenaOptions arena_opts;
      arena_opts.initial_block = block;
      arena_opts.initial_block_size = sizeof(block);
      google::protobuf::Arena arena(arena_opts);
      v1::Envelope& env = *google::protobuf::Arena::CreateMessage<v1::Envelope>(&arena);
      auto ok = dec.Decode(r, &env);
      CheckOk(state, ok);
      env.set_host_id(host_id);
      env.set_agent_instance(instance);
      env.set_hostname(hostname);
      env.set_seq(++seq);
      benchmark::DoNotOptimize(env);
    }
  }
  SetRates(state, recs.size(), g_rec->bytes.size());
}

// Synthetic processes with pids above any real pid_max (2^22), so they never
// collide with the recorded ones. Start times are one tick apart.
constexpr uint32_t kSynthPidBase = 5'000'000;

ProcInfo SynthProcess(uint32_t i) {
  static const char* const kExes[] = {"/usr/bin/python3.11", "/usr/lib/jvm/java-17/bin/java",
                                      "/usr/sbin/nginx", "/usr/bin/curl", "/usr/local/bin/node"};
  ProcInfo p;
  p.pid = kSynthPidBase + i;
  p.ppid = 1;
  p.uid = 1000 + i % 7;
  p.gid = p.uid;
  p.start_ns = 3'600'000'000'000ULL + uint64_t(i) * ProcessTable::kTickNs;
  p.cgroup_id = 4242 + i % 31;
  p.exe = kExes[i % 5];
  p.comm = p.exe.substr(p.exe.rfind('/') + 1);
  p.argv = {p.comm, "--config=/etc/service/" + std::to_string(i % 97) + ".conf", "--port",
            std::to_string(1024 + i % 50000)};
  p.argv_full_len = 64;
  return p;
}

void Prefill(ProcessTable* table, uint32_t n) {
  for (uint32_t i = 0; i < n; ++i) table->Upsert(SynthProcess(i));
}

// The recording against a table that already holds N other processes. The
// table lives across passes (after the first, the recorded processes are
// known and exited), so N=0 is the baseline to compare with.
void BM_Prefilled(benchmark::State& state) {
  const auto& recs = g_rec->records;
  ProcessTable table;
  Prefill(&table, state.range(0));
  Decoder dec(&table, &g_clock);
  v1::Envelope env;
  for (Record r : recs) {  // warm: the recorded processes enter the table
    env.Clear();
    (void)dec.Decode(r, &env);
  }
  for (auto _ : state) {
    for (Record r : recs) {
      env.Clear();
      auto ok = dec.Decode(r, &env);
      CheckOk(state, ok);
    }
    benchmark::DoNotOptimize(env);
  }
  SetRates(state, recs.size(), g_rec->bytes.size());
  state.counters["table"] = double(table.size());
}

sw_net SynthConnect(const ProcInfo& p, uint32_t i) {
  sw_net e;
  std::memset(&e, 0, sizeof(e));
  e.hdr.kind = SW_KIND_TCP_CONNECT;
  e.hdr.size = sizeof(e);
  e.hdr.ts_ns = p.start_ns + 1'000'000'000ULL;
  e.task.tgid = p.pid;
  e.task.pid = p.pid;
  e.task.start_ns = p.start_ns;
  e.task.cgroup_id = p.cgroup_id;
  e.task.uid = p.uid;
  e.task.gid = p.gid;
  std::memcpy(e.task.comm, p.comm.data(), std::min<size_t>(p.comm.size(), SW_TASK_COMM_LEN - 1));
  const uint8_t src[4] = {10, 0, 0, 2}, dst[4] = {10, 1, uint8_t(i >> 8), uint8_t(i)};
  std::memcpy(e.saddr, src, 4);
  std::memcpy(e.daddr, dst, 4);
  e.sport = 32768 + i % 28000;
  e.dport = 443;
  e.family = AF_INET;
  e.protocol = IPPROTO_TCP;
  e.direction = SW_DIR_OUTBOUND;
  e.sock_cookie = 1000 + i;
  return e;
}

// Network events owned by uniformly random processes of an N-process table:
// no locality at all, the worst case for the table's memory.
void BM_NetLookup(benchmark::State& state) {
  const uint32_t n = state.range(0);
  ProcessTable table;
  Prefill(&table, n);
  std::mt19937 rng(42);
  std::vector<sw_net> events;
  for (uint32_t i = 0; i < 8192; ++i)
    events.push_back(SynthConnect(SynthProcess(rng() % n), i));
  Decoder dec(&table, &g_clock);
  v1::Envelope env;
  for (auto _ : state) {
    for (const sw_net& e : events) {
      env.Clear();
      auto ok = dec.Decode(Record(reinterpret_cast<const uint8_t*>(&e), sizeof(e)), &env);
      CheckOk(state, ok);
    }
    benchmark::DoNotOptimize(env);
  }
  if (dec.unattributed()) state.SkipWithError("synthetic events not attributed");
  SetRates(state, events.size(), events.size() * sizeof(sw_net));
}

void BM_TableFind(benchmark::State& state) {
  const uint32_t n = state.range(0);
  ProcessTable table;
  Prefill(&table, n);
  std::mt19937 rng(7);
  std::vector<std::pair<uint32_t, uint64_t>> keys;
  for (int i = 0; i < 8192; ++i) {
    const ProcInfo p = SynthProcess(rng() % n);
    keys.emplace_back(p.pid, p.start_ns);
  }
  size_t found = 0;
  for (auto _ : state) {
    for (const auto& [pid, start] : keys) found += table.Find(pid, start) != nullptr;
    benchmark::DoNotOptimize(found);
  }
  if (found != size_t(state.iterations()) * keys.size()) state.SkipWithError("lookups missed");
  SetRates(state, keys.size(), 0);
}

// Only the records of one kind, against a table that already saw the whole
// recording (so exits and network events find their process).
void BM_Kind(benchmark::State& state, uint16_t kind) {
  std::vector<Record> recs;
  size_t bytes = 0;
  for (Record r : g_rec->records)
    if (KindOf(r) == kind) {
      recs.push_back(r);
      bytes += r.size();
    }
  ProcessTable table;
  Decoder dec(&table, &g_clock);
  v1::Envelope env;
  for (Record r : g_rec->records) {
    env.Clear();
    (void)dec.Decode(r, &env);
  }
  for (auto _ : state) {
    for (Record r : recs) {
      env.Clear();
      auto ok = dec.Decode(r, &env);
      CheckOk(state, ok);
    }
    benchmark::DoNotOptimize(env);
  }
  SetRates(state, recs.size(), bytes);
}

// Parts of the per-event work, to see what dominates.
void BM_PartFillProcess(benchmark::State& state) {
  ProcInfo p;
  p.pid = 4242;
  p.ppid = 4200;
  p.start_ns = 123'456'789'000;
  p.exe = "/usr/bin/curl";
  p.comm = "curl";
  p.argv = {"curl", "-s", "-o", "/dev/null", "http://127.0.0.1:18080/index.html"};
  v1::Envelope env;
  for (auto _ : state) {
    env.Clear();
    sockwatch::FillProcess(p, g_clock, env.mutable_network()->mutable_process());
    benchmark::DoNotOptimize(env);
  }
  SetRates(state, 1, 0);
}

void BM_PartCommunityId(benchmark::State& state) {
  const uint8_t a[4] = {127, 0, 0, 1}, b[4] = {127, 0, 0, 1};
  uint16_t port = 40000;
  for (auto _ : state) {
    std::string id = sockwatch::CommunityId(IPPROTO_TCP, a, ++port, b, 18080);
    benchmark::DoNotOptimize(id);
  }
  SetRates(state, 1, 0);
}

void BM_PartEnvelopeClear(benchmark::State& state) {
  v1::Envelope env;
  for (auto _ : state) {
    env.mutable_network()->mutable_process()->set_pid(1);
    env.Clear();
    benchmark::DoNotOptimize(env);
  }
  SetRates(state, 1, 0);
}

// Every envelope of the recording, already decoded, printed as JSON.
void BM_PartJson(benchmark::State& state) {
  std::vector<v1::Envelope> envs;
  ProcessTable table;
  Decoder dec(&table, &g_clock);
  for (Record r : g_rec->records) {
    v1::Envelope env;
    if (auto ok = dec.Decode(r, &env); ok.ok() && *ok) envs.push_back(std::move(env));
  }
  for (auto _ : state)
    for (const v1::Envelope& env : envs) {
      std::string j = sockwatch::EnvelopeToJson(env);
      benchmark::DoNotOptimize(j);
    }
  SetRates(state, envs.size(), 0);
}

void Register() {
  auto* b = benchmark::RegisterBenchmark("Decode", BM_Decode, Print::kNone);
  b->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("Decode+Json", BM_Decode, Print::kJson)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("Decode+Text", BM_Decode, Print::kText)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("AgentPath", BM_AgentPath)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("Prefilled", BM_Prefilled)
      ->Arg(0)->Arg(1000)->Arg(100000)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("NetLookup", BM_NetLookup)
      ->Arg(100)->Arg(10000)->Arg(100000)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("TableFind", BM_TableFind)
      ->Arg(100)->Arg(10000)->Arg(100000)->Unit(benchmark::kMicrosecond);
  std::map<uint16_t, size_t> kinds;
  for (Record r : g_rec->records) ++kinds[KindOf(r)];
  for (const auto& [kind, count] : kinds) {
    (void)count;
    const std::string name = std::string("Kind/") + KindName(kind);
    benchmark::RegisterBenchmark(name.c_str(), BM_Kind, kind)->Unit(benchmark::kMicrosecond);
  }
  benchmark::RegisterBenchmark("Part/FillProcess", BM_PartFillProcess);
  benchmark::RegisterBenchmark("Part/CommunityId", BM_PartCommunityId);
  benchmark::RegisterBenchmark("Part/EnvelopeClear", BM_PartEnvelopeClear);
  benchmark::RegisterBenchmark("Part/EnvelopeToJson", BM_PartJson)->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) {
  std::string path = SOCKWATCH_BENCH_RECORDING;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--recording=", 0) == 0) {
      path = a.substr(sizeof("--recording=") - 1);
    } else {
      if (a == "--help" || a == "-h")
        printf("decode_bench [--recording=PATH] (default %s), then Google Benchmark's flags:\n\n",
               SOCKWATCH_BENCH_RECORDING);
      args.push_back(argv[i]);
    }
  }
  int n = int(args.size());
  args.push_back(nullptr);
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;

  static Recording rec;
  std::string err;
  if (!LoadRecording(path, &rec, &err)) {
    fprintf(stderr, "decode_bench: %s\n", err.c_str());
    return 1;
  }
  g_rec = &rec;
  if (!DescribeRecording(rec)) return 1;
  fflush(stdout);
  benchmark::AddCustomContext("recording", path);
  Register();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
