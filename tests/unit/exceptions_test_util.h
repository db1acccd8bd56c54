// Shared fixtures of the exceptions tests.
#ifndef SOCKWATCH_TESTS_UNIT_EXCEPTIONS_TEST_UTIL_H_
#define SOCKWATCH_TESTS_UNIT_EXCEPTIONS_TEST_UTIL_H_

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "agent/exceptions.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sockwatch::exceptions_test {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

inline const absl::Time kNow =
    absl::FromCivil(absl::CivilSecond(2026, 6, 1, 12, 0, 0), absl::UTCTimeZone());
inline constexpr char kSha[] = "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b";

// One entry whose match is the YAML flow map `match`.
inline std::string Doc(absl::string_view match, absl::string_view expires = "2099-01-01") {
  return absl::StrCat("exceptions:\n  - owner: alice@example.com\n    reason: test\n    expires: ",
                      expires, "\n    match: ", match, "\n");
}

inline ExceptionSet MustParse(const std::string& yaml) {
  absl::StatusOr<ExceptionSet> s = ExceptionSet::Parse(yaml, "t.yaml");
  EXPECT_TRUE(s.ok()) << s.status() << "\n" << yaml;
  return s.ok() ? *std::move(s) : ExceptionSet();
}

// Debian's absl::string_view is not std::string_view, which gMock's string matchers want.
inline std::string Msg(const absl::Status& s) { return std::string(s.message()); }

inline bool Matches(absl::string_view match, const ExceptionFacts& f) {

  return MustParse(Doc(match)).Match(f, kNow) != nullptr;
}

inline ExceptionFacts Base() {
  ExceptionFacts f;
  f.rule = "new_behavior";
  f.exe = "/usr/local/bin/backup-nightly";
  f.sha256 = kSha;
  f.argv = {"backup-nightly", "--target", "s3://bucket/host1"};
  f.parent_exe = "/usr/sbin/cron";
  f.container_id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  f.direction = v1::DIRECTION_OUTBOUND;
  f.protocol = v1::PROTOCOL_TCP;
  f.port = 443;
  f.remote_ip = "10.1.2.3";
  return f;
}

// A one-entry file whose match block (line 7 on) gets `extra` as line 8.
inline std::string WithMatchLine(absl::string_view extra) {
  return absl::StrCat("exceptions:\n  - id: x\n    owner: a\n    reason: r\n",
                      "    expires: 2099-01-01\n    match:\n      exe: /usr/bin/x\n", extra, "\n");
}

class ExceptionTempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/exceptions_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }
  std::string dir_;
};

}  // namespace sockwatch::exceptions_test

#endif  // SOCKWATCH_TESTS_UNIT_EXCEPTIONS_TEST_UTIL_H_
