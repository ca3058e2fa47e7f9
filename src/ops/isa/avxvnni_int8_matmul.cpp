// The AVX2 int8 kernels with AVX-VNNI's vpdpbusd on ymm (ops/isa/avx2_int8_kernels.h); compiled
// with -mavxvnni, reached only where the CPU has it (ops/isa.h, AvxVnniEnabled).
#define DSV3_INT8_NAMESPACE avxvnni
#define DSV3_INT8_VNNI true
#include "ops/isa/avx2_int8_kernels.h"
