#include "tests/bench/store_bench_setup.h"

#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace sockwatch::store_bench {

namespace {

namespace fs = std::filesystem;

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// The one number a ClickHouse query returns.
absl::StatusOr<uint64_t> SelectNumber(clickhouse::Client& client, const std::string& sql) {
  uint64_t n = 0;
  absl::Status s =
      client.Select(sql, {8}, "store_bench",
                    [&](absl::Span<const absl::string_view> row) -> absl::StatusOr<bool> {
                      n = clickhouse::Fixed<uint64_t>(row[0]);
                      return true;
                    });
  if (!s.ok()) return s;
  return n;
}

}  // namespace

absl::StatusOr<std::unique_ptr<FreshStore>> FreshStore::Open(const std::string& url, bool keep) {
  auto fresh = std::unique_ptr<FreshStore>(new FreshStore);
  fresh->keep_ = keep;
  absl::string_view rest = url;
  if (absl::ConsumePrefix(&rest, "sqlite:") || rest == "sqlite") {
    const std::string dir = rest.empty() || rest == "sqlite" ? "/var/tmp" : std::string(rest);
    fresh->sqlite_path_ = absl::StrCat(dir, "/sockwatch_store_bench_", getpid(), "_",
                                       absl::ToUnixMicros(absl::Now()), ".db");
    fresh->where_ = absl::StrCat("sqlite:", fresh->sqlite_path_);
  } else if (absl::ConsumePrefix(&rest, "clickhouse://")) {
    const size_t slash = rest.find('/');
    const std::string prefix = slash == absl::string_view::npos || slash + 1 == rest.size()
                                   ? "sockwatch_bench"
                                   : std::string(rest.substr(slash + 1));
    fresh->where_ = absl::StrCat("clickhouse://", rest.substr(0, slash), "/", prefix, "_", getpid(),
                                 "_", absl::ToUnixSeconds(absl::Now()));
    absl::StatusOr<clickhouse::Endpoint> ep = clickhouse::ParseUrl(fresh->where_);
    if (!ep.ok()) return ep.status();
    fresh->clickhouse_ = std::make_unique<clickhouse::Client>(*ep, clickhouse::ClientOptions{});
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--store=", url, ": expected sqlite:DIR or clickhouse://HOST:PORT[/PREFIX]"));
  }
  absl::StatusOr<std::unique_ptr<Store>> store = OpenStore(fresh->where_);
  if (!store.ok()) return store.status();
  fresh->store_ = std::move(*store);
  return fresh;
}

FreshStore::~FreshStore() {
  store_.reset();
  if (keep_) {
    fprintf(stderr, "store_bench: kept %s\n", where_.c_str());
    return;
  }
  if (!sqlite_path_.empty()) {
    std::error_code ec;
    for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(sqlite_path_ + suffix, ec);
  }
  if (clickhouse_) {
    const std::string& db = clickhouse_->endpoint().database;
    absl::Status s = clickhouse_->Execute(absl::StrCat("DROP DATABASE IF EXISTS `", db, "`"),
                                          absl::StrCat("drop database ", db));
    if (!s.ok()) fprintf(stderr, "store_bench: %s\n", std::string(s.message()).c_str());
  }
}

std::string FreshStore::Parts() {
  if (!clickhouse_) return "";
  absl::StatusOr<uint64_t> parts = SelectNumber(
      *clickhouse_,
      absl::StrCat("SELECT count() FROM system.parts WHERE active AND database = ",
                   clickhouse::Quote(clickhouse_->endpoint().database), " AND table = 'events'"));
  return parts.ok() ? absl::StrCat(*parts, " active parts in events")
                    : std::string(parts.status().message());
}

absl::StatusOr<uint64_t> FreshStore::CloseAndMeasure() {
  store_.reset();
  if (clickhouse_)
    return SelectNumber(*clickhouse_,
                        absl::StrCat("SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND "
                                     "database = ",
                                     clickhouse::Quote(clickhouse_->endpoint().database)));
  std::error_code ec;
  uint64_t bytes = 0;
  for (const char* suffix : {"", "-wal"}) {
    const uintmax_t n = fs::file_size(sqlite_path_ + suffix, ec);
    if (!ec) bytes += n;
  }
  return bytes;
}

Groups::Groups(const FleetOptions& options, size_t batch, bool ahead)
    : batch_(batch), ahead_(ahead), fleet_(std::make_unique<Fleet>(options)) {
  if (ahead_) {
    for (WriteGroup g = fleet_->Next(batch_); !g.envelopes.empty(); g = fleet_->Next(batch_))
      all_.push_back(std::move(g));
  } else {
    thread_ = std::thread([this] { Produce(); });
  }
}

Groups::~Groups() {
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

const WriteGroup* Groups::Next() {
  if (ahead_) return next_ < all_.size() ? &all_[next_++] : nullptr;
  absl::MutexLock l(&mu_);
  if (current_.arena) spent_.push_back(std::move(current_));
  auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return done_ || !queue_.empty(); };
  mu_.Await(absl::Condition(&ready));
  if (queue_.empty()) return nullptr;
  current_ = std::move(queue_.front());
  queue_.pop_front();
  return &current_;
}

double Groups::producer_cpu_s() {
  absl::MutexLock l(&mu_);
  return producer_cpu_s_;
}

// A few groups ahead of the writer, no more: memory stays bounded. Written
// groups are freed here, off the writer's clock, and malloc hands the same
// memory out again, so there are no page faults after the first groups (a
// fault costs microseconds in this VM, more than building an envelope).
void Groups::Produce() {
  for (;;) {
    std::vector<WriteGroup> spent;
    {
      absl::MutexLock l(&mu_);
      spent.swap(spent_);
    }
    spent.clear();
    WriteGroup g = fleet_->Next(batch_);
    absl::MutexLock l(&mu_);
    producer_cpu_s_ = ThreadCpuSeconds();
    if (g.envelopes.empty()) {
      done_ = true;
      return;
    }
    auto room = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stop_ || queue_.size() < 2; };
    mu_.Await(absl::Condition(&room));
    if (stop_) return;
    queue_.push_back(std::move(g));
  }
}

}  // namespace sockwatch::store_bench
