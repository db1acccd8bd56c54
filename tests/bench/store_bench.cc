// store_bench: the collector's stores at fleet scale. Loads a synthetic
// fleet's events (store_bench_fleet.h) into a fresh store of each kind named,
// the way the collector's group commit writes them, then times the SOC's
// questions: alerts, a host's history, event search, prevalence. Stores run
// one after the other in one process and are printed side by side.
// A benchmark, not a test: nothing is asserted but that answers are not empty.
//
//   store_bench --store=sqlite:/var/tmp --store=clickhouse://127.0.0.1:PORT
//     [--events=10000000] [--hosts=1000] [--batch=50000] [--agent_batch=1000]
//     [--queries=10] [--generate_ahead] [--keep]
//
// Envelopes come from a thread that generates them while the store writes
// (its CPU time is printed); --generate_ahead makes them all before the clock
// starts instead, at ~1.6 KB of memory per event.
//
// A store URL is as the collector's --store, except that the file or the
// database is made fresh here and removed afterwards: "sqlite:DIR" (a new
// file in DIR; /var/tmp by default, a real disk) and
// "clickhouse://HOST:PORT[/PREFIX]" (a new database PREFIX_<pid>_<time>).
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "collector/clickhouse_store.h"
#include "collector/store.h"
#include "tests/bench/store_bench_fleet.h"
#include "tests/bench/store_bench_setup.h"

ABSL_FLAG(
    std::vector<std::string>, store, {"sqlite:/var/tmp"},
    "Stores to load, comma-separated or repeated: sqlite:DIR, clickhouse://HOST:PORT[/PREFIX]");
ABSL_FLAG(uint64_t, events, 10'000'000, "Events loaded into each store");
ABSL_FLAG(int, hosts, 1000, "Hosts in the fleet");
// The collector's --group_envelopes default (collector/main.cc).
ABSL_FLAG(size_t, batch, 50'000, "Envelopes per Store::Write (the collector's group commit)");
ABSL_FLAG(size_t, agent_batch, 1000,
          "Envelopes per agent batch (the agent's --export_batch); a Write joins whole "
          "batches of batch/agent_batch hosts");
ABSL_FLAG(int, queries, 10, "Runs of each query (latency median and p90)");
ABSL_FLAG(bool, keep, false, "Leave the stores behind for inspection (their names are printed)");
ABSL_FLAG(bool, generate_ahead, false,
          "Generate every envelope before the clock starts (memory: ~1.6 KB per event); "
          "false: a thread generates while the store writes (sharing the CPU; its CPU "
          "time is printed)");

namespace sockwatch::store_bench {
namespace {

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// Bytes this process has read and written through read/write syscalls
// (files; not socket sends), from /proc/self/io.
struct Io {
  uint64_t read = 0, written = 0;
};
Io ProcessIo() {
  Io io;
  FILE* f = fopen("/proc/self/io", "r");
  if (f == nullptr) return io;
  char name[32];
  unsigned long long v = 0;
  while (fscanf(f, "%31s %llu", name, &v) == 2) {
    if (absl::string_view(name) == "rchar:") io.read = v;
    if (absl::string_view(name) == "wchar:") io.written = v;
  }
  fclose(f);
  return io;
}

// Resident memory of this process, MiB (0 if unknown).
double RssMiB() {
  FILE* f = fopen("/proc/self/statm", "r");
  long pages = 0, resident = 0;
  if (f != nullptr) {
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    fclose(f);
  }
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1 << 20);
}

// Value at quantile q of sorted v (nearest rank).
double At(const std::vector<double>& sorted, double q) {
  return sorted[std::min(sorted.size() - 1, static_cast<size_t>(q * sorted.size()))];
}

// One SOC question: runs it and returns how many rows (or hosts) it found.
struct Query {
  std::string name;
  std::function<absl::StatusOr<uint64_t>(Store&)> run;
};

template <typename T>
absl::StatusOr<uint64_t> Rows(const absl::StatusOr<std::vector<T>>& r) {
  if (!r.ok()) return r.status();
  return r->size();
}

std::vector<Query> Queries(const FleetTargets& t, uint64_t fleet_hosts) {
  std::vector<Query> q;
  q.push_back({"alerts: newest 100 (sockwatch alerts)", [](Store& s) {
                 EventQuery e;
                 e.kind = "alert";
                 e.limit = 100;
                 e.newest_first = true;
                 return Rows(s.Events(e));
               }});
  q.push_back({"host history: 1 host, 1 hour, limit 10001", [&t](Store& s) {
                 EventQuery e;
                 e.host_id = t.history_host;
                 e.since = t.history_since;
                 e.until = t.history_since + absl::Hours(1);
                 // A page of 10,000 plus one, as the query service asks for
                 // `sockwatch history` (to know whether there is more).
                 e.limit = 10'001;
                 return Rows(s.Events(e));
               }});
  for (const auto& [what, exe] :
       {std::pair{"on 3 hosts", &t.rare_exe}, std::pair{"on every host", &t.common_exe}}) {
    q.push_back({absl::StrCat("events by exe, image ", what, ", limit 100"), [exe](Store& s) {
                   EventQuery e;
                   e.exe = *exe;
                   e.limit = 100;
                   return Rows(s.Events(e));
                 }});
  }
  q.push_back({"losses, every host (Hosts RPC)", [](Store& s) {
                 EventQuery e;
                 e.kind = "loss";
                 e.limit = 0;
                 return Rows(s.Events(e));
               }});
  q.push_back({"Hosts()", [](Store& s) { return Rows(s.Hosts()); }});
  q.push_back({"CountHosts() (writer, per group with an alert)",
               [](Store& s) { return s.CountHosts(); }});
  q.push_back({"CountFactHosts: image by sha256, 1 host out", [&t](Store& s) {
                 PrevalenceQuery p;
                 p.sha256 = t.common_sha256;
                 p.exclude_host = t.exclude_host;
                 return s.CountFactHosts(p);
               }});
  q.push_back({"RarestImages, limit 50", [](Store& s) { return Rows(s.RarestImages({}, 50)); }});
  q.push_back({"RarestPairs, limit 50", [](Store& s) { return Rows(s.RarestPairs({}, 50)); }});
  q.push_back({"FactHosts: sha256 + CIDR, limit 10000", [&t](Store& s) {
                 PrevalenceQuery p;
                 p.sha256 = t.common_sha256;
                 p.remote = t.common_cidr;
                 return Rows(s.FactHosts(p, 10'000));
               }});
  q.push_back({"AddFleetPrevalence: 1 alert (writer, per alert)",
               [&t, fleet_hosts](Store& s) -> absl::StatusOr<uint64_t> {
                 v1::Envelope alert = t.sample_alert;
                 if (absl::Status st = AddFleetPrevalence(s, fleet_hosts, alert); !st.ok())
                   return st;
                 return alert.alert().fleet().image_hosts() - 1;  // what the store counted
               }});
  return q;
}

struct QueryResult {
  std::vector<double> ms;  // in run order
  uint64_t rows = 0;
};

struct StoreResult {
  std::string where;
  double upsert_s = 0;
  double upserts_s = 0;  // UpsertHosts of every host at once
  uint64_t stored = 0;
  double ingest_s = 0, ingest_cpu_s = 0;
  double generate_cpu_s = 0;  // of ingest_cpu_s: the generating thread's
  Io io;                      // during ingest
  std::vector<double> write_ms;
  int64_t key_lookups = -1;  // ClickHouse: Writes that asked which keys are stored
  std::string parts;
  uint64_t disk_bytes = 0;
  std::vector<QueryResult> queries;
};

// Loads groups into a fresh store for url and times the queries.
absl::StatusOr<StoreResult> RunStore(const std::string& url, Groups& groups, uint64_t events,
                                     int runs) {
  absl::StatusOr<std::unique_ptr<FreshStore>> fresh =
      FreshStore::Open(url, absl::GetFlag(FLAGS_keep));
  if (!fresh.ok()) return fresh.status();
  Store& store = (*fresh)->store();
  StoreResult r;
  r.where = (*fresh)->where();
  fprintf(stderr, "store_bench: %s: loading %llu events\n", r.where.c_str(),
          static_cast<unsigned long long>(events));
  // Every agent says Hello when its stream starts, before its batches.
  const std::vector<v1::Hello> hellos = groups.fleet().Hellos();
  absl::Time t0 = absl::Now();
  for (const v1::Hello& h : hellos)
    if (absl::Status s = store.UpsertHost(h, absl::Now()); !s.ok()) return s;
  r.upsert_s = Seconds(absl::Now() - t0);
  // The fleet reconnects: every Hello again, in one writer group.
  std::vector<const v1::Hello*> group;
  for (const v1::Hello& h : hellos) group.push_back(&h);
  t0 = absl::Now();
  if (absl::Status s = store.UpsertHosts(group, absl::Now()); !s.ok()) return s;
  r.upserts_s = Seconds(absl::Now() - t0);

  const double cpu0 = CpuSeconds();
  const Io io0 = ProcessIo();
  t0 = absl::Now();
  uint64_t next_report = events / 10;
  for (const WriteGroup* g = groups.Next(); g != nullptr; g = groups.Next()) {
    const absl::Time w0 = absl::Now();
    absl::StatusOr<WriteResult> w = store.Write(g->envelopes);
    r.write_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - w0));
    if (!w.ok()) return w.status();
    if (w->stored != g->envelopes.size())
      return absl::InternalError(absl::StrCat(r.where, ": a fresh store called ", w->duplicates,
                                              " of ", g->envelopes.size(),
                                              " new envelopes duplicates"));
    r.stored += w->stored;
    if (r.stored >= next_report) {
      fprintf(stderr, "store_bench: %s: %llu events, %.1f s\n", r.where.c_str(),
              static_cast<unsigned long long>(r.stored), Seconds(absl::Now() - t0));
      next_report += events / 10;
    }
  }
  r.ingest_s = Seconds(absl::Now() - t0);
  r.ingest_cpu_s = CpuSeconds() - cpu0;
  r.generate_cpu_s = groups.producer_cpu_s();
  if (const auto* ch = dynamic_cast<const ClickHouseStore*>(&store))
    r.key_lookups = static_cast<int64_t>(ch->key_lookups());
  const Io io1 = ProcessIo();
  r.io = {io1.read - io0.read, io1.written - io0.written};
  r.parts = (*fresh)->Parts();

  // Round-robin over the queries, so a noisy moment hits them all alike.
  const std::vector<Query> queries = Queries(groups.fleet().targets(), hellos.size());
  r.queries.resize(queries.size());
  for (int run = 0; run < runs; ++run) {
    for (size_t i = 0; i < queries.size(); ++i) {
      const absl::Time q0 = absl::Now();
      absl::StatusOr<uint64_t> rows = queries[i].run(store);
      r.queries[i].ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - q0));
      if (!rows.ok())
        return absl::Status(rows.status().code(),
                            absl::StrCat(queries[i].name, ": ", rows.status().message()));
      // An empty answer times nothing worth knowing: the fleet or the query is wrong.
      if (*rows == 0)
        return absl::FailedPreconditionError(
            absl::StrCat(r.where, ": \"", queries[i].name,
                         "\" found nothing; a benchmark of an empty answer "
                         "is worthless (too few --events for this fleet?)"));
      r.queries[i].rows = *rows;
    }
    fprintf(stderr, "store_bench: %s: query run %d of %d done\n", r.where.c_str(), run + 1, runs);
  }
  absl::StatusOr<uint64_t> disk = (*fresh)->CloseAndMeasure();
  if (!disk.ok()) return disk.status();
  r.disk_bytes = *disk;
  return r;
}

// "median / p90 (first)" of ms, in ms.
std::string Latency(std::vector<double> ms) {
  const double first = ms.front();
  std::sort(ms.begin(), ms.end());
  return absl::StrFormat("%7.1f / %7.1f (%7.1f)", At(ms, 0.5), At(ms, 0.9), first);
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return At(v, 0.5);
}

using Cell = std::function<std::string(const StoreResult&)>;
using Value = std::function<double(const StoreResult&)>;

// One line: a cell per store, then each store's value over the first's
// (when value is set and there are several stores).
void Row(const std::vector<StoreResult>& results, const std::string& name, const Cell& cell,
         const Value& value) {
  printf("%-48s", name.c_str());
  for (const StoreResult& r : results) printf(" | %37s", cell(r).c_str());
  for (size_t i = 1; i < results.size() && value; ++i) {
    if (value(results[0]) == 0) {
      printf(" | %7s", "-");
    } else {
      printf(" | %7.2f", value(results[i]) / value(results[0]));
    }
  }
  printf("\n");
}

void Print(const std::vector<StoreResult>& results, const std::vector<Query>& queries) {
  for (size_t i = 0; i < results.size(); ++i) printf("[%zu] %s\n", i + 1, results[i].where.c_str());
  printf("%-48s", "");
  for (size_t i = 0; i < results.size(); ++i)
    printf(" | %37s", absl::StrCat("[", i + 1, "]").c_str());
  for (size_t i = 1; i < results.size(); ++i)
    printf(" | %7s", absl::StrCat("[", i + 1, "]/[1]").c_str());
  printf("\n");
  auto number = [&](const std::string& name, const char* format, const Value& value) {
    Row(
        results, name, [&](const StoreResult& r) { return absl::StrFormat(format, value(r)); },
        value);
  };
  number("UpsertHost, every host (s)", "%.2f", [](const StoreResult& r) { return r.upsert_s; });
  number("UpsertHosts, every host in one group (s)", "%.3f",
         [](const StoreResult& r) { return r.upserts_s; });
  number("ingest: events", "%.0f",
         [](const StoreResult& r) { return static_cast<double>(r.stored); });
  number("ingest: seconds", "%.1f", [](const StoreResult& r) { return r.ingest_s; });
  number("ingest: events/s", "%.0f", [](const StoreResult& r) { return r.stored / r.ingest_s; });
  number("ingest: this process's CPU (s)", "%.1f",
         [](const StoreResult& r) { return r.ingest_cpu_s; });
  number("  of which generating envelopes (s)", "%.1f",
         [](const StoreResult& r) { return r.generate_cpu_s; });
  Row(
      results, "ingest: file bytes read / written per event",
      [](const StoreResult& r) {
        if (r.io.read + r.io.written == 0) return std::string("-");  // a server's, not ours
        return absl::StrFormat("%.0f / %.0f", r.io.read / static_cast<double>(r.stored),
                               r.io.written / static_cast<double>(r.stored));
      },
      nullptr);
  Row(
      results, "Write (ms): median / p90 (first)",
      [](const StoreResult& r) { return Latency(r.write_ms); },
      [](const StoreResult& r) { return Median(r.write_ms); });
  Row(
      results, "Writes that looked up stored keys",
      [](const StoreResult& r) {
        if (r.key_lookups < 0) return std::string("-");  // SQLite: an index probe per event
        return absl::StrCat(r.key_lookups, " of ", r.write_ms.size());
      },
      nullptr);
  number("on disk after queries (MB per million events)", "%.0f",
         [](const StoreResult& r) { return r.disk_bytes / static_cast<double>(r.stored); });
  Row(
      results, "after ingest",
      [](const StoreResult& r) { return r.parts.empty() ? std::string("-") : r.parts; }, nullptr);
  printf("\nquery latency, ms: median / p90 (first run), over %zu runs; rows found\n",
         results.front().queries.front().ms.size());
  for (size_t i = 0; i < queries.size(); ++i) {
    Row(
        results, queries[i].name,
        [i](const StoreResult& r) {
          return absl::StrFormat("%s %6llu", Latency(r.queries[i].ms),
                                 static_cast<unsigned long long>(r.queries[i].rows));
        },
        [i](const StoreResult& r) { return Median(r.queries[i].ms); });
  }
}

int Main(int argc, char** argv) {
  // --store may be repeated: join every occurrence into one list.
  std::vector<char*> args;
  std::vector<std::string> stores;
  for (int i = 0; i < argc; ++i) {
    absl::string_view a = argv[i];
    if (i > 0 && absl::ConsumePrefix(&a, "--store=")) {
      stores.emplace_back(a);
    } else {
      args.push_back(argv[i]);
    }
  }
  std::string joined = absl::StrCat("--store=", absl::StrJoin(stores, ","));
  if (!stores.empty()) args.push_back(joined.data());
  absl::SetProgramUsageMessage(
      "Loads a synthetic fleet into each store and times the SOC's queries");
  absl::ParseCommandLine(static_cast<int>(args.size()), args.data());

  FleetOptions fo;
  fo.events = absl::GetFlag(FLAGS_events);
  fo.hosts = absl::GetFlag(FLAGS_hosts);
  fo.agent_batch = absl::GetFlag(FLAGS_agent_batch);
  const size_t batch = absl::GetFlag(FLAGS_batch);
  const int runs = absl::GetFlag(FLAGS_queries);
  const bool ahead = absl::GetFlag(FLAGS_generate_ahead);
  const std::vector<std::string> urls = absl::GetFlag(FLAGS_store);
  if (fo.hosts < 1 || fo.events < static_cast<uint64_t>(fo.hosts) || batch < 1 || runs < 1 ||
      fo.agent_batch < 1 || urls.empty()) {
    fprintf(stderr,
            "store_bench: want --hosts >= 1, --events >= hosts, --batch, --agent_batch, "
            "--queries >= 1 and a --store\n");
    return 2;
  }

  std::unique_ptr<Groups> groups;
  const double rss0 = RssMiB();
  if (ahead) {
    const absl::Time g0 = absl::Now();
    groups = std::make_unique<Groups>(fo, batch, true);
    fprintf(stderr, "store_bench: generated ahead in %.1f s, %.0f MiB\n", Seconds(absl::Now() - g0),
            RssMiB() - rss0);
  }
  std::vector<StoreResult> results;
  for (const std::string& url : urls) {
    if (!ahead) groups = std::make_unique<Groups>(fo, batch, false);  // a new thread per store
    absl::StatusOr<StoreResult> r = RunStore(url, *groups, fo.events, runs);
    if (!r.ok()) {
      fprintf(stderr, "store_bench: %s: %s\n", url.c_str(),
              std::string(r.status().message()).c_str());
      return 1;
    }
    results.push_back(std::move(*r));
    if (ahead) groups->Rewind();  // the next store gets the same envelopes
  }

  const FleetCounts& c = groups->fleet().counts();
  printf(
      "store_bench: %llu events from %d hosts (%.1f images per host): network %llu, "
      "flow ends %llu, exec %llu, fork %llu, exit %llu, alerts %llu, losses %llu; "
      "%.0f bytes per envelope\n",
      static_cast<unsigned long long>(c.total()), fo.hosts,
      static_cast<double>(c.images) / fo.hosts, static_cast<unsigned long long>(c.network),
      static_cast<unsigned long long>(c.flow_ends), static_cast<unsigned long long>(c.exec),
      static_cast<unsigned long long>(c.fork), static_cast<unsigned long long>(c.exit),
      static_cast<unsigned long long>(c.alerts), static_cast<unsigned long long>(c.losses),
      static_cast<double>(c.bytes) / c.total());
  printf("Writes of %zu envelopes (agent batches of %zu, hosts in turn); envelopes generated %s\n",
         batch, fo.agent_batch,
         ahead ? "before the clock started (the rate is the store's alone)"
               : "by a thread while writing (it shares the CPU with the store)");
  Print(results, Queries(groups->fleet().targets(), fo.hosts));
  return 0;
}

}  // namespace
}  // namespace sockwatch::store_bench

int main(int argc, char** argv) { return sockwatch::store_bench::Main(argc, argv); }
