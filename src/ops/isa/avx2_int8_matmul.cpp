// The AVX2 int8 kernels with vpmaddubsw (ops/isa/avx2_int8_kernels.h).
#define DSV3_INT8_NAMESPACE avx2
#define DSV3_INT8_VNNI false
#include "ops/isa/avx2_int8_kernels.h"
