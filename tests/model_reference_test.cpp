// The production model (src/model) against the independent float64 reference
// (tests/reference), on random checkpoints of every preset and weight dtype.
//
// Tolerance: the bound, max|logit - ref| <= 1e-5 * max|ref|. Where it comes from: the model
// computes in f32 (unit roundoff 6e-8); a logit passes through a handful of layers, each a few
// dot products of length <= ~100 with the error of a length-n f32 sum bounded by n*u*sum|terms|,
// and RMSNorm/softmax renormalise rather than amplify. That gives ~1e-6 relative in practice (the
// spec's §12 measurement for an fp32 port), so 1e-5 leaves a 10x margin and still catches any
// real mistake (a wrong rope layout moves logits by 40-97 %, a wrong scale by percent).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "model/mla.h"
#include "model/moe.h"
#include "model/presets.h"
#include "model/quantize.h"
#include "model/random_checkpoint.h"
#include "model/rope_yarn.h"
#include "model/transformer.h"
#include "ops/isa.h"
#include "reference/reference_model.h"
#include "test_util.h"

namespace dsv3 {
namespace {

constexpr double kRelTol = 1e-5;

std::vector<int32_t> RandomTokens(int64_t vocab, int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  return tokens;
}

double MaxAbs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// max |a - b| / max |b|
double RelError(const std::vector<float>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m / MaxAbs(b);
}

double RelError(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<double> bd(b.begin(), b.end());
  return RelError(a, bd);
}

struct Case {
  std::string preset;
  DType dtype;
  bool mtp;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.preset << " " << DTypeName(c.dtype) << (c.mtp ? " +MTP" : "");
}

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  std::string name = info.param.preset + "_" + std::string(DTypeName(info.param.dtype)) +
                     (info.param.mtp ? "_mtp" : "");
  for (char& ch : name)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return name;
}

// Layer 0's attention of `model` over x [T, H] (random, as an RMS-normalised input) in chunks of
// `chunk` through a fresh cache (the first chunk `first` tokens when given): [T, H].
std::vector<float> RunAttention(const Model& model, const std::vector<float>& x, int64_t chunk,
                                AttentionPath path, ThreadPool* pool, int64_t first = 0,
                                bool bf16_dot = false, bool int8_dot = false,
                                ops::Isa isa = ops::BestIsa(), bool f32_attention = false) {
  const ModelConfig& c = model.config();
  const int64_t H = c.hidden_size, T = static_cast<int64_t>(x.size()) / H;
  LayerKvCache cache;
  cache.latent.resize(static_cast<size_t>(T * c.kv_lora_rank));
  cache.rope_key.resize(static_cast<size_t>(T * c.qk_rope_head_dim));
  MlaScratch scratch;
  ops::KernelContext ctx{pool, isa};
  ctx.bf16_dot = bf16_dot;
  ctx.int8_dot = int8_dot;
  ctx.f32_attention = f32_attention;
  std::vector<float> out(x.size()), cos_sin;
  for (int64_t begin = 0; begin < T;) {
    const int64_t n = std::min(begin == 0 && first > 0 ? first : chunk, T - begin);
    RopeTable(model.rope(), begin, n, &cos_sin);
    MlaForward(c, model.rope(), model.weights().layers[0].attn, ctx, x.data() + begin * H, n, begin,
               cos_sin.data(), path, cache, scratch, out.data() + begin * H);
    begin += n;
  }
  return out;
}

class ModelVsReference : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    auto config = PresetConfig(GetParam().preset);
    ASSERT_TRUE(config.ok()) << config.status().message();
    RandomCheckpointOptions options;
    options.seed = 7;
    options.dtype = GetParam().dtype;
    options.mtp = GetParam().mtp;
    // Small FP8 blocks that do not divide the tiny shapes, so edge blocks are ragged.
    options.fp8_block_rows = 16;
    options.fp8_block_cols = 32;
    ASSERT_TRUE(WriteRandomCheckpoint(*config, options, dir_.path()).ok());
    auto model = Model::Load(dir_.path(), LoadOptions{});
    ASSERT_TRUE(model.ok()) << model.status().message();
    model_ = std::move(*model);
  }

  // Full forward over tokens in chunks of `chunk` through the cache.
  std::vector<float> RunModel(const std::vector<int32_t>& tokens, int64_t chunk, AttentionPath path,
                              int64_t k, ThreadPool* pool, std::vector<float>* hidden = nullptr,
                              PhaseProfile* profile = nullptr) {
    const int64_t T = static_cast<int64_t>(tokens.size()), V = model_->config().vocab_size;
    const int64_t H = model_->config().hidden_size;
    InferenceState state(*model_, T);
    ops::KernelContext ctx{pool, ops::BestIsa()};
    ForwardOptions options;
    options.attention = path;
    options.experts_per_token = k;
    options.profile = profile;
    std::vector<float> logits(static_cast<size_t>(T * V));
    if (hidden) hidden->resize(static_cast<size_t>(T * H));
    for (int64_t begin = 0; begin < T; begin += chunk) {
      const int64_t n = std::min(chunk, T - begin);
      Status s = Forward(*model_, ctx, state, std::span<const int32_t>(tokens).subspan(begin, n),
                         options, logits.data() + begin * V);
      EXPECT_TRUE(s.ok()) << s.message();
      if (hidden)
        std::copy(state.last_hidden(), state.last_hidden() + n * H, hidden->data() + begin * H);
    }
    return logits;
  }

  // T rows of the hidden size, standard normal: an RMS-normalised input's scale.
  std::vector<float> RandomInput(int64_t T, unsigned seed) const {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> x(static_cast<size_t>(T * model_->config().hidden_size));
    for (float& v : x) v = dist(rng);
    return x;
  }

  // Layer 0's attention over x (RunAttention above).
  std::vector<float> RunAttention(const std::vector<float>& x, int64_t chunk, AttentionPath path,
                                  ThreadPool* pool, int64_t first = 0, bool bf16_dot = false) {
    return dsv3::RunAttention(*model_, x, chunk, path, pool, first, bf16_dot);
  }

  testing::TempDir dir_;
  std::unique_ptr<Model> model_;
};

TEST_P(ModelVsReference, LogitsMatchFloat64Reference) {
  const auto tokens = RandomTokens(model_->config().vocab_size, 11, 3);
  auto ref = reference::ReferenceForward(dir_.path(), tokens);
  ASSERT_TRUE(ref.ok()) << ref.status().message();
  ThreadPool pool(2);
  for (AttentionPath path :
       {AttentionPath::kAuto, AttentionPath::kAbsorbed, AttentionPath::kDecompressed}) {
    const auto logits = RunModel(tokens, 11, path, 0, &pool);
    EXPECT_LE(RelError(logits, ref->logits), kRelTol) << static_cast<int>(path);
  }
}

// A phase profile (bench --profile) only reads the clock: the same logits, every token counted,
// time in the phases the model has (experts in MoE layers, the dense MLP in the first
// first_k_dense_replace layers) and none in those it lacks.
TEST_P(ModelVsReference, PhaseProfileChangesNothing) {
  const auto tokens = RandomTokens(model_->config().vocab_size, 9, 11);
  ThreadPool pool(2);
  for (int64_t chunk : {9, 1}) {
    PhaseProfile profile;
    const auto plain = RunModel(tokens, chunk, AttentionPath::kAuto, 0, &pool);
    const auto timed = RunModel(tokens, chunk, AttentionPath::kAuto, 0, &pool, nullptr, &profile);
    EXPECT_EQ(plain, timed) << chunk;
    EXPECT_EQ(profile.tokens, 9);
    const ModelConfig& c = model_->config();
    const auto at = [&](Phase p) { return profile.seconds[static_cast<int>(p)]; };
    bool moe = false;
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) moe = moe || c.IsMoeLayer(i);
    EXPECT_GT(at(Phase::kAttentionIn), 0);
    EXPECT_GT(at(Phase::kAttention), 0);
    EXPECT_GT(at(Phase::kLmHead), 0);
    EXPECT_EQ(at(Phase::kExpertsIn) > 0, moe) << chunk;
    bool dense = false;
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) dense = dense || !c.IsMoeLayer(i);
    EXPECT_EQ(at(Phase::kDenseMlp) > 0, dense) << chunk;
    double named = 0;
    for (int i = 0; i < kNumPhases; ++i)
      if (i != static_cast<int>(Phase::kOther)) named += profile.seconds[i];
    EXPECT_LE(named, profile.total_seconds);
    EXPECT_DOUBLE_EQ(at(Phase::kOther), profile.total_seconds - named);
  }
}

TEST_P(ModelVsReference, CachedDecodeChunkedPrefillAndNaiveAgree) {
  const auto tokens = RandomTokens(model_->config().vocab_size, 10, 5);
  ThreadPool pool(2);
  const auto full = RunModel(tokens, 10, AttentionPath::kAbsorbed, 0, &pool);
  const auto naive = RunModel(tokens, 10, AttentionPath::kNaive, 0, &pool);
  const auto decode = RunModel(tokens, 1, AttentionPath::kAbsorbed, 0, &pool);
  const auto chunked = RunModel(tokens, 4, AttentionPath::kAbsorbed, 0, &pool);
  const auto naive_chunked = RunModel(tokens, 3, AttentionPath::kNaive, 0, nullptr);
  const auto decompressed = RunModel(tokens, 10, AttentionPath::kDecompressed, 0, &pool);
  const auto decompressed_chunked = RunModel(tokens, 4, AttentionPath::kDecompressed, 0, &pool);
  // Same math in f32 with different summation orders: a few ulps of the largest terms.
  EXPECT_LE(RelError(naive, full), kRelTol);
  EXPECT_LE(RelError(decode, full), kRelTol);
  EXPECT_LE(RelError(chunked, full), kRelTol);
  EXPECT_LE(RelError(naive_chunked, full), kRelTol);
  EXPECT_LE(RelError(decompressed, full), kRelTol);
  EXPECT_LE(RelError(decompressed_chunked, full), kRelTol);
  // The row and head splits over threads must not change a single bit.
  const auto one_thread = RunModel(tokens, 10, AttentionPath::kAbsorbed, 0, nullptr);
  EXPECT_EQ(one_thread, full);
  EXPECT_EQ(RunModel(tokens, 4, AttentionPath::kDecompressed, 0, nullptr), decompressed_chunked);
}

// The bf16-dot path (AVX-512) decompresses a prefill's keys and values with a bf16 x bf16
// product on kv_b_proj as stored (BF16, or FP8 whose heads start on scale blocks), the latent
// rounded to bf16 (relative error <= u = 2^-8 per value), and runs the scores and values as bf16
// x bf16 products too (q, k, the softmax weights and v rounded by u each); the absorbed form
// keeps f32. Both share the bf16-dot projections. Each decompressed k and v then moves by at most
// u times its sum of |terms|, the scores and values by a few u more through the softmax, and
// o_proj's bf16 rounding of either form's o by u: a few u in all, so 4u = 2^-6 of the output's
// scale (a wrong head's rows or scale block gives O(1); measured 0.0028-0.0053 on the BF16
// presets and the FP8 model below, 0.0026-0.0034 while the scores and values were f32).
void ExpectBf16DotDecompressionNearAbsorbed(const Model& model) {
  const int64_t T = 40, H = model.config().hidden_size;
  std::mt19937 rng(19);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(T * H));
  for (float& v : x) v = normal(rng);
  ThreadPool pool(2);
  const auto absorbed = RunAttention(model, x, T, AttentionPath::kAbsorbed, &pool, 0, true);
  const auto decompressed = RunAttention(model, x, T, AttentionPath::kDecompressed, &pool, 0, true);
  EXPECT_LE(RelError(decompressed, absorbed), 1.0 / 64);
}

TEST_P(ModelVsReference, Bf16DotDecompressionWithinBf16Rounding) {
  if (ops::BestIsa() != ops::Isa::kAvx512 || GetParam().dtype != DType::kBF16)
    GTEST_SKIP() << "AVX-512 and BF16 weights (the tiny presets' FP8 heads straddle scale blocks)";
  ExpectBf16DotDecompressionNearAbsorbed(*model_);
}

// FP8 with heads of 32 rows (qk_nope 20 + v 12) on 16-row scale blocks: head h's rows start at
// block 2h, so a wrong scale offset is caught.
TEST(Bf16Dot, Fp8DecompressionWithinBf16Rounding) {
  if (ops::BestIsa() != ops::Isa::kAvx512) GTEST_SKIP() << "bf16-dot runs on AVX-512";
  auto config = PresetConfig("tiny-v3");
  ASSERT_TRUE(config.ok());
  config->qk_nope_head_dim = 20;
  config->v_head_dim = 12;
  RandomCheckpointOptions options;
  options.seed = 9;
  options.dtype = DType::kF8E4M3;
  options.fp8_block_rows = 16;
  options.fp8_block_cols = 32;
  testing::TempDir dir;
  ASSERT_TRUE(WriteRandomCheckpoint(*config, options, dir.path()).ok());
  auto model = Model::Load(dir.path(), LoadOptions{});
  ASSERT_TRUE(model.ok()) << model.status().message();
  ExpectBf16DotDecompressionNearAbsorbed(**model);
}

// With int8 activations (q8_0 / q4_0 weights; the CLI's default) on AVX-512 the decompressed
// form's scores and values are bf16 x bf16 products (mla.cpp, Bf16AttentionProducts); on AVX2
// they stay f32, and every other step gives the same bits (the int8 kernels equal their scalar
// twin on every ISA) or differs by f32 rounding. q, k, the softmax weights and v each carry a
// relative error <= u = 2^-8 from the rounding: the scores move by at most 2u of their sum of
// |terms|, the weights relatively by as much, each output by ~3u of its sum of |terms|; o_proj's
// int8 quantization can then move a value of o by one code (2^-7 of its block's largest value)
// where o crossed a rounding boundary. A few u in all, so 4u = 2^-6 of the output's scale bounds
// it (a wrong head, key offset or mask gives 0.5-0.8; measured 0.0042-0.0048), while the f32 steps
// alone differ by ~1.5e-7 (AVX2 against scalar): the error must exceed 100 times that, or the
// products did not run in bf16. 150 tokens: three blocks.
TEST(Bf16AttentionProducts, Int8ModelWithinBf16RoundingOfF32Products) {
  if (ops::BestIsa() != ops::Isa::kAvx512) GTEST_SKIP() << "bf16 products run on AVX-512";
  auto config = PresetConfig("tiny-v3");
  ASSERT_TRUE(config.ok());
  RandomCheckpointOptions options;
  options.seed = 12;
  testing::TempDir dir;
  ASSERT_TRUE(WriteRandomCheckpoint(*config, options, dir / "src").ok());
  const int64_t T = 150, H = config->hidden_size;
  std::mt19937 rng(23);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(T * H));
  for (float& v : x) v = normal(rng);
  ThreadPool pool(2);
  for (QuantType type : {QuantType::kQ8_0, QuantType::kQ4_0}) {
    SCOPED_TRACE(QuantTypeName(type));
    QuantizeOptions quantize;
    quantize.type = type;
    const std::string out = dir / QuantTypeName(type);
    ASSERT_TRUE(QuantizeModel(dir / "src", out, quantize).ok());
    auto model = Model::Load(out, LoadOptions{});
    ASSERT_TRUE(model.ok()) << model.status().message();
    const auto f32_products = RunAttention(**model, x, T, AttentionPath::kDecompressed, &pool, 0,
                                           false, true, ops::Isa::kAvx2);
    // The f32 steps alone (AVX2 against the scalar twin): far below the bf16 products' effect.
    const double f32_only = RelError(RunAttention(**model, x, T, AttentionPath::kDecompressed,
                                                  &pool, 0, false, true, ops::Isa::kScalar),
                                     f32_products);
    // Calls: one; 40 each; 7 (fewer than 8 queries: the products' dot form, 7 keys) then 143
    // (blocks of 71 and 135 keys after 7 cached: odd widths, each block's keys a prefix of the
    // call's); 50 then 100.
    const auto one_thread = RunAttention(**model, x, T, AttentionPath::kDecompressed, nullptr, 0,
                                         false, true, ops::Isa::kAvx512);
    for (auto [first, chunk] : {std::pair<int64_t, int64_t>{0, T}, {0, 40}, {7, 143}, {50, 100}}) {
      const auto bf16_products = RunAttention(**model, x, chunk, AttentionPath::kDecompressed,
                                              &pool, first, false, true, ops::Isa::kAvx512);
      const double error = RelError(bf16_products, f32_products);
      EXPECT_LE(error, 1.0 / 64) << "first " << first << " chunk " << chunk;
      EXPECT_GT(error, 100 * f32_only) << "the products ran in f32";
      if (first == 0 && chunk == T) {
        EXPECT_EQ(bf16_products, one_thread);  // which thread takes a head changes no bit
      }
    }
    // KernelContext::f32_attention (--f32-attention): AVX-512 keeps the products f32, so it stays
    // within 100 times the f32-only difference of AVX2 (measured 0.7-1.1e-7), where the bf16
    // products must exceed that.
    const double kept_f32 = RelError(RunAttention(**model, x, T, AttentionPath::kDecompressed,
                                                  &pool, 0, false, true, ops::Isa::kAvx512, true),
                                     f32_products);
    EXPECT_LE(kept_f32, 100 * f32_only);
  }
}

// More tokens than one block (64 tokens) of the decompressed form: later blocks' query/output
// offsets and causal masks, in one call and in chunks that start mid-block and after a block.
// Layer 0's attention, not the logits: through the whole model a MoE router's near-tie can pick
// other experts under the two forms' f32 roundings, which is no error of either (tiny-v3 BF16 has
// two selection scores within 1e-6 at one of 300 random tokens: its logits from there on differ by
// 1.35 once the AVX2 absorbed form runs batched).
TEST_P(ModelVsReference, DecompressedAcrossBlocksMatchesAbsorbed) {
  const int64_t T = 300;
  const std::vector<float> x = RandomInput(T, 17);
  ThreadPool pool(2);
  const auto absorbed = RunAttention(x, T, AttentionPath::kAbsorbed, &pool);
  EXPECT_LE(RelError(RunAttention(x, T, AttentionPath::kDecompressed, &pool), absorbed), kRelTol);
  EXPECT_LE(RelError(RunAttention(x, 140, AttentionPath::kDecompressed, &pool), absorbed), kRelTol);
  // At 300 tokens the tiny presets' operation counts favour the decompressed form.
  EXPECT_LE(RelError(RunAttention(x, T, AttentionPath::kAuto, &pool), absorbed), kRelTol);
  // Token by token (the absorbed form's decode path) agrees as well.
  EXPECT_LE(RelError(RunAttention(x, 1, AttentionPath::kAbsorbed, &pool), absorbed), kRelTol);
}

// Decoding one token against 512 or more cached positions splits them into parts attended on
// different threads and merged (model/mla.cpp, AbsorbedSplitKeys): token by token after a
// 600-token prefix (3 parts of 256) it agrees with the whole sequence in one call and with the
// head split (whose merge-free sums round differently, so the split did run), and the number of
// threads (1, 2, 3: the parts spread differently) changes no bit.
TEST_P(ModelVsReference, DecodeOverLongCacheSplitsPositions) {
  const int64_t T = 660;
  const std::vector<float> x = RandomInput(T, 18);
  ThreadPool two(2), three(3);
  const auto whole = RunAttention(x, T, AttentionPath::kAbsorbed, &two);
  const auto decoded = RunAttention(x, 1, AttentionPath::kAbsorbed, &two, 600);
  EXPECT_LE(RelError(decoded, whole), kRelTol);
  const auto head_split = RunAttention(x, 1, AttentionPath::kAbsorbedHeadSplit, &two, 600);
  EXPECT_LE(RelError(decoded, head_split), kRelTol);
  EXPECT_NE(decoded, head_split);
  EXPECT_EQ(RunAttention(x, 1, AttentionPath::kAbsorbed, nullptr, 600), decoded);
  EXPECT_EQ(RunAttention(x, 1, AttentionPath::kAbsorbed, &three, 600), decoded);
}

// A chunk after a long context attends the positions all its tokens share (the cache before it)
// once for all their heads and each token's own positions apart, merged per (token, head) query
// (model/mla.cpp,
// AbsorbedBatchedBlock): 60 tokens after a 600-token prefix agree with the whole sequence in one
// call and token by token, and the number of threads (1, 2, 3: the queries split differently)
// changes no bit.
TEST_P(ModelVsReference, ChunkAfterLongContextSharesItsPrefix) {
  const int64_t T = 660;
  const std::vector<float> x = RandomInput(T, 19);
  ThreadPool two(2), three(3);
  const auto chunked = RunAttention(x, 60, AttentionPath::kAbsorbed, &two, 600);
  EXPECT_LE(RelError(chunked, RunAttention(x, T, AttentionPath::kAbsorbed, &two)), kRelTol);
  EXPECT_LE(RelError(chunked, RunAttention(x, 1, AttentionPath::kAbsorbed, &two, 600)), kRelTol);
  EXPECT_EQ(RunAttention(x, 60, AttentionPath::kAbsorbed, nullptr, 600), chunked);
  EXPECT_EQ(RunAttention(x, 60, AttentionPath::kAbsorbed, &three, 600), chunked);
}

// A MoE layer computes each token on its own: 48 tokens in one call (the gather, SiLU and the
// weighted sum split over the threads, model/moe.cpp) give what two calls of 24 give (each on
// one thread), up to the products' summation order.
TEST_P(ModelVsReference, MoeLayerGivesTheSameForAnyBatch) {
  const ModelConfig& c = model_->config();
  if (c.n_routed_experts == 0) GTEST_SKIP() << "no MoE layers";
  const MoeWeights& w = model_->weights().layers[c.first_k_dense_replace].moe;
  const int64_t T = 48, H = c.hidden_size, k = c.num_experts_per_tok;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(T * H));
  for (float& v : x) v = normal(rng);
  ThreadPool pool(2);
  const ops::KernelContext ctx{&pool, ops::BestIsa()};
  MoeScratch scratch;
  std::vector<float> whole(x.size()), halves(x.size());
  MoeForward(c, w, ctx, x.data(), T, k, scratch, whole.data());
  for (int64_t t0 = 0; t0 < T; t0 += T / 2)
    MoeForward(c, w, ctx, x.data() + t0 * H, T / 2, k, scratch, halves.data() + t0 * H);
  EXPECT_LE(RelError(whole, halves), kRelTol);
}

TEST_P(ModelVsReference, FewerAndMoreExpertsPerTokenMatchReference) {
  if (model_->config().n_routed_experts == 0) GTEST_SKIP() << "no MoE layers";
  const auto tokens = RandomTokens(model_->config().vocab_size, 7, 11);
  for (int k : {1, 2, 6}) {
    reference::ReferenceOptions options;
    options.experts_per_token = k;
    auto ref = reference::ReferenceForward(dir_.path(), tokens, options);
    ASSERT_TRUE(ref.ok()) << ref.status().message();
    const auto logits = RunModel(tokens, 7, AttentionPath::kAbsorbed, k, nullptr);
    EXPECT_LE(RelError(logits, ref->logits), kRelTol) << "k = " << k;
  }
}

// Checkpoints with an MTP layer.
class MtpVsReference : public ModelVsReference {};

TEST_P(MtpVsReference, MtpLogitsMatchReference) {
  ASSERT_TRUE(model_->has_mtp());
  const auto tokens = RandomTokens(model_->config().vocab_size, 9, 13);
  reference::ReferenceOptions options;
  options.mtp = true;
  auto ref = reference::ReferenceForward(dir_.path(), tokens, options);
  ASSERT_TRUE(ref.ok()) << ref.status().message();
  ASSERT_EQ(ref->mtp_logits.size(), (tokens.size() - 1) * model_->config().vocab_size);
  std::vector<float> hidden;
  for (int64_t chunk : {9, 2}) {
    const auto logits = RunModel(tokens, chunk, AttentionPath::kAbsorbed, 0, nullptr, &hidden);
    InferenceState state(*model_, 9);
    std::vector<float> mtp((tokens.size() - 1) * model_->config().vocab_size);
    Status s =
        ForwardMtp(*model_, ops::KernelContext{}, state,
                   std::span<const int32_t>(tokens).subspan(1), hidden.data(), 0, mtp.data());
    ASSERT_TRUE(s.ok()) << s.message();
    EXPECT_LE(RelError(mtp, ref->mtp_logits), kRelTol) << "chunk " << chunk;
  }
}

std::vector<Case> AllCases() {
  std::vector<Case> cases;
  for (const Preset& p : AllPresets()) {
    if (p.name.rfind("tiny-", 0) != 0) continue;
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF8E4M3})
      cases.push_back({p.name, dtype, false});
  }
  return cases;
}

std::vector<Case> MtpCases() {
  return {{"tiny-v3", DType::kF32, true},
          {"tiny-v3", DType::kF8E4M3, true},
          {"tiny-v2-lite", DType::kBF16, true},
          {"tiny-dense", DType::kF32, true}};
}

INSTANTIATE_TEST_SUITE_P(Presets, ModelVsReference, ::testing::ValuesIn(AllCases()), CaseName);
INSTANTIATE_TEST_SUITE_P(Presets, MtpVsReference, ::testing::ValuesIn(MtpCases()), CaseName);

}  // namespace
}  // namespace dsv3
