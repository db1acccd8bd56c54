// The store contract fixture: the same tests run against every backend
// (collector/store.h). Each test gets a fresh, empty store.
//
//   class MyTest : public StoreBackendTest {};
//   TEST_P(MyTest, Thing) { store().Write(...); }
//   INSTANTIATE_TEST_SUITE_P(Backends, MyTest, ::testing::ValuesIn(StoreBackends()),
//                            BackendName);
//
// SQLite: a file in a fresh temporary directory. ClickHouse: a fresh
// database (unique name, dropped afterwards) on the server named by
// SOCKWATCH_TEST_CLICKHOUSE ("http://HOST:PORT" or "clickhouse://HOST:PORT").
// ctest starts a throwaway server and sets it (tests/clickhouse/start.sh,
// tests/unit/CMakeLists.txt). Unset, the ClickHouse tests fail and say so;
// SOCKWATCH_SKIP_CLICKHOUSE=1 skips them instead.
#ifndef SOCKWATCH_TESTS_UNIT_STORE_BACKENDS_H_
#define SOCKWATCH_TESTS_UNIT_STORE_BACKENDS_H_

#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "collector/clickhouse_client.h"
#include "collector/store.h"
#include "gtest/gtest.h"
#include "tests/unit/store_test_util.h"

namespace sockwatch::store_test {

inline std::vector<std::string> StoreBackends() { return {"sqlite", "clickhouse"}; }

inline std::string BackendName(const ::testing::TestParamInfo<std::string>& info) {
  return info.param;
}

inline bool SkipClickHouse() {
  const char* skip = getenv("SOCKWATCH_SKIP_CLICKHOUSE");
  return skip != nullptr && std::string(skip) == "1";
}

// "[user[:password]@]HOST:PORT" of the test server, from
// SOCKWATCH_TEST_CLICKHOUSE; a clear error when it is not set.
inline absl::StatusOr<std::string> ClickHouseTestServer() {
  const char* env = getenv("SOCKWATCH_TEST_CLICKHOUSE");
  if (env == nullptr || *env == '\0')
    return absl::FailedPreconditionError(
        "SOCKWATCH_TEST_CLICKHOUSE is not set: the ClickHouse store tests need a server. "
        "Run them with ctest (it starts one), or start one with "
        "`tests/clickhouse/start.sh DIR` and export SOCKWATCH_TEST_CLICKHOUSE=<the URL it "
        "prints>; SOCKWATCH_SKIP_CLICKHOUSE=1 skips them");
  absl::string_view url = env;
  if (!absl::ConsumePrefix(&url, "http://") && !absl::ConsumePrefix(&url, "clickhouse://"))
    return absl::InvalidArgumentError(absl::StrCat("SOCKWATCH_TEST_CLICKHOUSE=\"", env,
                                                   "\": expected http://HOST:PORT or "
                                                   "clickhouse://HOST:PORT"));
  return std::string(url.substr(0, url.find('/')));
}

// A database name of its own on the test server: created by whoever opens
// a store on url(), dropped when this goes. Also runs SQL the way another
// writer (or a damaged server) would.
class ClickHouseTestDatabase {
 public:
  static absl::StatusOr<std::unique_ptr<ClickHouseTestDatabase>> Create() {
    absl::StatusOr<std::string> server = ClickHouseTestServer();
    if (!server.ok()) return server.status();
    // Unique across the test processes ctest runs side by side.
    static std::atomic<int> counter{0};
    const std::string name = absl::StrCat("sockwatch_test_", getpid(), "_", counter++, "_",
                                          std::random_device()() % 1000000);
    const std::string url = absl::StrCat("clickhouse://", *server, "/", name);
    absl::StatusOr<clickhouse::Endpoint> ep = clickhouse::ParseUrl(url);
    if (!ep.ok()) return ep.status();
    return std::unique_ptr<ClickHouseTestDatabase>(new ClickHouseTestDatabase(url, *ep));
  }
  ~ClickHouseTestDatabase() {
    absl::Status s = client_.Execute(absl::StrCat("DROP DATABASE IF EXISTS ", name()), "drop");
    if (!s.ok()) ADD_FAILURE() << s;
  }
  const std::string& url() const { return url_; }
  const std::string& name() const { return client_.endpoint().database; }
  // The server's general-purpose client (no database of its own).
  clickhouse::Client& client() { return client_; }
  bool Exec(const std::string& sql) {
    absl::Status s = client_.Execute(sql, "test");
    if (!s.ok()) ADD_FAILURE() << sql << ": " << s;
    return s.ok();
  }
  // The first row of a one-String-column query: "<none>" or "<error: ...>".
  std::string Text(const std::string& sql) {
    std::string out = "<none>";
    absl::Status s =
        client_.Select(sql, {clickhouse::kString}, "test",
                       [&out](absl::Span<const absl::string_view> row) -> absl::StatusOr<bool> {
                         out = std::string(row[0]);
                         return false;
                       });
    return s.ok() ? out : absl::StrCat("<error: ", s.message(), ">");
  }

 private:
  ClickHouseTestDatabase(std::string url, clickhouse::Endpoint ep)
      : url_(std::move(url)), client_(std::move(ep), clickhouse::ClientOptions{}) {}
  std::string url_;
  clickhouse::Client client_;
};

class StoreBackendTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "clickhouse") {
      if (SkipClickHouse()) GTEST_SKIP() << "SOCKWATCH_SKIP_CLICKHOUSE=1";
      absl::StatusOr<std::unique_ptr<ClickHouseTestDatabase>> db = ClickHouseTestDatabase::Create();
      ASSERT_TRUE(db.ok()) << db.status();
      clickhouse_ = std::move(*db);
      url_ = clickhouse_->url();
    } else {
      std::string tmpl = ::testing::TempDir() + "/storeXXXXXX";
      ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
      dir_ = tmpl;
      url_ = "sqlite:" + dir_ + "/collector.db";
    }
    store_ = OpenAnother();
    ASSERT_NE(store_, nullptr);
  }
  void TearDown() override {
    store_.reset();
    clickhouse_.reset();
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }
  Store& store() { return *store_; }
  // Another Store on the same data, as a restarted collector would open.
  std::unique_ptr<Store> OpenAnother() {
    absl::StatusOr<std::unique_ptr<Store>> s = OpenStore(url_);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }
  // The calls most tests make, failing the test (not aborting it) on error.
  WriteResult Write(const std::vector<v1::Envelope>& batch) {
    absl::StatusOr<WriteResult> r = store_->Write(Ptrs(batch));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : WriteResult{999, 999};
  }
  std::vector<v1::Envelope> Events(const EventQuery& q = {}) {
    absl::StatusOr<std::vector<v1::Envelope>> r = store_->Events(q);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::vector<v1::Envelope>{};
  }
  uint64_t Count(const EventQuery& q = {}) {
    absl::StatusOr<uint64_t> r = store_->CountEvents(q);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : 999999;
  }
  // "host/instance/seq" of what Events(q) returns, in order.
  std::vector<std::string> Find(const EventQuery& q = {}) { return Keys(Events(q)); }
  // The ClickHouse database of this test; null for other backends.
  ClickHouseTestDatabase* clickhouse() { return clickhouse_.get(); }

 private:
  std::string dir_;
  std::string url_;
  std::unique_ptr<ClickHouseTestDatabase> clickhouse_;
  std::unique_ptr<Store> store_;
};

}  // namespace sockwatch::store_test

#endif  // SOCKWATCH_TESTS_UNIT_STORE_BACKENDS_H_
