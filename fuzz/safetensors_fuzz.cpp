// libFuzzer entry point for the safetensors parser (not built by default):
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
//     fuzz/safetensors_fuzz.cpp src/io/*.cpp src/util/dtype.cpp -lfmt -o safetensors_fuzz
// Any input must give either a file whose tensors all lie inside it, or an error; never a crash.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  char path[] = "/tmp/safetensors_fuzz_XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return 0;
  size_t written = 0;
  while (written < size) {
    const ssize_t n = write(fd, data + written, size - written);
    if (n <= 0) break;
    written += static_cast<size_t>(n);
  }
  close(fd);
  if (written == size) {
    for (auto mode : {dsv3::io::LoadMode::kMmap, dsv3::io::LoadMode::kRead}) {
      auto file = dsv3::io::SafetensorsFile::Open(path, mode);
      if (!file.ok()) continue;
      // Touch every byte so that ASan catches a tensor reaching outside its buffer.
      unsigned sum = 0;
      for (const auto& tensor : (*file)->tensors()) {
        if ((*file)->Find(tensor.name) != &tensor) abort();
        for (size_t i = 0; i < tensor.nbytes; ++i) sum += tensor.data[i];
      }
      volatile unsigned sink = sum;  // keeps the reads from being optimised away
      (void)sink;
    }
  }
  unlink(path);
  return 0;
}
