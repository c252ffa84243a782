// The fuzz input as a file (the readers under test take paths): an
// anonymous in-memory file, reached through /proc/self/fd.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace moe::fuzz {

class MemoryFile {
public:
  MemoryFile(const uint8_t *data, size_t size)
      : fd_(memfd_create("moe-fuzz", 0)) {
    for (size_t written = 0; fd_ >= 0 && written < size;) {
      ssize_t n = write(fd_, data + written, size - written);
      if (n <= 0)
        break;
      written += size_t(n);
    }
  }
  ~MemoryFile() {
    if (fd_ >= 0)
      close(fd_);
  }
  MemoryFile(const MemoryFile &) = delete;
  MemoryFile &operator=(const MemoryFile &) = delete;

  std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }

private:
  int fd_;
};

} // namespace moe::fuzz
