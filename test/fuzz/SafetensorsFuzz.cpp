// safetensors bytes: the header parser must reject what does not describe
// the data it maps, and every tensor it accepts must lie inside the file.
#include "runtime/weights/Safetensors.h"
#include "test/fuzz/MemoryFile.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  moe::fuzz::MemoryFile file(data, size);
  auto opened = moe::SafetensorsFile::open(file.path());
  if (!opened.ok())
    return 0;
  // Touch each tensor's first and last byte: ASan reports a view that
  // reaches past the mapping.
  volatile uint8_t sink = 0;
  for (const auto &[name, view] : (*opened)->tensors()) {
    int64_t bytes = view.numBytes();
    if (bytes == 0)
      continue;
    const auto *first = static_cast<const uint8_t *>(view.data);
    sink = sink ^ first[0] ^ first[bytes - 1];
  }
  return 0;
}
