// Exception usage persistence, review findings and the review/check CLI.
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

using ExceptionUsageTest = ExceptionTempDirTest;

TEST_F(ExceptionUsageTest, PersistsAcrossReopen) {
  const ExceptionSet set = MustParse(
      "exceptions:\n  - {id: a, owner: o, reason: r, expires: 2099-01-01, match: {port: 1}}\n"
      "  - {id: b, owner: o, reason: r, expires: 2099-01-01, match: {port: 2}}\n");
  const absl::Time loaded = kNow - absl::Hours(24 * 40);
  {
    absl::StatusOr<std::unique_ptr<ExceptionUsage>> u = ExceptionUsage::Open(dir_);
    ASSERT_TRUE(u.ok()) << u.status();
    (*u)->RecordLoaded(set, loaded);
    (*u)->RecordMatch("a", kNow - absl::Hours(2));
    (*u)->RecordMatch("a", kNow - absl::Hours(1));
    (*u)->RecordMatch("a", kNow - absl::Hours(3));  // out of order: last stays the latest
    EXPECT_EQ((*u)->MatchCount("a"), 3u);           // visible before the flush
    ASSERT_TRUE((*u)->Flush().ok());
    ASSERT_TRUE((*u)->Flush().ok());  // nothing pending: no-op
  }
  {
    auto u = ExceptionUsage::Open(dir_);
    ASSERT_TRUE(u.ok()) << u.status();
    EXPECT_EQ((*u)->MatchCount("a"), 3u);
    EXPECT_EQ((*u)->LastMatched("a"), kNow - absl::Hours(1));
    EXPECT_EQ((*u)->FirstLoaded("a"), loaded);
    EXPECT_EQ((*u)->MatchCount("b"), 0u);
    EXPECT_EQ((*u)->LastMatched("b"), std::nullopt);
    EXPECT_EQ((*u)->FirstLoaded("b"), loaded);
    EXPECT_EQ((*u)->FirstLoaded("nope"), std::nullopt);
    (*u)->RecordLoaded(set, kNow);  // a later load does not move first_loaded
    (*u)->RecordMatch("b", kNow);
    ASSERT_TRUE((*u)->Flush().ok());
    (*u)->RecordMatch("b", kNow);  // never flushed: lost, as documented
  }
  auto u = ExceptionUsage::Open(dir_, /*read_only=*/true);
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ((*u)->FirstLoaded("a"), loaded);
  EXPECT_EQ((*u)->MatchCount("b"), 1u);
  EXPECT_EQ((*u)->LastMatched("b"), kNow);
  (*u)->RecordMatch("b", kNow);
  EXPECT_FALSE((*u)->Flush().ok());  // read-only never writes
  EXPECT_EQ((*u)->MatchCount("b"), 2u);

  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ + "/exceptions.db").c_str(), &db), SQLITE_OK);
  auto query = [&](const char* sql) {
    std::string out;
    sqlite3_exec(
        db, sql,
        [](void* o, int, char** v, char**) {
          *static_cast<std::string*>(o) += v[0] ? v[0] : "NULL";
          return 0;
        },
        &out, nullptr);
    return out;
  };
  EXPECT_EQ(query("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(query("SELECT version FROM schema_version"), "1");
  EXPECT_EQ(query("SELECT match_count FROM exception_usage WHERE id = 'a'"), "3");
  query("UPDATE schema_version SET version = 2");
  sqlite3_close(db);
  EXPECT_THAT(Msg(ExceptionUsage::Open(dir_).status()), HasSubstr("schema version 2"));
}

TEST_F(ExceptionUsageTest, MissingOrBadDatabase) {
  EXPECT_TRUE(absl::IsNotFound(ExceptionUsage::Open(dir_, /*read_only=*/true).status()));
  EXPECT_FALSE(ExceptionUsage::Open(dir_ + "/no/such/dir").ok());
  Write("exceptions.db", std::string(4096, 'x'));
  EXPECT_FALSE(ExceptionUsage::Open(dir_).ok());
  ExceptionUsage memory;  // not persisted: Flush has nowhere to write and succeeds
  memory.RecordMatch("a", kNow);
  EXPECT_TRUE(memory.Flush().ok());
  EXPECT_EQ(memory.MatchCount("a"), 1u);
}

std::vector<std::string> Kinds(const std::vector<ReviewFinding>& fs, absl::string_view id) {
  std::vector<std::string> out;
  for (const ReviewFinding& f : fs)
    if (f.entry_id == id) out.push_back(absl::StrCat(FindingKindName(f.kind), ": ", f.detail));
  return out;
}

TEST(ExceptionReviewTest, FindsEachKind) {
  using ::testing::ElementsAre;
  using ::testing::IsEmpty;
  const ExceptionSet set = MustParse(absl::StrCat(R"(exceptions:
  - {id: fine, owner: o, reason: r, expires: 2026-09-01, match: {exe: /usr/bin/a}}
  - {id: old, owner: o, reason: r, expires: 2026-05-01, match: {exe: /usr/bin/a, port: 1}}
  - {id: soon, owner: o, reason: r, expires: 2026-06-10, match: {exe: /usr/bin/a, port: 2}}
  - {id: stale, owner: o, reason: r, expires: 2026-09-01, match: {exe: /usr/bin/a, port: 3}}
  - {id: never, owner: o, reason: r, expires: 2026-09-01, match: {exe: /usr/bin/a, port: 4}}
  - {id: far, owner: o, reason: r, expires: 2027-07-01, match: {exe: /usr/bin/a, port: 6}}
  - {id: star, owner: o, reason: r, expires: 2026-09-01, match: {exe: '*'}}
  - {id: slash-star, owner: o, reason: r, expires: 2026-09-01, match: {exe: '/*', port: 443}}
  - {id: starstar, owner: o, reason: r, expires: 2026-09-01, match: {exe: '**', argv: '.*'}}
  - {id: star-sha, owner: o, reason: r, expires: 2026-09-01, match: {exe: '*', sha256: )",
                                                  kSha, R"(}}
  - {id: world, owner: o, reason: r, expires: 2026-09-01, match: {remote: 0.0.0.0/0, container: 0123456789ab}}
  - {id: world6, owner: o, reason: r, expires: 2026-09-01, match: {remote: '::/0', port: 53}}
  - {id: world-exe, owner: o, reason: r, expires: 2026-09-01, match: {exe: /usr/bin/a, remote: '0.0.0.0/0'}}
  - {id: any-argv, owner: o, reason: r, expires: 2026-09-01, match: {argv: 'x*'}}
  - {id: ports-only, owner: o, reason: r, expires: 2026-09-01, match: {direction: inbound, protocol: tcp, port: 22}}
  - {id: rule-only, owner: o, reason: r, expires: 2026-09-01, match: {rule: new_listener}}
  - {id: net-narrow, owner: o, reason: r, expires: 2026-09-01, match: {exe: '*', remote: 10.1.2.3, port: 443}}
)"));
  ExceptionUsage usage;
  usage.RecordLoaded(set, kNow - absl::Hours(24 * 60));
  for (const ExceptionEntry& e : set.entries())
    if (e.id != "stale" && e.id != "never") usage.RecordMatch(e.id, kNow);
  usage.RecordMatch("stale", kNow - absl::Hours(24 * 31));

  const std::vector<ReviewFinding> fs = Review(set, usage, kNow, absl::Hours(24 * 30));
  EXPECT_THAT(Kinds(fs, "fine"), IsEmpty());
  EXPECT_THAT(Kinds(fs, "old"), ElementsAre("expired: expired 2026-05-01 (31 days ago)"));
  EXPECT_THAT(Kinds(fs, "soon"), ElementsAre("expiring_soon: expires 2026-06-10 (in 8 days)"));
  EXPECT_THAT(Kinds(fs, "stale"),
              ElementsAre("unused: no match for 31 days (last 2026-05-01T12:00:00Z, 1 in all)"));
  EXPECT_THAT(Kinds(fs, "never"), ElementsAre("unused: never matched since loaded 60 days ago"));
  // Never loaded (no usage data at all): not judged.
  EXPECT_THAT(Review(MustParse(Doc("{exe: /a}", "2026-09-01")), ExceptionUsage(), kNow,
                     absl::Hours(24 * 30)),
              IsEmpty());
  EXPECT_THAT(Kinds(fs, "far"),
              ElementsAre("too_broad: expires 2027-07-01 (in 394 days): more than a year away"));
  EXPECT_THAT(Kinds(fs, "star"), ElementsAre(HasSubstr("exe glob '*' matches every program")));
  EXPECT_THAT(Kinds(fs, "slash-star"), ElementsAre(HasSubstr("exe glob '/*' matches every")));
  EXPECT_THAT(Kinds(fs, "starstar"), ElementsAre(HasSubstr("exe glob '**' matches every")));
  EXPECT_THAT(Kinds(fs, "star-sha"), IsEmpty());
  EXPECT_THAT(Kinds(fs, "world"), ElementsAre(HasSubstr("remote 0.0.0.0/0 covers nearly every")));
  EXPECT_THAT(Kinds(fs, "world6"), ElementsAre(HasSubstr("remote ::/0 covers")));
  EXPECT_THAT(Kinds(fs, "world-exe"), IsEmpty());
  EXPECT_THAT(Kinds(fs, "any-argv"), ElementsAre(HasSubstr("argv regex 'x*' matches every")));
  EXPECT_THAT(Kinds(fs, "ports-only"), ElementsAre(HasSubstr("matches any program")));
  EXPECT_THAT(Kinds(fs, "rule-only"), ElementsAre(HasSubstr("matches any program")));
  EXPECT_THAT(Kinds(fs, "net-narrow"), IsEmpty());
  ASSERT_FALSE(fs.empty());
  EXPECT_EQ(fs[0].entry_id, "old");
  EXPECT_EQ(fs[0].line, 3);
  EXPECT_EQ(fs[0].owner, "o");
}

struct CliResult {
  int code;
  std::string out, err;
};

CliResult Cli(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  const int code = ExceptionsMain(args, out, err);
  return {code, out.str(), err.str()};
}

using ExceptionCliTest = ExceptionTempDirTest;

TEST_F(ExceptionCliTest, CheckHelpAndUsageErrors) {
  const std::string good = Write("good.yaml", Doc("{port: 443}"));
  const std::string bad = Write("bad.yaml", WithMatchLine("      port: 99999"));
  EXPECT_EQ(Cli({"check", "--exceptions=" + good}).out, "ok: 1 entries\n");
  CliResult r = Cli({"check", "--exceptions", good});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "ok: 1 entries\n");
  r = Cli({"check", "--exceptions", bad});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_THAT(r.err, HasSubstr(bad + ":8: match.port: bad port '99999'"));
  EXPECT_EQ(Cli({"review", "--exceptions", bad}).code, 1);
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {},
           {"frobnicate"},
           {"check"},
           {"check", "--exceptions"},
           {"check", "--exceptions", "--json"},
           {"check", "--exceptions=" + good, "--json"},
           {"check", "--exceptions=" + good, "stray"},
           {"check", "--exceptions=" + good, "--exceptions=" + good},
           {"review", "--exceptions=" + good, "--bogus"},
           {"review", "--exceptions=" + good, "--unused-days=abc"},
           {"review", "--exceptions=" + good, "--unused-days", "0"},
           {"review", "--exceptions=" + good, "--json=yes"}}) {
    r = Cli(args);
    EXPECT_EQ(r.code, 2) << absl::StrJoin(args, " ");
    EXPECT_THAT(r.err, HasSubstr("Usage:")) << absl::StrJoin(args, " ");
    EXPECT_EQ(r.out, "");
  }
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"--help"}, {"help"}, {"review", "-h"}}) {
    r = Cli(args);
    EXPECT_EQ(r.code, 0);
    EXPECT_THAT(r.out, HasSubstr("Exit codes:"));
    EXPECT_THAT(r.out, HasSubstr("3  review: there are findings"));
  }
}

TEST_F(ExceptionCliTest, ReviewTableJsonAndEscaping) {
  const absl::Time now = absl::Now();
  auto day = [](absl::Time t) { return absl::FormatTime("%Y-%m-%d", t, absl::UTCTimeZone()); };
  const std::string path = Write(
      "e.yaml",
      absl::StrCat(
          "exceptions:\n  - id: hostile\n    owner: \"\\x1b[31mevil\"\n    reason: \"r\\x9b2J\"\n",
          "    expires: ", day(now - absl::Hours(240)), "\n    match: {exe: /usr/bin/a}\n",
          "  - {id: clean, owner: bob, reason: ok, expires: ", day(now + absl::Hours(2400)),
          ", match: {exe: /usr/bin/b}}\n"));
  const std::string state = dir_ + "/state";
  std::filesystem::create_directory(state);
  const std::vector<std::string> review = {"review", "--exceptions", path, "--state-dir", state};

  CliResult r = Cli(review);
  EXPECT_EQ(r.code, 3);
  EXPECT_THAT(r.err, HasSubstr("no usage data"));
  EXPECT_THAT(r.out, Not(HasSubstr("\x1b")));
  EXPECT_THAT(r.out, Not(HasSubstr("\xc2\x9b")));
  EXPECT_THAT(r.out, HasSubstr("\\x1b[31mevil"));
  std::vector<std::string> lines = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << r.out;
  EXPECT_THAT(lines[0], StartsWith("LINE  KIND"));
  EXPECT_THAT(lines[1], StartsWith("2     expired"));
  EXPECT_EQ(lines[0].find("OWNER"), lines[1].find("\\x1b[31mevil"));

  auto json = review;
  json.push_back("--json");
  r = Cli(json);
  EXPECT_EQ(r.code, 3);
  EXPECT_THAT(r.out, StartsWith("{\"kind\":\"expired\",\"id\":\"hostile\","));
  EXPECT_THAT(r.out, HasSubstr(absl::StrCat("\"file\":\"", path, "\",\"line\":2,")));
  EXPECT_THAT(r.out, HasSubstr("\"owner\":\"\\u001b[31mevil\",\"reason\":\"r\\u009b2J\""));
  EXPECT_THAT(r.out, Not(HasSubstr("\x1b")));
  EXPECT_EQ(r.out.back(), '\n');

  // Usage written by "the agent" 40 days ago, never matched since.
  {
    absl::StatusOr<ExceptionSet> set = ExceptionSet::Load(path);
    ASSERT_TRUE(set.ok());
    auto usage = ExceptionUsage::Open(state);
    ASSERT_TRUE(usage.ok()) << usage.status();
    (*usage)->RecordLoaded(*set, now - absl::Hours(24 * 40));
    ASSERT_TRUE((*usage)->Flush().ok());
  }
  r = Cli(review);
  EXPECT_EQ(r.err, "");
  EXPECT_THAT(r.out, HasSubstr("7     unused   clean    bob"));
  EXPECT_THAT(r.out, HasSubstr("never matched since loaded 40 days ago"));
  auto patient = review;
  patient.push_back("--unused-days=60");
  EXPECT_THAT(Cli(patient).out, Not(HasSubstr("unused")));

  const std::string clean = Write(
      "clean.yaml", absl::StrCat("exceptions:\n  - {id: clean, owner: bob, reason: ok, expires: ",
                                 day(now + absl::Hours(2400)), ", match: {exe: /usr/bin/b}}\n"));
  r = Cli({"review", "--exceptions=" + clean, "--state-dir=" + state, "--unused-days=60"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "no findings in 1 entries\n");
  r = Cli(
      {"review", "--exceptions=" + clean, "--state-dir=" + state, "--unused-days=60", "--json"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "");
}

}  // namespace
}  // namespace sockwatch
