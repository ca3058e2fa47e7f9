// `dsv3 quantize`: converts any loadable model directory into another weight format, written in
// the Hugging Face layout (DESIGN.md §4): the linear weights in the target format, with their
// scales as "<name>_scale_inv", and a config.json whose quantization_config says so.
//
// What is converted: every 2-D "*.weight" matrix the forward pass multiplies by, except the
// embeddings, the router gate and the output heads (lm_head and the MTP shared_head.head). Those,
// the norms and e_score_correction_bias stay at >= BF16: F32 tensors stay F32, others become BF16.
// --type f32 makes every tensor F32; --type bf16 every tensor BF16 except e_score_correction_bias
// (F32, as in the official checkpoints). The output heads get their own type (lm_head_type):
// by default q8_0 in q8_0 and q4_0 models (as llama.cpp keeps an 8-bit-or-better output matrix:
// the head is a quarter of a small model's decode bytes in BF16), kept otherwise.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "util/status.h"

namespace dsv3 {

enum class QuantType { kF32, kBF16, kFp8, kQ8_0, kQ4_0 };

// "f32" | "bf16" | "fp8" | "q8_0" | "q4_0"; errors name the accepted values.
Result<QuantType> ParseQuantType(const std::string& name);
// The name ParseQuantType accepts: "f32", "bf16", "fp8", "q8_0", "q4_0".
const char* QuantTypeName(QuantType type);
inline constexpr QuantType kAllQuantTypes[] = {QuantType::kF32, QuantType::kBF16, QuantType::kFp8,
                                               QuantType::kQ8_0, QuantType::kQ4_0};

// What the output heads become when --type is `type` and no --lm-head-type is given: q8_0 for
// q8_0 and q4_0; otherwise nullopt, kept like the embeddings (BF16 in fp8 models, as in
// DeepSeek's checkpoints).
std::optional<QuantType> DefaultLmHeadType(QuantType type);

struct QuantizeOptions {
  QuantType type = QuantType::kQ8_0;
  // The output heads' format (nullopt: DefaultLmHeadType(type)). f32 and bf16 go with any type;
  // otherwise it must share the model's quantization_config: fp8 only in fp8 models, q8_0 / q4_0
  // only in q8_0 / q4_0 models.
  std::optional<QuantType> lm_head_type;
  // Output files hold at most about this many bytes each (model-0000i-of-0000n when more).
  int64_t shard_bytes = int64_t{4} << 30;
  // Called after each tensor: (tensors done, tensors total).
  std::function<void(int64_t, int64_t)> progress;
};

// Reads the model in in_dir (any format dsv3 loads) and writes the converted model to out_dir,
// copying tokenizer.json / tokenizer_config.json / generation_config.json when present.
Status QuantizeModel(const std::string& in_dir, const std::string& out_dir,
                     const QuantizeOptions& options);

}  // namespace dsv3
