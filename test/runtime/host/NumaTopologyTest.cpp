#include "runtime/host/NumaTopology.h"
#include "test/runtime/ScratchDirectory.h"

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace moe::host {
namespace {

TEST(NumaTopologyTest, ParsesCpuLists) {
  auto cpus = parseCpuList("0-3,8,10-11\n");
  ASSERT_TRUE(cpus.ok()) << cpus.error().message();
  EXPECT_EQ(*cpus, (std::vector<int64_t>{0, 1, 2, 3, 8, 10, 11}));
  auto empty = parseCpuList("\n");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
  auto backwards = parseCpuList("5-2");
  ASSERT_FALSE(backwards.ok());
  EXPECT_EQ(backwards.error().message(),
            "cpulist \"5-2\": range 5-2 runs backwards");
  auto word = parseCpuList("0-x");
  ASSERT_FALSE(word.ok());
  EXPECT_EQ(word.error().message(),
            "cpulist \"0-x\": \"x\" is not a CPU number");
}

void write(const std::filesystem::path &path, const std::string &text) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

TEST(NumaTopologyTest, ReadsEveryNodeInOrder) {
  moe::testing::ScratchDirectory scratch;
  const std::filesystem::path &root = scratch.path();
  write(root / "node1" / "cpulist", "8-15\n");
  write(root / "node1" / "meminfo",
        "Node 1 MemTotal:       1024 kB\nNode 1 MemFree:        512 kB\n");
  write(root / "node0" / "cpulist", "0-7\n");
  write(root / "node0" / "meminfo", "Node 0 MemTotal:       2048 kB\n");
  write(root / "possible", "0-1\n");
  auto nodes = readNumaNodes(root.string());
  ASSERT_TRUE(nodes.ok()) << nodes.error().message();
  ASSERT_EQ(nodes->size(), 2u);
  EXPECT_EQ((*nodes)[0].node, 0);
  EXPECT_EQ((*nodes)[0].cpus.size(), 8u);
  EXPECT_EQ((*nodes)[0].memoryBytes, 2048 * 1024);
  EXPECT_EQ((*nodes)[1].cpus.front(), 8);
  EXPECT_EQ((*nodes)[1].memoryBytes, 1024 * 1024);

  write(root / "node1" / "cpulist", "8-x\n");
  auto broken = readNumaNodes(root.string());
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.error().message().find("node1/cpulist: cpulist \"8-x\""),
            std::string::npos)
      << broken.error().message();
}

TEST(NumaTopologyTest, AKernelWithoutNodesListsNone) {
  moe::testing::ScratchDirectory scratch;
  auto nodes = readNumaNodes(scratch.file("no-such-folder"));
  ASSERT_TRUE(nodes.ok());
  EXPECT_TRUE(nodes->empty());
}

} // namespace
} // namespace moe::host
