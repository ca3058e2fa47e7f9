#include "ops/isa.h"

#include <cstdlib>

namespace dsv3::ops {

std::string_view IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "?";
}

std::optional<Isa> IsaFromName(std::string_view name) {
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512})
    if (IsaName(isa) == name) return isa;
  return std::nullopt;
}

// __builtin_cpu_supports reads the table libgcc fills from cpuid at start-up; libgcc only reports
// the AVX/AVX-512 features when xgetbv says the OS saves the matching register state, so a CPU
// feature the kernel cannot use is reported as absent.
bool CpuSupports(Isa isa) {
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  switch (isa) {
    case Isa::kScalar:
      return true;
    case Isa::kAvx2:
      return avx2;
    case Isa::kAvx512:
      // The AVX-512 kernels also use the AVX2/F16C instructions on 256-bit halves.
      return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bf16");
  }
  return false;
}

std::vector<Isa> RunnableIsas() {
  std::vector<Isa> isas;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512})
    if (CpuSupports(isa)) isas.push_back(isa);
  return isas;
}

Isa BestIsa() {
  // The cap is read on every call rather than cached: callers pick the ISA once per model load,
  // and a cache would be global mutable state.
  Isa cap = Isa::kAvx512;
  if (const char* env = std::getenv("DSV3_ISA")) {
    if (auto named = IsaFromName(env)) cap = *named;
  }
  Isa best = Isa::kScalar;
  for (Isa isa : RunnableIsas())
    if (static_cast<int>(isa) <= static_cast<int>(cap)) best = isa;
  return best;
}

bool AvxVnniEnabled() {
  if (!CpuSupports(Isa::kAvx2) || !__builtin_cpu_supports("avxvnni")) return false;
  const char* env = std::getenv("DSV3_AVX_VNNI");
  return env == nullptr || std::string_view(env) != "0";
}

}  // namespace dsv3::ops
