// Large read-mostly buffers (weights read into memory, the bandwidth probe's buffer) backed by
// transparent huge pages where the kernel offers them (THP "always" or "madvise").
//
// Streaming gigabytes of weights through 4 KiB pages costs a TLB miss, and a page walk, every
// 4 KiB; the packed prefill kernels read 16 rows a row length apart at a time, so 16 walks are in
// flight at once. With 2 MiB pages the walks all but vanish. Where THP is off the advice is
// ignored and the buffer is ordinary memory: behaviour never depends on it, only speed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace dsv3 {

struct LargeBufferDeleter {
  size_t bytes = 0;
  void operator()(uint8_t* p) const;
};
using LargeBuffer = std::unique_ptr<uint8_t, LargeBufferDeleter>;

// `bytes` bytes (rounded up to a multiple of 2 MiB, at least one), 2 MiB aligned, uninitialised,
// with MADV_HUGEPAGE advice. nullptr when the memory cannot be mapped.
LargeBuffer AllocateLargeBuffer(size_t bytes);

// The mapped size AllocateLargeBuffer(bytes) gives (what its deleter unmaps).
size_t LargeBufferBytes(size_t bytes);

}  // namespace dsv3
