#include "model/moe.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "model/parallel_rows.h"
#include "model/router.h"
#include "ops/int8_dot.h"
#include "ops/row_tiles.h"
#include "ops/vector_ops.h"

namespace dsv3 {

namespace {

// Rows per chunk of the row copies and sums below: 32 rows of DeepSeek-V3's 7168 floats are
// ~1 MB, so a prefill's T*k rows split over the threads and decoding's 8 stay on one.
constexpr int64_t kRowGrain = 32;

// fn(thread, begin, end) over units [0, n), balanced at run time over ctx's pool
// (ParallelForStealing), or all on the calling thread without one.
template <typename Fn>
void StealUnits(const ops::KernelContext& ctx, int64_t n, Fn&& fn) {
  if (ctx.pool == nullptr || ctx.pool->num_threads() <= 1) {
    fn(0, int64_t{0}, n);
    return;
  }
  ctx.pool->ParallelForStealing(n, nullptr, [&](int thread, UnitQueue& queue) {
    int64_t begin = 0, end = 0;
    while (queue.Next(&begin, &end)) fn(thread, begin, end);
  });
}

// Output rows (of H) per unit of SummedDownProjections, at most: each unit reads every piece's
// layout. Fewer (multiples of 16, the int8 row tiles) where the threads would get under four
// units each.
constexpr int64_t kDownRows = 128;

// Whether SummedDownProjections can take this batch: every down projection on the int8 path.
bool DownProjectionsInt8(const ops::KernelContext& ctx, const MoeWeights& w,
                         const std::vector<int32_t>& expert_offsets) {
  if (w.has_shared && !ops::UsesInt8Dot(ctx, w.shared_experts.down_proj)) return false;
  for (size_t e = 0; e + 1 < expert_offsets.size(); ++e)
    if (expert_offsets[e + 1] > expert_offsets[e] && !ops::UsesInt8Dot(ctx, w.experts[e].down_proj))
      return false;
  return true;
}

// out [T, H] = shared expert's down projection of h_shared [T, I_shared] plus, per token, its
// slots' routing weight times their experts' down projections of h [T*k, I] (expert-ordered
// rows), where h = SiLU(gate) * up and h_shared likewise: formed here, in place in gate and
// gate_shared, each piece's rows just before they are laid out (elementwise, so the values of
// MoeForward's pass over all rows, which the general path takes: read while in cache, and no
// parallel region of its own; bench-medium q4_0 pp512, builds alternating, the experts' phases
// 0.2-1.9 % less time in 4 of 4 pairs). Added in expert order: the sum MoeForward's general path
// forms, the same bits (the same fma per element in the same order, each product's outputs as
// MatMul gives them). Computed per range of kDownRows output rows across all experts, so the T*k
// expert outputs never exist as a whole: before, they went to memory ([T*k, H], 37.7 MB for
// bench-medium's pp512) and were read back for the sum. Each piece (an expert's tokens, at most one
// activation chunk) is laid out once for the int8 kernels, then every row range reads the layouts.
// bench-medium q4_0 pp512, forwards alternating with the general path in one process: the down
// projections and sums 16.8-18.9 ms per layer against 17.6-20.2 (2-6 % less, 3 runs); the kernels'
// own time is unchanged (~300 G op/s a core at 512 columns), the sums' memory round trip is what
// goes.
void SummedDownProjections(const MoeWeights& w, const ops::KernelContext& ctx, int64_t T, int64_t k,
                           int64_t H, int64_t I, float* gate, const float* up, float* gate_shared,
                           const float* up_shared, const float* routing_weights, MoeScratch& s,
                           float* out) {
  s.down_pieces.clear();
  int64_t bytes = 0, max_n = 0, max_shared = 0;
  const auto add = [&](const ops::WeightView* wv, float* g, const float* u, int64_t n,
                       int64_t first, bool shared) {
    const int64_t chunk = ops::Int8ChunkTokens(wv->cols);
    for (int64_t t0 = 0; t0 < n; t0 += chunk) {
      const int64_t m = std::min(chunk, n - t0);
      s.down_pieces.push_back(
          {wv, g + t0 * wv->cols, u + t0 * wv->cols, m, first + t0, bytes, shared});
      bytes += ops::Int8ActBytes(m, wv->cols);  // a multiple of 64
      if (shared)
        max_shared = std::max(max_shared, m);
      else
        max_n = std::max(max_n, m);
    }
  };
  if (w.has_shared) add(&w.shared_experts.down_proj, gate_shared, up_shared, T, 0, true);
  for (size_t e = 0; e + 1 < s.expert_offsets.size(); ++e) {
    const int64_t begin = s.expert_offsets[e], n = s.expert_offsets[e + 1] - begin;
    if (n > 0) add(&w.experts[e].down_proj, gate + begin * I, up + begin * I, n, begin, false);
  }
  uint8_t* layouts = reinterpret_cast<uint8_t*>(s.down_layouts.Get((bytes + 3) / 4));
  const int64_t pieces = static_cast<int64_t>(s.down_pieces.size());
  StealUnits(ctx, pieces, [&](int, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const MoeScratch::DownPiece& p = s.down_pieces[i];
      ops::SiluMul(ctx.isa, p.x, p.up, p.n * p.w->cols);
      ops::LayOutInt8(ctx.isa, p.x, p.n, *p.w, layouts + p.offset);
    }
  });
  // Per thread, one piece's outputs: [max_n, unit] compact, or [max_n, H] with only the unit's
  // columns written and read (a shared piece's: compact only).
  const int threads = ctx.pool != nullptr ? ctx.pool->num_threads() : 1;
  const int64_t unit = std::clamp<int64_t>(H / (4 * threads) / 16 * 16, 16, kDownRows);
  const int64_t per_thread = std::max(max_n * H, max_shared * unit);
  float* rows = s.down_rows.Get(threads * per_thread);
  StealUnits(ctx, (H + unit - 1) / unit, [&](int thread, int64_t begin, int64_t end) {
    float* y = rows + thread * per_thread;
    for (int64_t r0 = begin * unit; r0 < std::min(H, end * unit); r0 += unit) {
      const int64_t r1 = std::min(H, r0 + unit);  // out[:, r0:r1]
      if (!w.has_shared)
        for (int64_t t = 0; t < T; ++t) std::fill(out + t * H + r0, out + t * H + r1, 0.0f);
      for (const MoeScratch::DownPiece& p : s.down_pieces) {
        const uint8_t* layout = layouts + p.offset;
        // The piece's outputs for these rows: [p.n, r1 - r0] in y where the rows can be a weight
        // of their own, else y's [p.n, H] rows. Rows H floats apart put a 16-token tile's stores
        // in one L1 set (H = 2048: 8 KB apart): bench-medium q4_0 pp512, forwards alternating
        // between both in one process, the down projections 13.8 -> 12.4 ms a layer (2 runs).
        const int64_t n = r1 - r0;
        const bool compact = ops::Int8RowRangeSharesLayout(*p.w, r0, n);
        if (p.shared) {  // into out, its tokens' rows [p.n, H]: copied from y where compact
          // Written straight into out, as before, bench-medium q8_0 pp512 (calls alternating in
          // one process): this function 1-2 % more time (4 of 4 runs).
          if (!compact) {
            ops::MatMulInt8Rows(ctx.isa, layout, p.n, *p.w, r0, r1, out + p.first_row * H);
            continue;
          }
          ops::MatMulInt8Rows(ctx.isa, layout, p.n, ops::Int8RowRange(*p.w, r0, n), 0, n, y);
          for (int64_t i = 0; i < p.n; ++i)  // out[first_row + i, r0:r1]
            std::memcpy(out + (p.first_row + i) * H + r0, y + i * n,
                        static_cast<size_t>(n) * sizeof(float));
          continue;
        }
        if (compact)
          ops::MatMulInt8Rows(ctx.isa, layout, p.n, ops::Int8RowRange(*p.w, r0, n), 0, n, y);
        else
          ops::MatMulInt8Rows(ctx.isa, layout, p.n, *p.w, r0, r1, y);
        const float* first = compact ? y : y + r0;  // token i's n outputs at first + i * ld
        const int64_t ld = compact ? n : H;
        for (int64_t i = 0; i < p.n; ++i) {
          const int32_t slot = s.token_order[p.first_row + i];
          ops::Axpy(ctx.isa, routing_weights[slot], first + i * ld, n, out + (slot / k) * H + r0);
        }
      }
    }
  });
}

}  // namespace

void MoeForward(const ModelConfig& c, const MoeWeights& w, const ops::KernelContext& ctx,
                const float* x, int64_t T, int64_t k, MoeScratch& s, float* out,
                PhaseProfile* profile) {
  const int64_t H = c.hidden_size, E = c.n_routed_experts;
  PhaseClock clock(profile);

  // gate_logits: [T, E]; routing: [T, k] experts and weights
  // The router's scores pick discrete experts, so they keep exact products even under the
  // bf16-dot path (a flipped choice moves a token's output far more than rounding does);
  // the gate is tiny next to the experts.
  float* gate_logits = s.gate_logits.Get(T * E);
  ops::KernelContext exact = ctx;
  exact.bf16_dot = false;
  ops::MatMul(exact, x, T, w.gate, gate_logits);
  s.routing_experts.resize(static_cast<size_t>(T * k));
  float* routing_weights = s.routing_weights.Get(T * k);
  // Tokens choose independently: split over the threads from 33 tokens on (a prefill's 512 took
  // 0.7-0.8 ms per layer on one thread, bench-medium; 0.5 split); decoding stays on this thread.
  ParallelRows(ctx, T, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      RouteToken(c, gate_logits + t * E, w.e_score_correction_bias, k,
                 s.routing_experts.data() + t * k, routing_weights + t * k);
  });

  // Group the (token, slot) pairs by expert: counting sort into token_order.
  s.expert_offsets.assign(static_cast<size_t>(E + 1), 0);
  for (int64_t i = 0; i < T * k; ++i) ++s.expert_offsets[s.routing_experts[i] + 1];
  for (int64_t e = 0; e < E; ++e) s.expert_offsets[e + 1] += s.expert_offsets[e];
  s.token_order.resize(static_cast<size_t>(T * k));
  s.position.resize(static_cast<size_t>(T * k));
  s.expert_cursor.assign(s.expert_offsets.begin(), s.expert_offsets.end() - 1);
  for (int64_t i = 0; i < T * k; ++i) {
    const int32_t row = s.expert_cursor[s.routing_experts[i]]++;
    s.token_order[row] = static_cast<int32_t>(i);
    s.position[i] = row;
  }

  // Each expert's tokens, rows [expert_offsets[e], expert_offsets[e+1]) in expert order, as the
  // x of its products: on the int8 path the quantizer reads them from x in place (row_token), on
  // the bf16-dot path's packed form (8+ tokens) the rounding to bf16 does; otherwise they are
  // gathered into [T*k, H] first. Then all experts (and the shared expert) run as one batch of
  // products: one parallel region for gate+up, one for down.
  const int64_t I = c.moe_intermediate_size;
  const int64_t I_shared = w.has_shared ? w.shared_experts.intermediate : 0;
  s.row_token.resize(static_cast<size_t>(T * k));
  for (int64_t i = 0; i < T * k; ++i) s.row_token[i] = static_cast<int32_t>(s.token_order[i] / k);
  bool in_place = true;
  for (int64_t e = 0; e < E && in_place; ++e)
    in_place = s.expert_offsets[e + 1] == s.expert_offsets[e] ||
               (ops::UsesInt8Dot(ctx, w.experts[e].gate_proj) &&
                ops::UsesInt8Dot(ctx, w.experts[e].up_proj));
  clock.Lap(Phase::kRouter);
  // On the int8 path x is quantized here once, and every gate and up product lays out its
  // tokens' rows from that (the same bits): before, each token was quantized again by each of
  // its k experts and by the shared expert. bench-medium q4_0 pp512, forwards alternating
  // between both in one process: 1-3 % less time (3 runs).
  ops::Int8Activations x_int8;
  if (in_place) {
    const int64_t bytes = ops::Int8ActivationsBytes(T, H);
    uint8_t* buf = reinterpret_cast<uint8_t*>(s.x_int8.Get((bytes + 3) / 4));
    x_int8 = ops::QuantizeActivations(ctx, x, T, H, buf);
  }
  // Otherwise the experts whose products read their rows in place (ops::ReadsRowsInPlace:
  // bf16-dot with 8+ tokens, or int8 in a model whose experts mix formats) skip the gathering: a
  // prefill's T * k rows (33 MB for bench-medium's pp512) were copied out, then read back by the
  // gate and the up product. bench-medium pp512, forwards alternating in one process: BF16
  // 0.6-3.0 % less time (5 runs), FP8 level (3).
  s.rows_in_place.assign(static_cast<size_t>(E), 0);
  for (int64_t e = 0; e < E && !in_place; ++e) {
    const int64_t n = s.expert_offsets[e + 1] - s.expert_offsets[e];
    s.rows_in_place[e] = ops::ReadsRowsInPlace(ctx, w.experts[e].gate_proj, n) &&
                         ops::ReadsRowsInPlace(ctx, w.experts[e].up_proj, n);
  }
  float* gathered = nullptr;
  if (!in_place) {
    gathered = s.gathered.Get(T * k * H);
    ParallelRows(ctx, T * k, kRowGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        if (s.rows_in_place[s.routing_experts[s.token_order[i]]]) continue;
        std::memcpy(gathered + i * H, x + int64_t{s.row_token[i]} * H,
                    static_cast<size_t>(H) * sizeof(float));
      }
    });
  }
  // Expert e's x rows from row `begin` on.
  const auto expert_x = [&](int64_t e, int64_t begin, ops::MatMulJob job) {
    if (in_place || s.rows_in_place[e]) {
      job.x = x;
      job.x_rows = s.row_token.data() + begin;
      if (in_place) job.xq = &x_int8;
    } else {
      job.x = gathered + begin * H;
    }
    return job;
  };
  float* gate = s.gate.Get(T * k * I + T * I_shared);  // [T*k, I] then shared [T, I_shared]
  float* up = s.up.Get(T * k * I + T * I_shared);
  float* gate_shared = gate + T * k * I;
  float* up_shared = up + T * k * I;

  s.jobs.clear();
  for (int64_t e = 0; e < E; ++e) {
    const int64_t begin = s.expert_offsets[e], n = s.expert_offsets[e + 1] - begin;
    if (n == 0) continue;
    s.jobs.push_back(expert_x(e, begin, {nullptr, n, &w.experts[e].gate_proj, gate + begin * I}));
    s.jobs.push_back(expert_x(e, begin, {nullptr, n, &w.experts[e].up_proj, up + begin * I}));
  }
  if (w.has_shared) {
    const ops::Int8Activations* xq = in_place ? &x_int8 : nullptr;
    s.jobs.push_back({x, T, &w.shared_experts.gate_proj, gate_shared, nullptr, xq});
    s.jobs.push_back({x, T, &w.shared_experts.up_proj, up_shared, nullptr, xq});
  }
  ops::MatMulBatch(ctx, s.jobs.data(), static_cast<int64_t>(s.jobs.size()));
  if (T > kRowGrain && s.sum_down_per_rows && DownProjectionsInt8(ctx, w, s.expert_offsets)) {
    clock.Lap(Phase::kExpertsIn);
    SummedDownProjections(w, ctx, T, k, H, I, gate, up, gate_shared, up_shared, routing_weights, s,
                          out);
    clock.Lap(Phase::kExpertsOut);
    return;
  }
  // Elementwise, so any split gives the same values.
  ParallelRows(ctx, T * k + (I_shared > 0 ? T : 0), kRowGrain, [&](int64_t begin, int64_t end) {
    // rows [begin, end) of gate/up: routed rows of I floats, then shared rows of I_shared
    const int64_t routed = T * k;
    const auto offset = [&](int64_t row) {
      return row <= routed ? row * I : routed * I + (row - routed) * I_shared;
    };
    ops::SiluMul(ctx.isa, gate + offset(begin), up + offset(begin), offset(end) - offset(begin));
  });
  clock.Lap(Phase::kExpertsIn);

  float* expert_out = s.expert_out.Get(T * k * H + T * H);  // [T*k, H] then shared [T, H]
  float* out_shared = expert_out + T * k * H;
  s.jobs.clear();
  for (int64_t e = 0; e < E; ++e) {
    const int64_t begin = s.expert_offsets[e], n = s.expert_offsets[e + 1] - begin;
    if (n == 0) continue;
    s.jobs.push_back({gate + begin * I, n, &w.experts[e].down_proj, expert_out + begin * H});
  }
  if (w.has_shared) s.jobs.push_back({gate_shared, T, &w.shared_experts.down_proj, out_shared});
  ops::MatMulBatch(ctx, s.jobs.data(), static_cast<int64_t>(s.jobs.size()));

  // out[t] = shared(x_t) + sum over its slots of weight * expert output, the slots added in
  // expert order (their rows' order), as the Hugging Face model adds each expert's outputs.
  // Few tokens (decoding): one pass over the rows on this thread. Many: the tokens split over
  // the threads, each token's rows sorted back into expert order, so the sums are the same bits.
  // (Decoding through the per-token form was ~2 % slower: behind in 13 of 17 interleaved tg64
  // pairs, where this one-pass form is level.)
  if (T <= kRowGrain) {
    if (w.has_shared) {
      std::memcpy(out, out_shared, static_cast<size_t>(T * H) * sizeof(float));
    } else {
      std::memset(out, 0, static_cast<size_t>(T * H) * sizeof(float));
    }
    for (int64_t i = 0; i < T * k; ++i) {
      const int32_t slot = s.token_order[i];
      ops::Axpy(ctx.isa, routing_weights[slot], expert_out + i * H, H, out + (slot / k) * H);
    }
    clock.Lap(Phase::kExpertsOut);
    return;
  }
  ParallelRows(ctx, T, kRowGrain, [&](int64_t begin, int64_t end) {
    int32_t few[16];
    std::vector<int32_t> many;  // only for more than 16 experts per token
    if (k > 16) many.resize(static_cast<size_t>(k));
    int32_t* rows = k > 16 ? many.data() : few;
    for (int64_t t = begin; t < end; ++t) {
      float* out_t = out + t * H;
      if (w.has_shared) {
        std::memcpy(out_t, out_shared + t * H, static_cast<size_t>(H) * sizeof(float));
      } else {
        std::memset(out_t, 0, static_cast<size_t>(H) * sizeof(float));
      }
      std::copy(s.position.begin() + t * k, s.position.begin() + (t + 1) * k, rows);
      std::sort(rows, rows + k);
      for (int64_t j = 0; j < k; ++j) {
        const int32_t slot = s.token_order[rows[j]];
        ops::Axpy(ctx.isa, routing_weights[slot], expert_out + int64_t{rows[j]} * H, H, out_t);
      }
    }
  });
  clock.Lap(Phase::kExpertsOut);
}

}  // namespace dsv3
