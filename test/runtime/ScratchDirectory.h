// A directory of the running test's own. ctest runs the tests of one binary
// side by side, each in its own process, so a file at a fixed name in the
// shared temporary directory is rewritten by one test while another reads it.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include <unistd.h>

namespace moe::testing {

/// A fresh directory named by the test and the process, removed afterwards.
class ScratchDirectory {
public:
  ScratchDirectory() {
    const ::testing::TestInfo *test =
        ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::path(::testing::TempDir()) /
            ("moe-" + std::string(test->test_suite_name()) + "-" +
             test->name() + "-" + std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDirectory() { std::filesystem::remove_all(path_); }
  ScratchDirectory(const ScratchDirectory &) = delete;
  ScratchDirectory &operator=(const ScratchDirectory &) = delete;

  const std::filesystem::path &path() const { return path_; }
  std::string file(const std::string &name) const {
    return (path_ / name).string();
  }

private:
  std::filesystem::path path_;
};

} // namespace moe::testing
