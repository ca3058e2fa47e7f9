// Gradient checks of the trainer's backward passes (issue 4): every component against central
// finite differences in float64 on tiny shapes, and the training forward against the independent
// float64 reference (tests/reference).
//
// Tolerances: central differences with step h have truncation error ~h²·|f'''| ≈ 1e-10 and
// round-off ~ε·|f|/h ≈ 1e-11 for h = 1e-5 in double, so a correct backward agrees to ~1e-9
// relative; the bound is 1e-6. Routing is discrete: the data is random (no near-ties), so
// a ±h step never flips a selection.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>

#include "backend/thread_pool.h"
#include "model/presets.h"
#include "model/random_checkpoint.h"
#include "model/rope_yarn.h"
#include "ops/isa.h"
#include "reference/reference_model.h"
#include "test_util.h"
#include "train/mla.h"
#include "train/mlp.h"
#include "train/moe.h"
#include "train/rmsnorm.h"
#include "train/transformer.h"

namespace dsv3::train {
namespace {

constexpr double kGradTol = 1e-6;
constexpr double kStep = 1e-5;
// The whole model's loss is O(1) while some expert gradients are O(1e-5): a larger step keeps the
// round-off ε·|f|/h well below them (truncation h²·|f'''| stays ~1e-8 relative).
constexpr double kModelStep = 1e-4;

std::vector<double> Random(size_t n, std::mt19937_64& rng, double scale = 1.0) {
  std::normal_distribution<double> dist(0.0, scale);
  std::vector<double> v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

// ‖analytic − numeric‖ / ‖numeric‖ over the checked coordinates of one buffer, where loss()
// reads *values. Checks up to max_coords coordinates spread over the buffer.
double CheckBuffer(std::vector<double>* values, const std::vector<double>& analytic,
                   const std::function<double()>& loss, size_t max_coords = 40,
                   double step = kStep) {
  double diff2 = 0, ref2 = 0;
  const size_t n = values->size();
  const size_t stride = std::max<size_t>(1, n / max_coords);
  for (size_t i = (n > max_coords ? 7 % stride : 0); i < n; i += stride) {
    const double saved = (*values)[i];
    (*values)[i] = saved + step;
    const double up = loss();
    (*values)[i] = saved - step;
    const double down = loss();
    (*values)[i] = saved;
    const double numeric = (up - down) / (2 * step);
    diff2 += (numeric - analytic[i]) * (numeric - analytic[i]);
    ref2 += numeric * numeric;
  }
  if (ref2 == 0) return diff2 == 0 ? 0 : INFINITY;
  return std::sqrt(diff2 / ref2);
}

double Dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

TEST(TrainGrad, RmsNorm) {
  std::mt19937_64 rng(1);
  const int64_t N = 3, n = 7;
  auto x = Random(N * n, rng), w = Random(n, rng), r = Random(N * n, rng);
  auto loss = [&] {
    std::vector<double> y(N * n), inv;
    RmsNormForward(x.data(), w.data(), N, n, 1e-6, y.data(), &inv);
    return Dot(y, r);
  };
  std::vector<double> y(N * n), inv, dx(N * n, 0), dw(n, 0);
  RmsNormForward(x.data(), w.data(), N, n, 1e-6, y.data(), &inv);
  RmsNormBackward(x.data(), w.data(), inv, N, n, r.data(), dx.data(), dw.data());
  EXPECT_LT(CheckBuffer(&x, dx, loss), kGradTol);
  EXPECT_LT(CheckBuffer(&w, dw, loss), kGradTol);
}

TEST(TrainGrad, SwiGluMlp) {
  std::mt19937_64 rng(2);
  const int64_t N = 4, H = 6, I = 5;
  auto x = Random(N * H, rng), g = Random(I * H, rng), u = Random(I * H, rng),
       d = Random(H * I, rng), r = Random(N * H, rng);
  Context ctx;
  auto weights = [&] { return MlpWeightsRef<double>{g.data(), u.data(), d.data(), H, I}; };
  auto loss = [&] {
    std::vector<double> y(N * H);
    MlpCache<double> cache;
    MlpForward(ctx, weights(), x.data(), N, y.data(), &cache);
    return Dot(y, r);
  };
  std::vector<double> y(N * H), dx(N * H, 0), dg(I * H, 0), du(I * H, 0), dd(H * I, 0);
  MlpCache<double> cache;
  MlpForward(ctx, weights(), x.data(), N, y.data(), &cache);
  MlpBackward(ctx, weights(), cache, N, r.data(), dx.data(), {dg.data(), du.data(), dd.data()});
  EXPECT_LT(CheckBuffer(&x, dx, loss), kGradTol);
  EXPECT_LT(CheckBuffer(&g, dg, loss), kGradTol);
  EXPECT_LT(CheckBuffer(&u, du, loss), kGradTol);
  EXPECT_LT(CheckBuffer(&d, dd, loss), kGradTol);
}

// MLA with the q low-rank path (tiny-v3: YaRN, interleaved rope) or a plain q_proj (moonlight),
// and half-split rope.
void CheckMla(const std::string& preset) {
  SCOPED_TRACE(preset);
  ModelConfig c = *PresetConfig(preset);
  std::mt19937_64 rng(3);
  const int64_t B = 2, T = 5, H = c.hidden_size, nh = c.num_attention_heads;
  const int64_t qk = c.qk_head_dim(), r = c.kv_lora_rank, dr = c.qk_rope_head_dim;
  const int64_t dn = c.qk_nope_head_dim, dv = c.v_head_dim, rq = c.q_lora_rank;
  const double s = 0.3;
  std::vector<double> q_proj, q_a, q_an, q_b;
  if (c.has_q_lora()) {
    q_a = Random(rq * H, rng, s);
    q_an = Random(rq, rng);
    q_b = Random(nh * qk * rq, rng, s);
  } else {
    q_proj = Random(nh * qk * H, rng, s);
  }
  auto kv_a = Random((r + dr) * H, rng, s), kv_an = Random(r, rng),
       kv_b = Random(nh * (dn + dv) * r, rng, s), o = Random(H * nh * dv, rng, s),
       x = Random(B * T * H, rng), rr = Random(B * T * H, rng);
  const auto rope = MakeRopeTables<double>(MakeRopeParams(c), T);
  Context ctx;
  auto weights = [&] {
    return MlaWeightsRef<double>{q_proj.data(), q_a.data(),   q_an.data(), q_b.data(),
                                 kv_a.data(),   kv_an.data(), kv_b.data(), o.data()};
  };
  auto loss = [&] {
    std::vector<double> y(B * T * H);
    MlaCache<double> cache;
    MlaForward(ctx, c, rope, weights(), x.data(), B, T, y.data(), &cache);
    return Dot(y, rr);
  };
  auto zeros = [](const std::vector<double>& v) { return std::vector<double>(v.size(), 0.0); };
  auto dq_proj = zeros(q_proj), dq_a = zeros(q_a), dq_an = zeros(q_an), dq_b = zeros(q_b),
       dkv_a = zeros(kv_a), dkv_an = zeros(kv_an), dkv_b = zeros(kv_b), d_o = zeros(o),
       dx = zeros(x);
  std::vector<double> y(B * T * H);
  MlaCache<double> cache;
  MlaForward(ctx, c, rope, weights(), x.data(), B, T, y.data(), &cache);
  MlaBackward(ctx, c, rope, weights(), cache, B, T, rr.data(), dx.data(),
              {dq_proj.data(), dq_a.data(), dq_an.data(), dq_b.data(), dkv_a.data(), dkv_an.data(),
               dkv_b.data(), d_o.data()});
  EXPECT_LT(CheckBuffer(&x, dx, loss), kGradTol);
  if (c.has_q_lora()) {
    EXPECT_LT(CheckBuffer(&q_a, dq_a, loss), kGradTol);
    EXPECT_LT(CheckBuffer(&q_an, dq_an, loss), kGradTol);
    EXPECT_LT(CheckBuffer(&q_b, dq_b, loss), kGradTol);
  } else {
    EXPECT_LT(CheckBuffer(&q_proj, dq_proj, loss), kGradTol);
  }
  EXPECT_LT(CheckBuffer(&kv_a, dkv_a, loss), kGradTol);
  EXPECT_LT(CheckBuffer(&kv_an, dkv_an, loss), kGradTol);
  EXPECT_LT(CheckBuffer(&kv_b, dkv_b, loss), kGradTol);
  EXPECT_LT(CheckBuffer(&o, d_o, loss), kGradTol);
}

TEST(TrainGrad, MlaQLoraYarn) {
  CheckMla("tiny-v3");
}
TEST(TrainGrad, MlaPlainQProj) {
  CheckMla("tiny-moonlight");
}
TEST(TrainGrad, MlaHalfSplitRope) {
  CheckMla("tiny-halfsplit");
}

// The MoE layer: router (gradients through the selected experts' scores into gate.weight), routed
// and shared experts, the sequence-wise balance loss (α large so its gradient is visible).
void CheckMoe(const std::string& preset) {
  SCOPED_TRACE(preset);
  ModelConfig c = *PresetConfig(preset);
  std::mt19937_64 rng(4);
  const int64_t B = 2, T = 6, H = c.hidden_size, E = c.n_routed_experts;
  const int64_t I = c.moe_intermediate_size, Is = c.n_shared_experts * I;
  const double alpha = 0.5;
  auto gate = Random(E * H, rng, 0.5), bias = Random(E, rng, 0.1), x = Random(B * T * H, rng),
       rr = Random(B * T * H, rng);
  std::vector<std::vector<double>> ew;
  for (int64_t e = 0; e < E; ++e)
    for (int m = 0; m < 3; ++m) ew.push_back(Random(I * H, rng, 0.3));
  std::vector<std::vector<double>> sw;
  for (int m = 0; m < 3; ++m) sw.push_back(Random(Is * H, rng, 0.3));
  Context ctx;
  auto weights = [&] {
    MoeWeightsRef<double> w;
    w.gate = gate.data();
    w.bias = c.topk_method == "noaux_tc" ? bias.data() : nullptr;
    for (int64_t e = 0; e < E; ++e)
      w.experts.push_back({ew[e * 3].data(), ew[e * 3 + 1].data(), ew[e * 3 + 2].data(), H, I});
    w.has_shared = Is > 0;
    w.shared = {sw[0].data(), sw[1].data(), sw[2].data(), H, Is};
    return w;
  };
  auto loss = [&] {
    std::vector<double> y(B * T * H);
    MoeCache<double> cache;
    const double bal = MoeForward(ctx, c, weights(), x.data(), B, T, alpha, y.data(), &cache);
    return Dot(y, rr) + bal;
  };
  std::vector<double> dgate(gate.size(), 0), dx(x.size(), 0);
  std::vector<std::vector<double>> dew, dsw;
  for (auto& v : ew) dew.emplace_back(v.size(), 0.0);
  for (auto& v : sw) dsw.emplace_back(v.size(), 0.0);
  MoeGradsRef<double> g;
  g.gate = dgate.data();
  for (int64_t e = 0; e < E; ++e)
    g.experts.push_back({dew[e * 3].data(), dew[e * 3 + 1].data(), dew[e * 3 + 2].data()});
  g.shared = {dsw[0].data(), dsw[1].data(), dsw[2].data()};
  std::vector<double> y(B * T * H);
  MoeCache<double> cache;
  const double bal = MoeForward(ctx, c, weights(), x.data(), B, T, alpha, y.data(), &cache);
  EXPECT_GT(bal, 0.0);
  MoeBackward(ctx, c, weights(), cache, B, T, alpha, rr.data(), dx.data(), g);
  EXPECT_LT(CheckBuffer(&gate, dgate, loss, 200), kGradTol);
  EXPECT_LT(CheckBuffer(&x, dx, loss), kGradTol);
  for (size_t i = 0; i < ew.size(); i += 5)
    EXPECT_LT(CheckBuffer(&ew[i], dew[i], loss, 10), kGradTol);
  if (Is > 0) {
    for (size_t i = 0; i < 3; ++i) EXPECT_LT(CheckBuffer(&sw[i], dsw[i], loss, 10), kGradTol);
  }
  // The balance-loss part alone: the gate gradient with α = 0 must differ (the loss is wired in).
  std::vector<double> dgate0(gate.size(), 0), dx0(x.size(), 0);
  MoeCache<double> cache0;
  MoeForward(ctx, c, weights(), x.data(), B, T, 0.0, y.data(), &cache0);
  MoeBackward(ctx, c, weights(), cache0, B, T, 0.0, rr.data(), dx0.data(), g);  // grads reused
  double moved = 0;
  for (size_t i = 0; i < dx.size(); ++i) moved = std::max(moved, std::fabs(dx[i] - dx0[i]));
  EXPECT_GT(moved, 1e-6);
}

TEST(TrainGrad, MoeSigmoidNoauxTcGroups) {
  CheckMoe("tiny-v3");
}
TEST(TrainGrad, MoeSoftmaxGroupLimitedGreedy) {
  CheckMoe("tiny-v2");
}
TEST(TrainGrad, MoeSoftmaxGreedy) {
  CheckMoe("tiny-v2-lite");
}

// The whole network: embedding, layers, final norm, lm_head, cross-entropy, MTP with λ and the
// balance loss, checked tensor by tensor.
void CheckModel(ModelConfig c, bool mtp) {
  c.num_nextn_predict_layers = mtp ? 1 : 0;
  auto made = TrainModel<double>::Create(c);
  ASSERT_TRUE(made.ok()) << made.status().message();
  TrainModel<double> model = std::move(*made);
  model.InitRandom(5);
  // Bigger weights than the training init so every path carries signal; random bias.
  std::mt19937_64 rng(6);
  std::normal_distribution<double> dist(0.0, 1.0);
  for (auto& t : model.params().tensors()) {
    if (t.shape.size() == 1) {
      for (double& v : t.data) v = t.trainable ? 1.0 + 0.2 * dist(rng) : 0.05 * dist(rng);
    } else {
      for (double& v : t.data) v = dist(rng) / std::sqrt(static_cast<double>(t.shape[1]));
    }
  }
  const int64_t B = 2, T = 5;
  std::vector<int32_t> seqs(B * (T + 1));
  for (auto& t : seqs) t = static_cast<int32_t>(rng() % static_cast<uint64_t>(c.vocab_size));
  LossOptions options;
  options.balance_alpha = 0.1;
  options.mtp_lambda = 0.3;
  Context ctx;
  auto grads = ParamSet<double>::ZerosLike(model.params());
  const LossStats stats = model.ForwardBackward(ctx, seqs.data(), B, T, options, &grads);
  if (mtp) {
    EXPECT_GT(stats.mtp, 0.0);
  }
  auto loss = [&] { return model.ForwardBackward(ctx, seqs.data(), B, T, options, nullptr).total; };
  for (int i = 0; i < model.params().size(); ++i) {
    auto& t = model.params().tensor(i);
    if (!t.trainable) continue;
    const double err = CheckBuffer(&t.data, grads.tensor(i).data, loss, 6, kModelStep);
    EXPECT_LT(err, kGradTol) << t.name;
  }
}

TEST(TrainGrad, WholeModelV3WithMtp) {
  CheckModel(*PresetConfig("tiny-v3"), true);
}
TEST(TrainGrad, WholeModelV2LiteNoMtp) {
  CheckModel(*PresetConfig("tiny-v2-lite"), false);
}

// Gradients of the float model (SIMD kernels of ops/, a 2-thread pool; with bf16 compute if asked)
// and of the float64 model on the same weights and batch, per ISA the CPU runs.
struct GradPair {
  ParamSet<double> g64;
  std::vector<std::pair<std::string, ParamSet<float>>> g32;  // per ISA
  std::vector<bool> trainable;
};
GradPair FloatAndDoubleGradients(const char* preset, bool bf16_compute) {
  ModelConfig c = *PresetConfig(preset);
  c.num_nextn_predict_layers = 1;
  TrainModel<double> m64 = std::move(*TrainModel<double>::Create(c));
  TrainModel<float> m32 = std::move(*TrainModel<float>::Create(c));
  m64.InitRandom(3);
  std::mt19937_64 rng(4);
  std::normal_distribution<double> dist(0.0, 1.0);
  GradPair out;
  for (int i = 0; i < m64.params().size(); ++i) {
    auto& t = m64.params().tensor(i);
    if (t.shape.size() == 2) {
      for (double& v : t.data) v = dist(rng) / std::sqrt(static_cast<double>(t.shape[1]));
    }
    // Values exactly representable in float, so both models hold the same weights.
    for (double& v : t.data) v = static_cast<double>(static_cast<float>(v));
    auto& t32 = m32.params().tensor(i);
    for (size_t j = 0; j < t.data.size(); ++j) t32.data[j] = static_cast<float>(t.data[j]);
    out.trainable.push_back(t.trainable);
  }
  const int64_t B = 2, T = 40;  // 80 rows: enough for the packed (multi-token) kernels
  std::vector<int32_t> seqs(B * (T + 1));
  for (auto& t : seqs) t = static_cast<int32_t>(rng() % static_cast<uint64_t>(c.vocab_size));
  LossOptions options;
  options.balance_alpha = 0.1;
  options.mtp_lambda = 0.3;
  out.g64 = ParamSet<double>::ZerosLike(m64.params());
  m64.ForwardBackward(Context{}, seqs.data(), B, T, options, &out.g64);
  ThreadPool pool(2);
  for (ops::Isa isa : {ops::Isa::kScalar, ops::Isa::kAvx2, ops::Isa::kAvx512}) {
    if (!ops::CpuSupports(isa)) continue;
    Context ctx{&pool, isa};
    ctx.bf16_compute = bf16_compute;
    auto g = ParamSet<float>::ZerosLike(m32.params());
    m32.ForwardBackward(ctx, seqs.data(), B, T, options, &g);
    out.g32.emplace_back(std::string(ops::IsaName(isa)), std::move(g));
  }
  return out;
}

// max |a - b| / max |b| over one tensor.
double MaxRelError(const std::vector<float>& a, const std::vector<double>& b) {
  double d = 0, m = 0;
  for (size_t j = 0; j < b.size(); ++j) {
    d = std::max(d, std::fabs(static_cast<double>(a[j]) - b[j]));
    m = std::max(m, std::fabs(b[j]));
  }
  return m > 0 ? d / m : 0.0;
}

// The float training path runs its products on the packed SIMD GEMMs of ops/ (transposed operands
// in the backward pass). Its gradients must equal the float64 ones to float rounding: with sums of
// at most a few hundred terms of similar magnitude the relative error stays below ~K·2^-24 ≈ 3e-5
// of each tensor's largest gradient; 1e-4 leaves room for the chains through attention. A
// transposed operand or a lost accumulation gives errors of order 1.
TEST(TrainGrad, FloatKernelsMatchFloat64OnEveryIsa) {
  const GradPair r = FloatAndDoubleGradients("tiny-v3", false);
  for (const auto& [isa, g] : r.g32) {
    for (int i = 0; i < r.g64.size(); ++i)
      EXPECT_LT(MaxRelError(g.tensor(i).data, r.g64.tensor(i).data), 1e-4)
          << isa << " " << r.g64.tensor(i).name;
  }
}

// BF16 compute rounds every product operand to bf16 (relative error <= 2^-9 each, so each product
// term is off by <= 2^-8 ≈ 0.4 %). From the loss to the first layer's weights a gradient passes
// through ~20 rounded products (lm_head, then two or three per sublayer of 3 layers + MTP), so the
// linear bound is 20 · 2^-8 ≈ 8 %; typical errors here are 1-4 %. A dense preset, because with MoE
// a rounding can flip an expert choice and move a gradient to another expert. They must also differ
// from float64 by more than f32 rounding (1e-3 is 10x the f32 bound above), or nothing was rounded.
TEST(TrainGrad, Bf16ComputeGradientsWithinBf16Rounding) {
  const GradPair r = FloatAndDoubleGradients("tiny-dense", true);
  for (const auto& [isa, g] : r.g32) {
    double worst = 0;
    for (int i = 0; i < r.g64.size(); ++i) {
      if (!r.trainable[static_cast<size_t>(i)]) continue;
      const double e = MaxRelError(g.tensor(i).data, r.g64.tensor(i).data);
      EXPECT_LT(e, 8e-2) << isa << " " << r.g64.tensor(i).name;
      worst = std::max(worst, e);
    }
    EXPECT_GT(worst, 1e-3) << isa;
  }
}

// The training forward against the independent reference on a checkpoint written by `dsv3 init`.
template <typename Real>
void CheckAgainstReference(const std::string& preset, double tol) {
  SCOPED_TRACE(preset);
  testing::TempDir dir;
  ModelConfig c = *PresetConfig(preset);
  RandomCheckpointOptions opts;
  opts.seed = 11;
  opts.mtp = true;
  ASSERT_TRUE(WriteRandomCheckpoint(c, opts, dir.path()).ok());
  auto cfg = LoadModelConfig(dir.path());
  ASSERT_TRUE(cfg.ok());
  auto made = TrainModel<Real>::Create(*cfg);
  ASSERT_TRUE(made.ok()) << made.status().message();
  ASSERT_TRUE(made->LoadFrom(dir.path()).ok());
  const std::vector<int32_t> tokens = {3, 17, 42, 99, 5, 150, 7, 64};
  std::vector<Real> logits, mtp_logits;
  Context ctx;
  made->Forward(ctx, tokens.data(), 1, static_cast<int64_t>(tokens.size()), &logits, &mtp_logits);
  reference::ReferenceOptions ro;
  ro.mtp = true;
  auto ref = reference::ReferenceForward(dir.path(), tokens, ro);
  ASSERT_TRUE(ref.ok()) << ref.status().message();
  auto rel = [](const std::vector<Real>& a, const std::vector<double>& b) {
    EXPECT_EQ(a.size(), b.size());
    double d = 0, m = 0;
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
      d = std::max(d, std::fabs(static_cast<double>(a[i]) - b[i]));
      m = std::max(m, std::fabs(b[i]));
    }
    return d / m;
  };
  EXPECT_LT(rel(logits, ref->logits), tol);
  EXPECT_LT(rel(mtp_logits, ref->mtp_logits), tol);
}

// Float: the same f32 bound the inference model meets (model_reference_test.cpp explains 1e-5).
TEST(TrainForward, MatchesReferenceFloat) {
  for (const char* p : {"tiny-v3", "tiny-v2", "tiny-moonlight", "tiny-dense"})
    CheckAgainstReference<float>(p, 1e-5);
}
// Double: only the summation order differs from the reference, ~1e-14; 1e-10 is the bound.
TEST(TrainForward, MatchesReferenceDouble) {
  for (const char* p : {"tiny-v3", "tiny-v2-lite", "tiny-halfsplit", "tiny-kimi"})
    CheckAgainstReference<double>(p, 1e-10);
}

}  // namespace
}  // namespace dsv3::train
