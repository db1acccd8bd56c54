#include "agent/host.h"

#include "gtest/gtest.h"

namespace sockwatch {
namespace {

TEST(HostTest, FindsCgroup2OnHybridAndUnifiedHosts) {
  const char* hybrid =
      "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n"
      "cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n"
      "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
  EXPECT_EQ(*FindCgroup2Mount(hybrid), "/sys/fs/cgroup/unified");
  EXPECT_EQ(*FindCgroup2Mount("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n"), "/sys/fs/cgroup");
  auto none = FindCgroup2Mount("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n");
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("mount -t cgroup2"), std::string::npos);
}

TEST(HostTest, KernelVersions) {
  EXPECT_TRUE(KernelAtLeast("6.1.0-18-amd64", 5, 17));
  EXPECT_TRUE(KernelAtLeast("5.17.0", 5, 17));
  EXPECT_FALSE(KernelAtLeast("5.10.0-28-amd64", 5, 17));
  EXPECT_FALSE(KernelAtLeast("4.19.0", 5, 17));
  EXPECT_FALSE(KernelAtLeast("garbage", 5, 17));
  EXPECT_FALSE(KernelAtLeast("", 5, 17));
}

}  // namespace
}  // namespace sockwatch
