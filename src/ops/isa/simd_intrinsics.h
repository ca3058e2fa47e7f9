// <immintrin.h> for the ISA kernel files. GCC 12's intrinsics start many instructions from
// _mm*_undefined_*() (`__m512 __Y = __Y;`), which -Wmaybe-uninitialized reports at the header's
// line once inlined, and -Werror turns into a build failure (a known GCC 12 false positive).
// The suppression is scoped to the header's lines: diagnostics in our own code still fire.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include <cstdint>

namespace dsv3::ops {

// Prefetches (into all cache levels) the line holding the byte `offset` bytes after `base`. The
// address is formed as an integer: it may lie past the end of the array being streamed (the
// prefetch then fetches whatever is there, or nothing: prefetches never fault), where pointer
// arithmetic would be undefined behaviour.
inline void PrefetchAt(const void* base, int64_t offset) {
  _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(base) +
                                             static_cast<uintptr_t>(offset)),
               _MM_HINT_T0);
}

// PrefetchAt into the L2 and L3 only (the T1 hint), for streams the L1 need not hold ahead.
inline void PrefetchL2At(const void* base, int64_t offset) {
  _mm_prefetch(reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(base) +
                                             static_cast<uintptr_t>(offset)),
               _MM_HINT_T1);
}

#ifdef __AVX512F__
// acc + a * x[0] in every lane, the broadcast folded into the multiply-add (vfmadd231ps
// m32{1to16}). Written with _mm512_set1_ps, GCC gives the value one vbroadcastss of its own for
// all its uses, and on Zen 4 that takes a vector pipe's slot beside the FMAs and decoding
// shifts; folded, the load port broadcasts it.
inline __m512 FmaBroadcast(__m512 a, const float* x, __m512 acc) {
  __asm__("vfmadd231ps %1%{1to16%}, %2, %0" : "+v"(acc) : "m"(*x), "v"(a));
  return acc;
}

// vpdpbusd of unsigned bytes u with the 4 signed bytes at x broadcast to every dword, the
// broadcast folded into the instruction (m32{1to16}) as FmaBroadcast folds its.
inline __m512i DpbusdBroadcast(__m512i acc, __m512i u, const void* x) {
  __asm__("vpdpbusd %1%{1to16%}, %2, %0"
          : "+v"(acc)
          : "m"(*static_cast<const int32_t*>(x)), "v"(u));
  return acc;
}
#endif

}  // namespace dsv3::ops
