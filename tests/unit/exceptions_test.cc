#include "agent/exceptions.h"

#include <sqlite3.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

#include "tests/unit/exceptions_test_util.h"

namespace sockwatch {
namespace {

using namespace exceptions_test;  // NOLINT: shared test fixtures

struct FieldCase {
  const char* match;
  std::function<void(ExceptionFacts&)> spoil;  // makes the field not match
};

const std::vector<FieldCase>& FieldCases() {
  static const auto* cases = new std::vector<FieldCase>{
      {"{exe: '/usr/local/bin/backup*'}", [](auto& f) { f.exe = "/usr/bin/curl"; }},
      {"{sha256: 3A7BD3E2360A3D29EEA436FCFB7E44C735D117C42D1C1835420B6B9942DD4F1B}",
       [](auto& f) { f.sha256 = std::string(64, '0'); }},
      {"{argv: '--target s3://.*'}",
       [](auto& f) {
         f.argv = {"backup", "--target", "gs://x"};
       }},
      {"{parent_exe: /usr/sbin/cron}", [](auto& f) { f.parent_exe = "/bin/bash"; }},
      {"{container: 0123456789ab}", [](auto& f) { f.container_id = "fedcba9876543210"; }},
      {"{direction: outbound}", [](auto& f) { f.direction = v1::DIRECTION_INBOUND; }},
      {"{protocol: tcp}", [](auto& f) { f.protocol = v1::PROTOCOL_UDP; }},
      {"{port: 443}", [](auto& f) { f.port = 444; }},
      {"{remote: 10.0.0.0/8}", [](auto& f) { f.remote_ip = "11.0.0.1"; }},
      {"{rule: new_behavior}", [](auto& f) { f.rule = "first_network_use"; }},
  };
  return *cases;
}

TEST(ExceptionMatchTest, EachFieldAlone) {
  for (const FieldCase& c : FieldCases()) {
    ExceptionFacts f = Base();
    EXPECT_TRUE(Matches(c.match, f)) << c.match;
    c.spoil(f);
    EXPECT_FALSE(Matches(c.match, f)) << c.match;
  }
}

TEST(ExceptionMatchTest, AllFieldsCombinedMustAllMatch) {
  const ExceptionSet set = MustParse(
      Doc(absl::StrCat("{exe: '/usr/local/bin/backup*', sha256: ", kSha,
                       ", argv: '--target s3://.*', parent_exe: /usr/sbin/cron, container: "
                       "0123456789ab, direction: outbound, protocol: tcp, port: 443, remote: "
                       "10.0.0.0/8, rule: new_behavior}")));
  EXPECT_NE(set.Match(Base(), kNow), nullptr);
  for (const FieldCase& c : FieldCases()) {
    ExceptionFacts f = Base();
    c.spoil(f);
    EXPECT_EQ(set.Match(f, kNow), nullptr) << c.match;
  }
}

TEST(ExceptionMatchTest, GlobsDoNotCrossSlashOrMatchHiddenNames) {
  ExceptionFacts f = Base();
  auto exe = [&](const std::string& path) {
    f.exe = path;
    return Matches("{exe: '/opt/app/*'}", f);
  };
  EXPECT_TRUE(exe("/opt/app/server"));
  EXPECT_FALSE(exe("/opt/app/uploads/evil"));
  EXPECT_FALSE(exe("/opt/app/.hidden"));
  EXPECT_FALSE(exe("/opt/application"));
  EXPECT_FALSE(exe(""));  // unknown exe never matches, not even '*'
  f.exe = "/usr/bin/python3";
  EXPECT_TRUE(Matches("{exe: '/usr/bin/python?'}", f));
  EXPECT_TRUE(Matches("{exe: '/usr/bin/python[0-9]'}", f));
  EXPECT_TRUE(Matches("{exe: '/usr/*/python3'}", f));
  EXPECT_FALSE(Matches("{exe: '/usr/bin/python'}", f));
  EXPECT_FALSE(Matches("{exe: '/*'}", f));
  EXPECT_TRUE(Matches("{parent_exe: '/usr/sbin/*'}", Base()));
}

TEST(ExceptionMatchTest, ArgvRegexSearchesSpaceJoinedArgv) {
  ExceptionFacts f = Base();
  EXPECT_TRUE(Matches("{argv: 'nightly --target'}", f));  // across arguments
  EXPECT_TRUE(Matches("{argv: '^backup-nightly --target s3://bucket/'}", f));
  EXPECT_FALSE(Matches("{argv: '^--target'}", f));
  EXPECT_FALSE(Matches("{argv: 'S3://'}", f));  // case-sensitive
  f.argv.clear();
  EXPECT_FALSE(Matches("{argv: '.*'}", f));  // unknown argv never matches
}

TEST(ExceptionMatchTest, PortListAndRange) {
  ExceptionFacts f = Base();
  const std::vector<std::pair<uint32_t, bool>> cases = {{80, true},    {443, true},  {22, false},
                                                        {7999, false}, {8000, true}, {8100, true},
                                                        {8101, false}, {0, false}};
  for (auto [port, want] : cases) {
    f.port = port;
    EXPECT_EQ(Matches("{port: [80, 443, '8000-8100']}", f), want) << port;
  }
  f.port = 8050;
  EXPECT_TRUE(Matches("{port: 8000-8100}", f));
  EXPECT_FALSE(Matches("{port: [80, 443]}", f));
}

TEST(ExceptionMatchTest, CidrV4AndV6) {
  ExceptionFacts f = Base();
  auto remote = [&](const std::string& ip, absl::string_view match) {
    f.remote_ip = ip;
    return Matches(match, f);
  };
  EXPECT_TRUE(remote("172.31.255.255", "{remote: 172.16.0.0/12}"));
  EXPECT_FALSE(remote("172.32.0.0", "{remote: 172.16.0.0/12}"));
  EXPECT_TRUE(remote("10.1.2.3", "{remote: 10.1.2.3}"));  // bare address: /32
  EXPECT_FALSE(remote("10.1.2.4", "{remote: 10.1.2.3}"));
  EXPECT_TRUE(remote("192.168.1.1", "{remote: [10.0.0.0/8, 192.168.0.0/16]}"));
  EXPECT_TRUE(remote("2001:db8::1", "{remote: '2001:db8::/32'}"));
  EXPECT_TRUE(remote("2001:DB8:0:0::ff", "{remote: '2001:db8::/32'}"));
  EXPECT_FALSE(remote("2001:db9::1", "{remote: '2001:db8::/32'}"));
  EXPECT_TRUE(remote("fe80::1", "{remote: 'fe80::/10'}"));
  EXPECT_FALSE(remote("fec0::1", "{remote: 'fe80::/10'}"));
  // Families never mix, not even through v4-mapped addresses.
  EXPECT_FALSE(remote("10.1.2.3", "{remote: '::/0'}"));
  EXPECT_FALSE(remote("::ffff:10.1.2.3", "{remote: 10.0.0.0/8}"));
  EXPECT_FALSE(remote("2001:db8::1", "{remote: 0.0.0.0/0}"));
  EXPECT_FALSE(remote("", "{remote: 0.0.0.0/0}"));  // a listener has no remote
  EXPECT_FALSE(remote("not-an-ip", "{remote: 0.0.0.0/0}"));
}

TEST(ExceptionMatchTest, ContainerPrefixAndRule) {
  ExceptionFacts f = Base();
  EXPECT_TRUE(Matches("{container: 0123456789AB}", f));
  EXPECT_TRUE(Matches(absl::StrCat("{container: ", f.container_id, "}"), f));
  EXPECT_FALSE(Matches("{container: 123456789abc}", f));  // prefix, not substring
  f.container_id.clear();                                 // on the host
  EXPECT_FALSE(Matches("{container: 0123456789ab}", f));
  f = Base();
  for (const char* rule : {"first_network_use", "new_listener"}) {
    f.rule = rule;
    EXPECT_FALSE(Matches("{exe: '/usr/local/bin/*', rule: new_behavior}", f)) << rule;
    EXPECT_TRUE(Matches("{exe: '/usr/local/bin/*'}", f)) << rule;  // no rule: every rule...
  }
  f.rule = "suspicious_image_network";  // ...but the planted-binary rule, which must be named
  EXPECT_FALSE(Matches("{exe: '/usr/local/bin/*'}", f));
  EXPECT_TRUE(Matches("{exe: '/usr/local/bin/*', rule: suspicious_image_network}", f));
}

TEST(ExceptionMatchTest, ExpiredEntriesStopMatching) {
  const ExceptionSet set = MustParse(absl::StrCat(
      Doc("{port: 443}", "2026-06-02"),
      "  - {id: later, owner: b, reason: r, expires: '2026-06-01T14:00:00+02:00', match: "
      "{port: 443}}\n"));
  const absl::Time midnight = absl::FromCivil(absl::CivilDay(2026, 6, 2), absl::UTCTimeZone());
  ASSERT_EQ(set.size(), 2u);
  EXPECT_EQ(set.entries()[0].expires, midnight);  // a date ends at 00:00 UTC that day
  EXPECT_EQ(set.entries()[1].expires, kNow);      // 14:00+02:00 is 12:00 UTC
  EXPECT_EQ(set.Match(Base(), kNow - absl::Seconds(1)), &set.entries()[0]);  // first in file
  EXPECT_EQ(set.Match(Base(), kNow), &set.entries()[0]);
  EXPECT_TRUE(set.entries()[1].Expired(kNow));
  EXPECT_EQ(set.Match(Base(), midnight - absl::Seconds(1)), &set.entries()[0]);
  EXPECT_EQ(set.Match(Base(), midnight), nullptr);
  EXPECT_EQ(set.Expired(kNow).size(), 1u);
  EXPECT_EQ(set.Expired(midnight).size(), 2u);
}

TEST(ExceptionMatchTest, GeneratedIdsHashTheMatchOnly) {
  const ExceptionSet a = MustParse(Doc("{exe: /usr/bin/a, port: [443, 80]}"));
  const ExceptionSet renewed = MustParse(Doc("{port: [80, 443], exe: /usr/bin/a}", "2098-01-01"));
  const ExceptionSet other = MustParse(Doc("{exe: /usr/bin/b, port: [443, 80]}"));
  ASSERT_EQ(a.size(), 1u);
  EXPECT_THAT(a.entries()[0].id, StartsWith("auto-"));
  EXPECT_TRUE(a.entries()[0].id_generated);
  EXPECT_EQ(a.entries()[0].id, renewed.entries()[0].id);
  EXPECT_NE(a.entries()[0].id, other.entries()[0].id);
  EXPECT_EQ(a.Find(a.entries()[0].id), &a.entries()[0]);
  EXPECT_EQ(a.entries()[0].line, 2);
}

TEST(ExceptionMatchTest, ThousandEntriesMatchInMicroseconds) {
  std::string yaml = "exceptions:\n";
  for (int i = 0; i < 1000; ++i) {
    absl::StrAppend(&yaml, "  - {owner: o, reason: r, expires: 2099-01-01, match: {exe: '/opt/app",
                    i, "/bin/*', argv: '--mode=", i,
                    "( |$)', port: [80, '8000-8100'], remote: ", "10.", i % 256, ".0.0/16}}\n");
  }
  const ExceptionSet set = MustParse(yaml);
  ExceptionFacts f = Base();
  f.exe = "/opt/app999/bin/server";
  f.argv = {"server", "--mode=999"};
  f.port = 80;
  f.remote_ip = "10.231.1.1";
  ASSERT_NE(set.Match(f, kNow), nullptr);
  f.exe = "/opt/app1000/bin/server";  // the worst case: no entry matches
  const auto start = std::chrono::steady_clock::now();
  constexpr int kRounds = 2000;
  for (int i = 0; i < kRounds; ++i) ASSERT_EQ(set.Match(f, kNow), nullptr);
  const double us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() /
      kRounds;
  RecordProperty("match_1000_us", absl::StrCat(us));
  std::cout << "Match over 1000 entries: " << us << " us\n";
  EXPECT_LT(us, 500.0);  // generous: sanitizer builds are several times slower
}

// A valid entry (lines 1-7) with `extra` appended to its match from line 8.
// A valid file whose lines 2-5 are owner, reason, expires and match, with `from` replaced.
std::string Edit(absl::string_view from, absl::string_view to) {
  return absl::StrReplaceAll(
      "exceptions:\n  - owner: a\n    reason: r\n    expires: 2099-01-01\n    match: {port: 1}\n",
      {{from, to}});
}

TEST(ExceptionFileTest, BadFilesNameFileLineAndReason) {
  struct Case {
    std::string yaml;
    int line;
    std::string why;
  };
  const std::vector<Case> cases = {
      {"exceptions:\n  - owner: a\n   reason: r\n", 3, "YAML syntax error"},
      {"exceptions:\n  - owner: [a\n", 3, "YAML syntax error"},
      {"", 1, "empty file"},
      {"# only a comment\n", 1, "empty file"},
      {"exceptions: []\n---\nexceptions: []\n", 2, "more than one YAML document"},  // at its marker
      {",", 1, "empty file"},  // yaml-cpp's LoadAll never returned on this
      {"exceptoins: []\n", 1, "unknown key 'exceptoins'"},
      {"exceptions: {a: b}\n", 1, "expected a list"},
      {"exceptions:\n  - just a string\n", 2, "expected a map"},
      {Edit("reason: r", "reason: r\n    ownr: b"), 4, "unknown key 'ownr'"},
      {WithMatchLine("      exe_path: /usr/bin/y"), 8, "unknown key 'exe_path'"},
      {WithMatchLine("      \"ex\\x1b[2Je\": /x"), 8, "unknown key 'ex\\x1b[2Je'"},  // escaped
      {WithMatchLine("      exe: /usr/bin/y"), 8, "key 'exe' given twice (first at line 7)"},
      {Edit("owner: a\n    ", ""), 2, "missing required key 'owner'"},
      {Edit("reason: r\n    ", ""), 2, "missing required key 'reason'"},
      {Edit("expires: 2099-01-01\n    ", ""), 2, "missing required key 'expires'"},
      {Edit("\n    match: {port: 1}", ""), 2, "missing required key 'match'"},
      {Edit("owner: a", "owner: ''"), 2, "owner: empty value"},
      {Edit("owner: a", "owner: '  '"), 2, "owner: empty value"},
      {Edit("owner: a", "owner: [a, b]"), 2, "owner: expected a single value"},
      {Edit("owner: a", "id: 'a b'\n    owner: a"), 2, "id: 'a b' may only use"},
      {Edit("2099-01-01", "2027-02-30"), 4, "expires: bad date '2027-02-30'"},
      {Edit("2099-01-01", "tomorrow"), 4, "bad date 'tomorrow'"},
      {Edit("2099-01-01", "2027-3-1"), 4, "bad date"},
      {Edit("2099-01-01", "2027-03-01T10:00:00"), 4, "bad date"},  // no offset
      {Edit("{port: 1}", "{}"), 5, "match: needs at least one field"},
      {Edit(" {port: 1}", ""), 5, "match: needs at least one field"},
      {WithMatchLine("      argv: '(unclosed'"), 8, "match.argv: bad regex: missing )"},
      {WithMatchLine("      remote: 10.0.0.0/33"), 8,
       "bad CIDR '10.0.0.0/33': prefix length must be 0-32"},
      {WithMatchLine("      remote: 10.0.0.1/8"), 8, "host bits are set"},
      {WithMatchLine("      remote: banana"), 8, "bad CIDR 'banana'"},
      {WithMatchLine("      remote: '2001:db8::/129'"), 8, "prefix length must be 0-128"},
      {WithMatchLine("      remote:\n        - 10.0.0.0/8\n        - 300.1.1.1"), 10,
       "bad CIDR '300.1.1.1'"},
      {WithMatchLine("      remote: []"), 8, "match.remote: empty list"},
      {WithMatchLine("      port: 0"), 8, "bad port '0'"},
      {WithMatchLine("      port: 70000"), 8, "bad port '70000'"},
      {WithMatchLine("      port: 9000-8000"), 8, "bad port '9000-8000'"},
      {WithMatchLine("      port: [80, http]"), 8, "bad port 'http'"},
      {WithMatchLine("      port: -5"), 8, "bad port"},
      {WithMatchLine("      sha256: abc"), 8, "match.sha256: want 64 hex digits"},
      {WithMatchLine("      container: 0123456789"), 8, "at least 12 hex digits"},
      {WithMatchLine("      direction: out"), 8, "want outbound or inbound"},
      {WithMatchLine("      protocol: icmp"), 8, "want tcp or udp"},
      {WithMatchLine("      rule: new_behaviour"), 8, "unknown rule 'new_behaviour'"},
      {WithMatchLine("      parent_exe: cron"), 8, "not an absolute path glob"},
      {"exceptions:\n  - {id: x, owner: a, reason: r, expires: 2099-01-01, match: {port: 1}}\n"
       "  - {id: x, owner: b, reason: r, expires: 2099-01-01, match: {port: 2}}\n",
       3, "duplicate id 'x' (first at line 2)"},
      {"exceptions:\n  - {owner: a, reason: r, expires: 2099-01-01, match: {port: 1}}\n"
       "  - {owner: b, reason: s, expires: 2098-01-01, match: {port: 1}}\n",
       3, "duplicate exception: same match as the entry at line 2"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<ExceptionSet> s = ExceptionSet::Parse(c.yaml, "/etc/sockwatch/t\x1b.yaml");
    ASSERT_FALSE(s.ok()) << c.yaml;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Msg(s.status()),
                StartsWith(absl::StrCat("/etc/sockwatch/t\\x1b.yaml:", c.line, ": ")))
        << c.yaml;
    EXPECT_THAT(Msg(s.status()), HasSubstr(c.why)) << c.yaml;
    EXPECT_THAT(Msg(s.status()), Not(HasSubstr("\x1b")));  // safe to log as is
  }
}

TEST(ExceptionFileTest, AcceptsTheDocumentedFormat) {
  const ExceptionSet set = MustParse(R"(# reviewed 2026-05
exceptions:
  - id: backup-to-s3
    owner: alice@example.com
    reason: nightly backup job
    expires: 2027-03-01
    match:
      exe: /usr/local/bin/backup*
      sha256: 3A7BD3E2360A3D29EEA436FCFB7E44C735D117C42D1C1835420B6B9942DD4F1B
      argv: '--target s3://.*'
      parent_exe: /usr/sbin/cron
      container: 0123456789ab
      direction: outbound
      protocol: tcp
      port: [443, "8000-8100"]
      remote: [10.0.0.0/8, "2001:db8::/32"]
      rule: new_behavior
  - owner: bob
    reason: "dev web server"
    expires: 2026-12-31T23:59:59Z
    match: {exe: /usr/sbin/nginx, direction: inbound, port: 8080}
  - id: empty-ok
    owner: carol
    reason: r
    expires: 2027-01-01
    match: {remote: 192.168.1.7}
)");
  ASSERT_EQ(set.size(), 3u);
  const ExceptionEntry& e = set.entries()[0];
  EXPECT_EQ(e.id, "backup-to-s3");
  EXPECT_FALSE(e.id_generated);
  EXPECT_EQ(e.line, 3);
  EXPECT_EQ(e.owner, "alice@example.com");
  EXPECT_EQ(e.reason, "nightly backup job");
  EXPECT_EQ(e.match.sha256, kSha);
  EXPECT_EQ(e.match.ports.size(), 2u);
  EXPECT_EQ(e.match.remotes[1].text, "2001:db8::/32");
  EXPECT_EQ(set.entries()[1].line, 18);
  EXPECT_EQ(set.entries()[2].match.remotes[0].text, "192.168.1.7/32");
  EXPECT_EQ(set.Match(Base(), kNow), &e);
  EXPECT_EQ(MustParse("exceptions: []\n").size(), 0u);
}

using ExceptionReloadTest = ExceptionTempDirTest;

TEST_F(ExceptionReloadTest, FailedLoadKeepsTheOldSet) {
  const std::string path = Write("e.yaml", Doc("{port: 443}"));
  absl::StatusOr<ExceptionSet> loaded = ExceptionSet::Load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExceptionSet current = *std::move(loaded);
  // The SIGHUP pattern: replace only on success.
  auto reload = [&] {
    absl::StatusOr<ExceptionSet> next = ExceptionSet::Load(path);
    if (next.ok()) current = *std::move(next);
    return next.status();
  };
  Write("e.yaml", Doc("{port: 443, prot: tcp}"));
  EXPECT_THAT(Msg(reload()), HasSubstr(absl::StrCat(path, ":5: match: unknown key 'prot'")));
  EXPECT_NE(current.Match(Base(), kNow), nullptr);
  Write("e.yaml", Doc("{port: 80}"));
  EXPECT_TRUE(reload().ok());
  EXPECT_EQ(current.Match(Base(), kNow), nullptr);
  EXPECT_EQ(current.filename(), path);

  const absl::Status missing = ExceptionSet::Load(dir_ + "/nope.yaml").status();
  EXPECT_TRUE(absl::IsNotFound(missing));
  EXPECT_THAT(Msg(missing), HasSubstr("nope.yaml: No such file"));
  EXPECT_THAT(Msg(ExceptionSet::Load(dir_).status()), HasSubstr("not a regular file"));
}

}  // namespace
}  // namespace sockwatch

namespace sockwatch {
namespace {

TEST(ExceptionSuspiciousTest, OnlyAnEntryNamingTheRuleSilencesAPlantedBinary) {
  auto set = ExceptionSet::Parse(
      "exceptions:\n"
      "  - id: general\n    owner: a@x\n    reason: r\n    expires: 2099-01-01\n"
      "    match: {exe: /tmp/tool}\n"
      "  - id: explicit\n    owner: a@x\n    reason: r\n    expires: 2099-01-01\n"
      "    match: {exe: /tmp/lab, rule: suspicious_image_network}\n",
      "x.yaml");
  ASSERT_TRUE(set.ok()) << set.status();
  ExceptionFacts f;
  f.exe = "/tmp/tool";
  f.rule = "first_network_use";
  EXPECT_NE(set->Match(f, absl::Now()), nullptr);
  f.rule = "suspicious_image_network";
  EXPECT_EQ(set->Match(f, absl::Now()), nullptr);  // the general entry does not normalise it
  f.exe = "/tmp/lab";
  ASSERT_NE(set->Match(f, absl::Now()), nullptr);
  EXPECT_EQ(set->Match(f, absl::Now())->id, "explicit");
}

}  // namespace
}  // namespace sockwatch
