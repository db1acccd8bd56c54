#include "agent/identity.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

extern char** environ;

namespace sockwatch {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr char kAbcSha[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

class IdentitySha256Test : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/sw-sha-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = std::filesystem::canonical(tmpl);  // as the kernel names it
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& content) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
    return path;
  }
  std::string dir_;
};

TEST_F(IdentitySha256Test, Sha256File) {
  EXPECT_EQ(*Sha256Cache::Sha256File(Write("abc", "abc")), kAbcSha);
  EXPECT_EQ(*Sha256Cache::Sha256File(Write("empty", "")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Cache::Sha256File(dir_ + "/missing").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(IdentitySha256Test, HashesOffThePathAndTracksPaths) {
  Sha256Cache cache;
  const std::string a = Write("a", "abc");
  EXPECT_EQ(cache.Lookup(0, a), std::nullopt);
  ASSERT_TRUE(cache.WaitIdle(absl::Seconds(10)));
  EXPECT_EQ(cache.Lookup(0, a), kAbcSha);
  // A process that is gone falls back to the path.
  EXPECT_EQ(cache.Lookup(0x7ffffff0, a), kAbcSha);

  Write("a", "abcd");  // new size and mtime: new key, new digest
  EXPECT_EQ(cache.Lookup(0, a), std::nullopt);
  ASSERT_TRUE(cache.WaitIdle(absl::Seconds(10)));
  const std::string abcd = *Sha256Cache::Sha256File(a);
  EXPECT_EQ(cache.Lookup(0, a), abcd);
  EXPECT_EQ(cache.PreviousShaForPath(a, abcd), kAbcSha);
  EXPECT_EQ(cache.PreviousShaForPath(a, "other"), abcd);
  EXPECT_EQ(cache.PreviousShaForPath(dir_ + "/never", abcd), std::nullopt);

  const std::string b = Write("b", "abcd");  // same bytes, new path
  cache.Lookup(0, b);
  ASSERT_TRUE(cache.WaitIdle(absl::Seconds(10)));
  EXPECT_EQ(cache.Lookup(0, b), abcd);
  EXPECT_THAT(cache.PathsWithSha(abcd), ElementsAre(a, b));
  EXPECT_THAT(cache.PathsWithSha(kAbcSha), ElementsAre(a));
  EXPECT_EQ(cache.PreviousShaForPath(b, abcd), std::nullopt);
  EXPECT_THAT(cache.PathsWithSha("nope"), IsEmpty());

  // Not regular files: nothing to hash, nothing queued.
  EXPECT_EQ(cache.Lookup(0, dir_), std::nullopt);
  EXPECT_EQ(cache.Lookup(0, "/dev/null"), std::nullopt);
  EXPECT_EQ(cache.Lookup(0, dir_ + "/missing"), std::nullopt);
  ASSERT_TRUE(cache.WaitIdle(absl::Seconds(10)));
  EXPECT_EQ(cache.read_errors(), 0u);
  EXPECT_EQ(cache.size(), 3u);
}

// Runs path (argv[0] = path, argv[1] = "30"); posix_spawn returns after the exec.
pid_t Spawn(const std::string& path) {
  pid_t pid = 0;
  std::string arg0 = path, arg1 = "30";
  char* argv[] = {arg0.data(), arg1.data(), nullptr};
  return posix_spawn(&pid, path.c_str(), nullptr, nullptr, argv, environ) == 0 ? pid : -1;
}

TEST_F(IdentitySha256Test, DeletedAndMemfdBinariesHashWhileRunning) {
  const std::string sleep_sha = *Sha256Cache::Sha256File("/bin/sleep");
  const std::string copy = dir_ + "/sleep";
  std::filesystem::copy_file("/bin/sleep", copy);
  chmod(copy.c_str(), 0755);
  const pid_t pid = Spawn(copy);
  ASSERT_GT(pid, 0);
  ASSERT_EQ(unlink(copy.c_str()), 0);

  // A memfd image: exec'd through /proc/self/fd, which the child inherits.
  const int mfd = memfd_create("sw-id-test", 0);
  ASSERT_GE(mfd, 0);
  {
    std::ifstream in("/bin/sleep", std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    ASSERT_EQ(write(mfd, bytes.str().data(), bytes.str().size()),
              static_cast<ssize_t>(bytes.str().size()));
  }
  const pid_t mpid = Spawn(absl::StrCat("/proc/self/fd/", mfd));
  close(mfd);
  ASSERT_GT(mpid, 0);

  Sha256Cache cache;
  EXPECT_EQ(cache.Lookup(pid, copy), std::nullopt);
  EXPECT_EQ(cache.Lookup(mpid, "/memfd:sw-id-test (deleted)"), std::nullopt);
  ASSERT_TRUE(cache.WaitIdle(absl::Seconds(10)));
  EXPECT_EQ(cache.Lookup(pid, copy), sleep_sha);
  EXPECT_EQ(cache.Lookup(mpid, "/memfd:sw-id-test (deleted)"), sleep_sha);
  EXPECT_THAT(cache.PathsWithSha(sleep_sha), ElementsAre(copy, "/memfd:sw-id-test (deleted)"));
  // The pid no longer runs the asked-for exe (it exec'd since): the path is hashed.
  const std::string other = Write("other", "abc");
  EXPECT_EQ(cache.Lookup(pid, other), std::nullopt);
  ASSERT_TRUE(cache.WaitIdle(absl::Seconds(10)));
  EXPECT_EQ(cache.Lookup(pid, other), kAbcSha);
  for (pid_t p : {pid, mpid}) {
    kill(p, SIGKILL);
    waitpid(p, nullptr, 0);
  }
  // Gone, and no path to fall back to.
  EXPECT_EQ(cache.Lookup(pid, copy), std::nullopt);
}

TEST_F(IdentitySha256Test, BoundedCacheAndQueue) {
  Sha256Cache cache({.max_entries = 2, .max_queue = 2});
  cache.SetPausedForTest(true);
  std::vector<std::string> files;
  for (int i = 0; i < 4; ++i) files.push_back(Write(absl::StrCat("f", i), absl::StrCat("data", i)));
  for (const std::string& f : files) EXPECT_EQ(cache.Lookup(0, f), std::nullopt);
  EXPECT_EQ(cache.queue_drops(), 2u);
  cache.SetPausedForTest(false);
  ASSERT_TRUE(cache.WaitIdle(absl::Seconds(10)));
  EXPECT_TRUE(cache.Lookup(0, files[0]).has_value());
  EXPECT_TRUE(cache.Lookup(0, files[1]).has_value());
  // Dropped ones queue again on their next sighting; the LRU keeps two.
  for (const std::string& f : {files[2], files[3]}) EXPECT_EQ(cache.Lookup(0, f), std::nullopt);
  ASSERT_TRUE(cache.WaitIdle(absl::Seconds(10)));
  EXPECT_EQ(cache.Lookup(0, files[3]), *Sha256Cache::Sha256File(files[3]));
  EXPECT_LE(cache.size(), 2u);
  EXPECT_GE(cache.evictions(), 2u);
}

TEST_F(IdentitySha256Test, ReadErrorsAreRememberedBriefly) {
  Sha256Cache cache({.error_ttl = absl::Milliseconds(200)});
  const std::string f = Write("f", "abc");
  struct stat before;
  ASSERT_EQ(stat(f.c_str(), &before), 0);
  cache.SetPausedForTest(true);
  EXPECT_EQ(cache.Lookup(0, f), std::nullopt);
  std::ofstream(f, std::ios::app) << "more";  // the queued file is no longer there as keyed
  cache.SetPausedForTest(false);
  ASSERT_TRUE(cache.WaitIdle(absl::Seconds(10)));
  EXPECT_EQ(cache.read_errors(), 1u);

  // Put the keyed file back (same size and mtime): the error is remembered, not retried.
  ASSERT_EQ(truncate(f.c_str(), 3), 0);
  const struct timespec times[2] = {before.st_atim, before.st_mtim};
  ASSERT_EQ(utimensat(AT_FDCWD, f.c_str(), times, 0), 0);
  EXPECT_EQ(cache.Lookup(0, f), std::nullopt);
  ASSERT_TRUE(cache.WaitIdle(absl::Seconds(10)));
  EXPECT_EQ(cache.Lookup(0, f), std::nullopt);
  EXPECT_EQ(cache.read_errors(), 1u);

  absl::SleepFor(absl::Milliseconds(250));
  EXPECT_EQ(cache.Lookup(0, f), std::nullopt);  // retried after the TTL
  ASSERT_TRUE(cache.WaitIdle(absl::Seconds(10)));
  EXPECT_EQ(cache.Lookup(0, f), kAbcSha);
}

TEST_F(IdentitySha256Test, IndexIsBounded) {
  Sha256Cache cache({.max_entries = 2});
  for (int i = 0; i < 5; ++i) {
    const std::string f = Write(absl::StrCat("g", i), absl::StrCat("x", i));
    cache.Lookup(0, f);
    ASSERT_TRUE(cache.WaitIdle(absl::Seconds(10)));
  }
  EXPECT_GT(cache.index_resets(), 0u);
  EXPECT_LE(cache.size(), 2u);
}

}  // namespace
}  // namespace sockwatch
