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
