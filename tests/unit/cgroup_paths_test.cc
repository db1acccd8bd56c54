#include "agent/identity.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace sockwatch {
namespace {

// ---- Containers -----------------------------------------------------------

TEST(IdentityContainerTest, Runtimes) {
  const std::string id(64, 'a');
  const std::string id2 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  EXPECT_EQ(ContainerIdFromCgroupPath("/docker/" + id), id);
  EXPECT_EQ(ContainerIdFromCgroupPath("/system.slice/docker-" + id + ".scope"), id);
  EXPECT_EQ(ContainerIdFromCgroupPath(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c_3d.slice/"
                "cri-containerd-" +
                id2 + ".scope"),
            id2);
  EXPECT_EQ(ContainerIdFromCgroupPath("/kubepods/besteffort/pod1b2c-3d4e/" + id2), id2);
  EXPECT_EQ(ContainerIdFromCgroupPath("/kubepods/burstable/pod1b2c-3d4e/0123456789ab"),
            "0123456789ab");
  EXPECT_EQ(ContainerIdFromCgroupPath("/kubepods.slice/kubepods-pod1.slice/crio-" + id + ".scope"),
            id);
  EXPECT_EQ(ContainerIdFromCgroupPath("/machine.slice/libpod-" + id2 + ".scope"), id2);
  EXPECT_EQ(ContainerIdFromCgroupPath("/machine.slice/libpod-" + id2 + ".scope/container"), id2);
  EXPECT_EQ(ContainerIdFromCgroupPath("/user.slice/user-1000.slice/user@1000.service/user.slice/"
                                      "libpod-" +
                                      id + ".scope/container"),
            id);
  EXPECT_EQ(ContainerIdFromCgroupPath("/docker/" + std::string(64, 'A')), std::string(64, 'a'));
  EXPECT_EQ(ContainerIdFromCgroupPath("/lxc.payload.web1"), "web1");
  EXPECT_EQ(ContainerIdFromCgroupPath("/lxc.payload.web1/system.slice/cron.service"), "web1");
  EXPECT_EQ(ContainerIdFromCgroupPath("/lxc/legacy1"), "legacy1");
  // Innermost wins: docker inside an lxc container.
  EXPECT_EQ(ContainerIdFromCgroupPath("/lxc.payload.web1/system.slice/docker-" + id + ".scope"),
            id);
}

TEST(IdentityContainerTest, HostPaths) {
  const std::string id(64, 'b');
  for (const std::string& path :
       {std::string("/user.slice/user-1000.slice/session-2.scope"),
        std::string("/system.slice/sshd.service"), std::string("/system.slice/docker.service"),
        std::string("/"), std::string(""), std::string("/init.scope"),
        "/system.slice/crio-conmon-" + id + ".scope",
        "/machine.slice/libpod-conmon-" + id + ".scope", std::string("/lxc.monitor.web1"),
        std::string("/docker/abc"), std::string("/docker/0123456789ab-not-hex"),
        std::string("/process_api/d7a34b0b128e3fa88d196f846bde73fb"),
        std::string("/system.slice/docker-1234.scope")})
    EXPECT_EQ(ContainerIdFromCgroupPath(path), "") << path;
}

// ---- cgroup paths ---------------------------------------------------------

std::string OwnCgroupPath() {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line))
    if (absl::StartsWith(line, "0::")) return line.substr(3);
  return "";
}

uint64_t InodeOf(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

class IdentityCgroupPathsTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    mount_ = CgroupPaths::FindMount();
    if (mount_.empty() || OwnCgroupPath().empty()) GTEST_SKIP() << "no cgroup2 here";
  }
  std::string mount_;
};

TEST_P(IdentityCgroupPathsTest, ResolvesOwnAndChildCgroups) {
  const std::string own = OwnCgroupPath();
  const std::string own_dir = mount_ + (own == "/" ? "" : own);
  // A child made before the walk, so walk mode sees it too; removed at the end.
  const std::string child = absl::StrCat(own == "/" ? "" : own, "/sw-id-test-", getpid());
  const bool made = mkdir((mount_ + child).c_str(), 0755) == 0 &&
                    mkdir((mount_ + child + "/sub").c_str(), 0755) == 0;

  CgroupPaths paths(mount_, {.use_handles = GetParam()});
  if (GetParam()) {
    EXPECT_TRUE(paths.using_handles()) << "kernfs handles should work as root";
  }
  EXPECT_EQ(paths.Resolve(InodeOf(own_dir)), own);
  EXPECT_EQ(paths.Resolve(InodeOf(mount_)), "/");
  if (made) {
    EXPECT_EQ(paths.Resolve(InodeOf(mount_ + child + "/sub")), child + "/sub");
    EXPECT_EQ(paths.Resolve(InodeOf(mount_ + child)), child);
  }
  rmdir((mount_ + child + "/sub").c_str());
  rmdir((mount_ + child).c_str());
  EXPECT_EQ(paths.Resolve(0xFFFFFFFFFFFFull), "");
  EXPECT_EQ(paths.Resolve(InodeOf(own_dir)), own);  // cached
}

TEST_P(IdentityCgroupPathsTest, BoundedCache) {
  std::vector<std::string> made;
  for (int i = 0; i < 4; ++i) {
    const std::string dir = absl::StrCat(mount_, "/sw-id-bound-", getpid(), "-", i);
    if (mkdir(dir.c_str(), 0755) == 0) made.push_back(dir);
  }
  if (made.size() < 4) GTEST_SKIP() << "cannot create cgroups";
  CgroupPaths paths(
      mount_,
      {.max_entries = 2, .use_handles = GetParam(), .rewalk_interval = absl::ZeroDuration()});
  for (const std::string& dir : made) {
    EXPECT_EQ(paths.Resolve(InodeOf(dir)), dir.substr(mount_.size()));
    EXPECT_LE(paths.size(), 2u);
  }
  EXPECT_GT(paths.cache_clears(), 0u);
  for (const std::string& dir : made) rmdir(dir.c_str());
}

INSTANTIATE_TEST_SUITE_P(Identity, IdentityCgroupPathsTest, ::testing::Bool());

TEST(IdentityCgroupMountTest, FindMountUnescapes) {
  const std::string file = ::testing::TempDir() + "/sw-mounts";
  std::ofstream(file) << "proc /proc proc rw 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n"
                         "none /my\\040cg cgroup2 rw 0 0\n";
  EXPECT_EQ(CgroupPaths::FindMount(file), "/my cg");
  EXPECT_EQ(CgroupPaths::FindMount("/nonexistent"), "");
  unlink(file.c_str());
  CgroupPaths broken("/nonexistent/cgroup");
  EXPECT_FALSE(broken.using_handles());
  EXPECT_EQ(broken.Resolve(1), "");
}

}  // namespace
}  // namespace sockwatch
