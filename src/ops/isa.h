// Instruction-set variants of the kernels. The build compiles every variant it can; the best one
// the CPU supports is chosen at run time, and tests force each variant against the scalar twin.
#pragma once

#include <optional>
#include <string_view>
#include <vector>

namespace dsv3::ops {

enum class Isa { kScalar, kAvx2, kAvx512 };

std::string_view IsaName(Isa isa);
// "scalar" | "avx2" | "avx512" (the names IsaName gives); anything else gives nullopt.
std::optional<Isa> IsaFromName(std::string_view name);
bool CpuSupports(Isa isa);
// The best variant this CPU runs; DSV3_ISA=scalar|avx2|avx512 in the environment caps it (an
// unknown value is ignored).
Isa BestIsa();
// Every variant compiled into this build that the CPU can run (scalar first).
std::vector<Isa> RunnableIsas();
// Whether Isa::kAvx2's int8 kernels use AVX-VNNI (vpdpbusd on ymm): the CPU has it (with AVX2)
// and DSV3_AVX_VNNI=0 is not set in the environment (read on every call, as DSV3_ISA is; tests
// run the int8 suites both ways).
bool AvxVnniEnabled();

}  // namespace dsv3::ops
