// What store_bench runs on (store_bench_setup.cc): a fresh store per URL,
// and the fleet's envelopes in Write-sized groups.
#ifndef SOCKWATCH_TESTS_BENCH_STORE_BENCH_SETUP_H_
#define SOCKWATCH_TESTS_BENCH_STORE_BENCH_SETUP_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "collector/clickhouse_client.h"
#include "collector/store.h"
#include "tests/bench/store_bench_fleet.h"

namespace sockwatch::store_bench {

// A fresh store for a URL, removed (file deleted, database dropped) when
// this goes, unless kept. "sqlite:DIR" is a new file in DIR (/var/tmp when
// DIR is empty); "clickhouse://HOST:PORT[/PREFIX]" a new database
// PREFIX_<pid>_<time> (PREFIX: sockwatch_bench).
class FreshStore {
 public:
  static absl::StatusOr<std::unique_ptr<FreshStore>> Open(const std::string& url, bool keep);
  ~FreshStore();

  Store& store() { return *store_; }
  // The URL of the store as opened.
  const std::string& where() const { return where_; }
  // "N active parts in events" for ClickHouse ("" for SQLite): what FINAL
  // merges at read time.
  std::string Parts();
  // Closes the store (SQLite checkpoints its WAL into the file) and returns
  // the bytes it takes on disk.
  absl::StatusOr<uint64_t> CloseAndMeasure();

 private:
  FreshStore() = default;
  bool keep_ = false;
  std::string sqlite_path_;
  std::unique_ptr<clickhouse::Client> clickhouse_;
  std::unique_ptr<Store> store_;
  std::string where_;
};

// The Write groups of a fleet, in order: all generated before the clock
// starts (ahead), or by a thread while the store writes.
class Groups {
 public:
  Groups(const FleetOptions& options, size_t batch, bool ahead);
  ~Groups();
  // The next group (valid until the next call), or null at the end.
  const WriteGroup* Next();
  // CPU the generating thread has used (0 when generated ahead).
  double producer_cpu_s();
  // Ahead only: the same envelopes again, from the first.
  void Rewind() { next_ = 0; }
  const Fleet& fleet() const { return *fleet_; }

 private:
  void Produce();

  const size_t batch_;
  const bool ahead_;
  std::unique_ptr<Fleet> fleet_;
  std::vector<WriteGroup> all_;
  size_t next_ = 0;
  absl::Mutex mu_;
  std::deque<WriteGroup> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<WriteGroup> spent_ ABSL_GUARDED_BY(mu_);  // written; the producer frees them
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  double producer_cpu_s_ ABSL_GUARDED_BY(mu_) = 0;
  WriteGroup current_;
  std::thread thread_;
};

}  // namespace sockwatch::store_bench

#endif  // SOCKWATCH_TESTS_BENCH_STORE_BENCH_SETUP_H_
