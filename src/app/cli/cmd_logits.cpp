// dsv3 logits: float32 logits [T, vocab] of a token sequence as .npy (and the MTP head's).
#include <cstring>

#include <fmt/format.h>

#include "app/cli/args.h"
#include "app/cli/command.h"
#include "io/files.h"

namespace dsv3::cli {

namespace {

struct LogitsOptions {
  RunOptions run;
  std::string tokens;
  std::string out;
  std::string mtp_out;
  int64_t chunk = 0;  // tokens per forward call; 0: all at once
  std::string attention = "auto";
};

Status RunLogits(const LogitsOptions& o) {
  if (o.out.empty()) return Status::Error("--out F.npy is required");
  DSV3_ASSIGN_OR_RETURN(std::vector<int32_t> tokens, ParseTokenList(o.tokens));
  if (tokens.empty()) return Status::Error("--tokens: empty prompt (give at least one id)");
  if (o.chunk < 0) return Status::Error("--chunk must be >= 0");
  ForwardOptions forward;
  forward.experts_per_token = o.run.experts_per_token;
  if (o.attention == "naive") {
    forward.attention = AttentionPath::kNaive;
  } else if (o.attention == "absorbed") {
    forward.attention = AttentionPath::kAbsorbed;
  } else if (o.attention == "decompressed") {
    forward.attention = AttentionPath::kDecompressed;
  } else if (o.attention != "auto") {
    return Err("--attention: '{}' is not one of auto, absorbed, decompressed, naive", o.attention);
  }
  DSV3_ASSIGN_OR_RETURN(Runtime rt, LoadRuntime(o.run));
  const ModelConfig& c = rt.model->config();
  if (!o.mtp_out.empty() && !rt.model->has_mtp())
    return Err("--mtp-out: {} has no MTP layer", o.run.model_dir);
  const int64_t T = static_cast<int64_t>(tokens.size()), V = c.vocab_size, H = c.hidden_size;
  InferenceState state(*rt.model, T);
  DSV3_RETURN_IF_ERROR(CheckForwardInput(*rt.model, state, tokens, forward));

  // logits: [T, V]; hidden: [T, H] final-norm states for the MTP head.
  std::vector<float> logits(static_cast<size_t>(T * V));
  std::vector<float> hidden(static_cast<size_t>(T * H));
  const int64_t chunk = o.chunk == 0 ? T : o.chunk;
  for (int64_t begin = 0; begin < T; begin += chunk) {
    const int64_t n = std::min(chunk, T - begin);
    DSV3_RETURN_IF_ERROR(Forward(*rt.model, rt.ctx, state,
                                 std::span<const int32_t>(tokens).subspan(begin, n), forward,
                                 logits.data() + begin * V));
    std::memcpy(hidden.data() + begin * H, state.last_hidden(),
                static_cast<size_t>(n * H) * sizeof(float));
  }
  DSV3_RETURN_IF_ERROR(io::WriteNpyF32(o.out, logits.data(), {T, V}));

  if (!o.mtp_out.empty()) {
    if (T < 2) return Status::Error("--mtp-out needs at least 2 tokens");
    // Row i combines h_i with token t_{i+1} and predicts t_{i+2}.
    std::vector<float> mtp_logits(static_cast<size_t>((T - 1) * V));
    DSV3_RETURN_IF_ERROR(ForwardMtp(*rt.model, rt.ctx, state,
                                    std::span<const int32_t>(tokens).subspan(1), hidden.data(),
                                    o.run.experts_per_token, mtp_logits.data()));
    DSV3_RETURN_IF_ERROR(io::WriteNpyF32(o.mtp_out, mtp_logits.data(), {T - 1, V}));
  }
  return Status::Ok();
}

}  // namespace

Command RegisterLogits(CLI::App& root) {
  auto o = std::make_shared<LogitsOptions>();
  CLI::App* app = root.add_subcommand("logits", "write float32 logits [T, vocab] as .npy");
  AddRunOptions(app, &o->run, /*exact_default=*/true);
  app->add_option("--tokens", o->tokens, "token ids, e.g. 1,2,3")->required();
  app->add_option("--out", o->out, "output .npy");
  app->add_option("--mtp-out", o->mtp_out, "also write the MTP head's logits [T-1, vocab]");
  app->add_option("--chunk", o->chunk,
                  "tokens per forward call through the KV cache (default: all at once)");
  app->add_option("--attention", o->attention,
                  "auto (default: per call, the form with fewer operations) | absorbed | "
                  "decompressed | naive");
  return {app, [o] { return RunLogits(*o); }};
}

}  // namespace dsv3::cli
