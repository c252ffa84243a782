// A prompts file (moe lines or OpenAI Batch API lines): every line is a
// request or a request carrying its error; nothing stops the reader but the
// end of the file.
#include "runtime/io/Jsonl.h"
#include "test/fuzz/MemoryFile.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  moe::fuzz::MemoryFile file(data, size);
  auto reader = moe::PromptReader::open(file.path(), nullptr,
                                        /*defaultMaxNewTokens=*/16);
  if (!reader.ok())
    return 0;
  for (int64_t index = 0;; ++index) {
    auto request = reader->next();
    if (!request.ok() || !*request)
      break;
    (void)reader->takeEcho(index);
  }
  return 0;
}
