#include "model/mla.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <type_traits>

#include "model/parallel_rows.h"
#include "ops/gemm.h"
#include "ops/int8_columns.h"
#include "ops/int8_dot.h"
#include "ops/mla_attention.h"
#include "ops/row_tiles.h"
#include "ops/transpose.h"
#include "ops/vector_ops.h"

namespace dsv3 {

namespace {

int NumThreads(const ops::KernelContext& ctx) {
  return ctx.pool == nullptr ? 1 : ctx.pool->num_threads();
}

// Splits the T*nh (token, head) items of the absorbed attention over the pool's threads in
// contiguous ranges of about equal cost and calls fn(thread, begin, end). Token t attends to
// start_pos + t + 1 positions, so under a causal mask later tokens cost more: an even split of
// the items would leave the first thread idle for most of a prefill. Which thread computes an
// item never changes its result (ops::MlaAttention's and MlaAttentionPartial's heads and
// MergeMlaPartials' queries are independent).
template <typename Fn>
void ForEachBalancedHeadRange(const ops::KernelContext& ctx, const ModelConfig& c, int64_t T,
                              int64_t start_pos, Fn&& fn) {
  const int64_t nh = c.num_attention_heads, items = T * nh;
  const int threads = NumThreads(ctx);
  if (threads == 1 || items <= 1) {
    fn(0, int64_t{0}, items);
    return;
  }
  // Cost of one head of token t in units of one cached position (2r + dr multiply-adds):
  // start_pos + t + 1 positions plus the W_UK and W_UV products ((dn + dv) * r).
  const double r = static_cast<double>(c.kv_lora_rank);
  const double fixed = static_cast<double>(c.qk_nope_head_dim + c.v_head_dim) * r /
                       (2.0 * r + static_cast<double>(c.qk_rope_head_dim));
  const double first = static_cast<double>(start_pos + 1) + fixed;
  // Cost of the first k items: whole tokens 0 .. t-1, then h heads of token t.
  const auto prefix_cost = [&](int64_t k) {
    const int64_t token = k / nh, head = k % nh;
    const double t = static_cast<double>(token), h = static_cast<double>(head);
    return static_cast<double>(nh) * (t * first + t * (t - 1.0) / 2.0) + h * (first + t);
  };
  const double total = prefix_cost(items);
  // The first item whose prefix cost reaches total * i / threads.
  const auto boundary = [&](int i) {
    if (i == threads) return items;
    const double target = total * i / threads;
    int64_t lo = 0, hi = items;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (prefix_cost(mid) < target)
        lo = mid + 1;
      else
        hi = mid;
    }
    return lo;
  };
  ctx.pool->RunOnAll([&](int t) {
    const int64_t begin = boundary(t), end = boundary(t + 1);
    if (begin < end) fn(t, begin, end);
  });
}

// Head h's W_UK [dn, r] and W_UV [dv, r] as rows of a weight: the halves' copies where the load
// made them (weights.h, SplitKvBProj: each half's heads back to back, W_UV in the tiles of its
// format's decode kernel), else kv_b_proj's rows (per head dn W_UK rows, then dv W_UV rows).
struct HeadRows {
  const WeightView* w;
  int64_t first;
};
HeadRows KeyRows(const ModelConfig& c, const AttentionWeights& w, int64_t h) {
  if (w.kv_b_uk.data != nullptr) return {&w.kv_b_uk, h * c.qk_nope_head_dim};
  return {&w.kv_b_proj, h * (c.qk_nope_head_dim + c.v_head_dim)};
}
HeadRows ValueRows(const ModelConfig& c, const AttentionWeights& w, int64_t h) {
  if (w.kv_b_uv.data != nullptr) return {&w.kv_b_uv, h * c.v_head_dim};
  return {&w.kv_b_proj, h * (c.qk_nope_head_dim + c.v_head_dim) + c.qk_nope_head_dim};
}

// q_lat_h [r] = W_UK[h]^T q_nope [dn]: on int8 activations from the int8 column layout where the
// load made it (ops/int8_columns.h, vpdpbusd), from the FP8 column layout where it made that
// (ops/fp8_columns.h, f32), else W_UK's rows decoded into registers and summed in f32
// (AccumulateRows; row: [r] scratch).
void KeyProduct(const ModelConfig& c, const AttentionWeights& w, bool int8_dot, ops::Isa isa,
                int64_t h, const float* q_nope, float* q_lat_h, float* row) {
  const ops::Int8Columns& columns = w.kv_b_uk_columns;
  if (int8_dot && columns.codes != nullptr) {
    ops::Int8Columns head = columns;  // W_UK[h]
    head.codes += h * ops::Int8ColumnsBytes(columns.dtype, columns.n, columns.m);
    head.scale += h * ops::Int8ColumnsScales(columns.n, columns.m);
    return ops::VecMatInt8(isa, head, q_nope, q_lat_h);
  }
  const ops::Fp8Columns& fp8 = w.kv_b_uk_fp8;
  if (fp8.codes != nullptr) {
    ops::Fp8Columns head = fp8;  // W_UK[h]
    head.codes += h * ops::Fp8ColumnsBytes(fp8.n, fp8.m);
    head.scale += h * ops::Fp8ColumnsScales(fp8.n, fp8.m, fp8.block_rows);
    return ops::VecMatFp8(isa, head, q_nope, q_lat_h);
  }
  const HeadRows k = KeyRows(c, w, h);  // W_UK[h]
  std::fill(q_lat_h, q_lat_h + c.kv_lora_rank, 0.0f);
  ops::AccumulateRows(isa, *k.w, k.first, c.qk_nope_head_dim, q_nope, q_lat_h, row);
}

// W_UV[h] o_lat_h -> o_h [dv] (kv_out: [kv_b_proj rows] scratch for the matrix-vector kernel's
// output, which it writes at the rows' own places).
void ValueProduct(const ModelConfig& c, const AttentionWeights& w, const ops::KernelContext& one,
                  int64_t h, const float* o_lat_h, float* kv_out, float* o_h) {
  const HeadRows v = ValueRows(c, w, h);
  const int64_t dv = c.v_head_dim;
  ops::MatMulRowRange(one, o_lat_h, 1, *v.w, v.first, v.first + dv, kv_out);
  std::copy(kv_out + v.first, kv_out + v.first + dv, o_h);
}

// Absorbed attention (spec §5.4) for heads [h_begin, h_end) of one token:
//   q_lat = W_UK[h]^T q_nope;  o_lat = sum_j softmax_j(scale (q_lat . c_j + q_pe . k_pe_j)) c_j;
//   o = W_UV[h] o_lat.
// The heads share one pass over the latent cache (ops::MlaAttention). W_UK and W_UV are read as
// stored (W_UK by KeyProduct, W_UV by the matrix-vector kernel of its format), so
// decoding reads kv_b_proj's bytes in its format instead of an f32 copy (2x the bytes of BF16,
// 4x FP8 and q8_0, 8x q4_0).
//   q_token: [nh, dn+dr]   o_token: [nh, dv]   q_lat, o_lat: [h_end - h_begin, r]   row: [r]
//   kv_out: [nh*(dn+dv)] scratch
void AbsorbedHeads(const ModelConfig& c, const RopeParams& rope, const AttentionWeights& w,
                   bool int8_dot, ops::Isa isa, const float* q_token, int64_t h_begin,
                   int64_t h_end, int64_t num_keys, const LayerKvCache& cache, float* q_lat,
                   float* o_lat, float* row, float* kv_out, float* o_token) {
  const int64_t dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim, dv = c.v_head_dim;
  const int64_t r = c.kv_lora_rank, qk = dn + dr, heads = h_end - h_begin;
  for (int64_t h = h_begin; h < h_end; ++h)
    KeyProduct(c, w, int8_dot, isa, h, q_token + h * qk, q_lat + (h - h_begin) * r, row);
  const ops::MlaQuery query{q_lat, q_token + h_begin * qk + dn, qk, heads,
                            static_cast<float>(rope.softmax_scale)};
  const ops::LatentCacheView view{cache.latent.data(), cache.rope_key.data(), num_keys, r, dr};
  ops::MlaAttention(isa, query, view, o_lat);  // o_lat: [heads, r]
  // With int8 activations (a q8_0 / q4_0 kv_b_proj), o_lat is quantized per 32-column block as
  // the x of every other product is; no bf16 activations (those are for prefill only). (The
  // batched absorbed path for T >= 2, AbsorbedBatchedBlock, multiplies the f32 copy instead.)
  ops::KernelContext one{nullptr, isa};
  one.int8_dot = int8_dot;
  for (int64_t h = h_begin; h < h_end; ++h)
    ValueProduct(c, w, one, h, o_lat + (h - h_begin) * r, kv_out, o_token + h * dv);
}

// Decoding one token against a long cache (AbsorbedHeads otherwise): the positions are cut into
// parts of equal length, each attended by all heads on one thread (ops::MlaAttentionPartial)
// and merged per head (ops::MergeMlaPartials), so each thread reads its parts of the cache
// instead of all of it (the head split reads the whole cache on every thread). The parts depend
// on the context length only, never on the threads, so neither does the result.
// bench-medium shapes, 12 layers' caches of 4096 positions, 2 threads: 11.4 ms per token for the
// head split, 8.0 split by positions; 1024 positions 2.7 and 2.0.
constexpr int64_t kSplitKeysFrom = 512;  // cached positions (with the new token's)
constexpr int64_t kMinKeyPart = 256;     // positions per part, a multiple of the kernels' blocks
constexpr int64_t kMaxKeyParts = 16;

int64_t KeyPartLength(int64_t num_keys) {
  const int64_t len = std::max(kMinKeyPart, (num_keys + kMaxKeyParts - 1) / kMaxKeyParts);
  return (len + 15) / 16 * 16;
}

//   q_token: [nh, dn+dr] (rope applied)   o_token: [nh, dv]
void AbsorbedSplitKeys(const ModelConfig& c, const RopeParams& rope, const AttentionWeights& w,
                       const ops::KernelContext& ctx, const float* q_token, int64_t num_keys,
                       const LayerKvCache& cache, MlaScratch& scratch, float* o_token) {
  const int64_t nh = c.num_attention_heads, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim;
  const int64_t dv = c.v_head_dim, r = c.kv_lora_rank, qk = dn + dr;
  const int64_t part = KeyPartLength(num_keys), parts = (num_keys + part - 1) / part;
  const int threads = NumThreads(ctx);
  // Each array starts on a 64-byte line (the buffer does): sizes rounded up to 16 floats.
  const auto lines = [](int64_t floats) { return (floats + 15) / 16 * 16; };
  const int64_t per_thread = lines(r) + lines(nh * (dn + dv));  // a kv_b_proj row, W_UV's output
  float* q_lat = scratch.split_keys.Get(2 * lines(nh * r) + lines(parts * nh * r) +
                                        2 * lines(parts * nh) + threads * per_thread);
  float* o_lat = q_lat + lines(nh * r);             // [nh, r]
  float* o_parts = o_lat + lines(nh * r);           // [parts, nh, r]
  float* max = o_parts + lines(parts * nh * r);     // [parts, nh]
  float* sum = max + lines(parts * nh);             // [parts, nh]
  float* thread_scratch = sum + lines(parts * nh);  // per thread: row [r], kv_out [nh (dn + dv)]
  // fn on every thread. The std::function RunOnAll takes holds one reference to fn, which fits
  // its small buffer: no allocation per call (fn itself captures many).
  const auto on_threads = [&](auto&& fn) {
    if (threads == 1) return fn(0);
    ctx.pool->RunOnAll([&fn](int t) { fn(t); });
  };
  // q_lat[h] = W_UK[h]^T q_nope[h]: the heads split over the threads.
  on_threads([&](int t) {
    float* row = thread_scratch + t * per_thread;
    for (int64_t h = nh * t / threads; h < nh * (t + 1) / threads; ++h)
      KeyProduct(c, w, ctx.int8_dot, ctx.isa, h, q_token + h * qk, q_lat + h * r, row);
  });
  // Every head over each part of the cache: the parts split over the threads.
  on_threads([&](int t) {
    const ops::MlaQuery query{q_lat, q_token + dn, qk, nh, static_cast<float>(rope.softmax_scale)};
    for (int64_t p = parts * t / threads; p < parts * (t + 1) / threads; ++p) {
      const int64_t begin = p * part, n = std::min(part, num_keys - begin);
      const ops::LatentCacheView view{cache.latent.data() + begin * r,
                                      cache.rope_key.data() + begin * dr, n, r, dr};
      ops::MlaAttentionPartial(ctx.isa, query, view, o_parts + p * nh * r, max + p * nh,
                               sum + p * nh);
    }
  });
  // o_lat[h] from the parts, then o[h] = W_UV[h] o_lat[h]: the heads split over the threads.
  on_threads([&](int t) {
    const int64_t h_begin = nh * t / threads, h_end = nh * (t + 1) / threads;
    ops::MergeMlaPartials(parts, nh, r, h_begin, h_end, o_parts, max, sum, o_lat);
    float* kv_out = thread_scratch + t * per_thread + lines(r);
    ops::KernelContext one{nullptr, ctx.isa};
    one.int8_dot = ctx.int8_dot;
    for (int64_t h = h_begin; h < h_end; ++h)
      ValueProduct(c, w, one, h, o_lat + h * r, kv_out, o_token + h * dv);
  });
}

// Calls fn(thread, h) for every head, the heads split over ctx's pool in contiguous ranges.
template <typename Fn>
void ForEachHead(const ops::KernelContext& ctx, int64_t nh, Fn&& fn) {
  const int threads = NumThreads(ctx);
  if (threads <= 1) {
    for (int64_t h = 0; h < nh; ++h) fn(0, h);
    return;
  }
  // One captured pointer keeps the lambda in std::function's small buffer (no allocation).
  struct Args {
    int64_t nh;
    int threads;
    std::remove_reference_t<Fn>* fn;
  } const args{nh, threads, &fn};
  ctx.pool->RunOnAll([a = &args](int t) {
    for (int64_t h = a->nh * t / a->threads; h < a->nh * (t + 1) / a->threads; ++h) (*a->fn)(t, h);
  });
}

// kv_b_proj's rows [first, first + n) dequantised into out [n, r], for the f32 products below:
// per call and head, in place of an f32 copy of the whole matrix kept from the load (4.1 GB for
// DeepSeek-V3: 61 layers of 32768 x 512 floats). The same values such a copy held (DequantizeRow
// equals the scalar reference bit for bit on every ISA), so the same results; the cost, r (dn + dv)
// values a head, is one token's worth of the products they feed.
void DequantizeKvBRows(ops::Isa isa, const ops::WeightView& kv_b, int64_t first, int64_t n,
                       float* out) {
  for (int64_t i = 0; i < n; ++i) ops::DequantizeRow(isa, kv_b, first + i, out + i * kv_b.cols);
}

// The absorbed path for several tokens where ops::Gemm has a packed kernel: the W_UK and W_UV
// products of all T tokens run per head as two GEMMs ([T, dn] x [dn, r] and [T, r] x [r, dv])
// instead of T matrix-vector products each. Between them, every token of the block sees the
// positions [0, start_pos + 1) (the cache before the block and the block's first token), and
// token t also the block's tokens 1 .. t (itself included). Each thread takes its (token, head)
// queries kPassQueries at a time: that common prefix attended once for all of them (one pass of
// the SIMD kernels, each block of cache rows serving 128 queries instead of one token's heads),
// then each token's own positions, both as unnormalised parts (ops::MlaAttentionPartial), merged
// per query (ops::MergeMlaPartials) while the parts are still in the L2. The parts depend on
// start_pos and the token only, never on the threads. bench-medium's pp64 @ d4096, calls
// alternating with the per-token form in one process: the attention 2-8 % less time (7 runs).
// The fewer heads a model has, the more it gains: with DeepSeek-V3's 128 one token already fills
// a pass. (One call for a thread's whole range and one merge after it: the same time within
// ±4 %, and parts for a whole block, 64 MiB more scratch for DeepSeek-V3.)
//   q: [T, nh, dn+dr] (rope applied)   o: [T, nh*dv]
// Tokens per block: q_lat and o_lat of a block (2 x 128 x nh x r floats, 64 MiB for DeepSeek-V3)
// instead of the whole chunk's, and per thread the parts of kPassQueries queries (512 KiB).
constexpr int64_t kAbsorbedBlock = 128;
constexpr int64_t kPassQueries = ops::kMlaHeadsPerPass;

void AbsorbedBatchedBlock(const ModelConfig& c, const RopeParams& rope, const AttentionWeights& w,
                          const ops::KernelContext& ctx, const float* q, int64_t T,
                          int64_t start_pos, const LayerKvCache& cache, MlaScratch& scratch,
                          float* o) {
  const int64_t nh = c.num_attention_heads, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim;
  const int64_t dv = c.v_head_dim, r = c.kv_lora_rank, qk = dn + dr;
  // Per thread: the two parts' sums [2, kPassQueries, r], then max and sum [2, kPassQueries].
  const int64_t per_thread = 2 * kPassQueries * r + 4 * kPassQueries;
  float* q_lat = scratch.latent_q_o.Get(2 * kAbsorbedBlock * nh * r +
                                        NumThreads(ctx) * per_thread);  // [T, nh, r]
  float* o_lat = q_lat + kAbsorbedBlock * nh * r;                       // [T, nh, r]
  float* thread_parts = o_lat + kAbsorbedBlock * nh * r;
  const ops::KernelContext one{nullptr, ctx.isa};
  // Per thread: one head's W_UK [dn, r] or W_UV [dv, r] in f32.
  const int64_t head_floats = std::max(dn, dv) * r;
  float* head_f32 = scratch.head_f32.Get(NumThreads(ctx) * head_floats);
  ForEachHead(ctx, nh, [&](int thread, int64_t h) {
    float* w_uk = head_f32 + thread * head_floats;  // W_UK[h]: [dn, r]
    DequantizeKvBRows(ctx.isa, w.kv_b_proj, h * (dn + dv), dn, w_uk);
    // q_lat[t, h, :] = q_nope[t, h, :] · W_UK[h]:  A(t, d) = q[t, h, d], B(i, d) = W_UK[d, i]
    ops::Gemm(one, T, r, dn, {q + h * qk, nh * qk, false}, {w_uk, r, true}, q_lat + h * r, nh * r,
              false);
  });
  const float scale = static_cast<float>(rope.softmax_scale);
  const int64_t prefix = start_pos + 1;
  const ops::LatentCacheView common{cache.latent.data(), cache.rope_key.data(), prefix, r, dr};
  ForEachBalancedHeadRange(ctx, c, T, start_pos, [&](int thread, int64_t begin, int64_t end) {
    float* parts = thread_parts + thread * per_thread;  // [2, kPassQueries, r]
    float* max = parts + 2 * kPassQueries * r;          // [2, kPassQueries]
    float* sum = max + 2 * kPassQueries;                // [2, kPassQueries]
    // Queries [q0, q1): query i is token i / nh, head i % nh; part 0 the prefix, part 1 the own.
    for (int64_t q0 = begin; q0 < end; q0 += kPassQueries) {
      const int64_t q1 = std::min(end, q0 + kPassQueries);
      const ops::MlaQuery all{q_lat + q0 * r, q + q0 * qk + dn, qk, q1 - q0, scale};
      ops::MlaAttentionPartial(ctx.isa, all, common, parts, max, sum);
      for (int64_t i = q0; i < q1;) {
        const int64_t t = i / nh, heads = std::min(nh - i % nh, q1 - i), k = i - q0;
        const ops::MlaQuery query{q_lat + i * r, q + i * qk + dn, qk, heads, scale};
        const ops::LatentCacheView own{cache.latent.data() + prefix * r,
                                       cache.rope_key.data() + prefix * dr, t, r, dr};
        ops::MlaAttentionPartial(ctx.isa, query, own, parts + (kPassQueries + k) * r,
                                 max + kPassQueries + k, sum + kPassQueries + k);
        i += heads;
      }
      ops::MergeMlaPartials(2, kPassQueries, r, 0, q1 - q0, parts, max, sum, o_lat + q0 * r);
    }
  });
  ForEachHead(ctx, nh, [&](int thread, int64_t h) {
    float* w_uv = head_f32 + thread * head_floats;  // W_UV[h]: [dv, r]
    DequantizeKvBRows(ctx.isa, w.kv_b_proj, h * (dn + dv) + dn, dv, w_uv);
    // o[t, h*dv + e] = sum_i o_lat[t, h, i] W_UV[h][e, i]
    ops::Gemm(one, T, dv, r, {o_lat + h * r, nh * r, false}, {w_uv, r, false}, o + h * dv, nh * dv,
              false);
  });
}

void AbsorbedBatched(const ModelConfig& c, const RopeParams& rope, const AttentionWeights& w,
                     const ops::KernelContext& ctx, const float* q, int64_t T, int64_t start_pos,
                     const LayerKvCache& cache, MlaScratch& scratch, float* o) {
  const int64_t nh = c.num_attention_heads, qk = c.qk_head_dim(), dv = c.v_head_dim;
  for (int64_t t0 = 0; t0 < T; t0 += kAbsorbedBlock) {
    const int64_t n = std::min(kAbsorbedBlock, T - t0);
    AbsorbedBatchedBlock(c, rope, w, ctx, q + t0 * nh * qk, n, start_pos + t0, cache, scratch,
                         o + t0 * nh * dv);
  }
}

// Prefill attention in the decompressed (MHA) form, spec §5.3: per head, every cached position's
// k_nope = W_UK c_j and v = W_UV c_j are decompressed once for the call (one product over the
// whole context with the head's dn + dv rows of kv_b_proj), k_pe is appended to k_nope, and then
// per block of tokens
//   s = q k^T (scaled, causally masked, softmax per row) and o = s v
// run as three matrix products. Equal to the absorbed form in exact arithmetic.
//   q: [T, nh, dn+dr] (rope applied)   o: [T, nh*dv]
// With int8 activations on a q8_0 / q4_0 kv_b_proj (ops/int8_dot.h) the decompression runs on the
// weight as stored through the int8 kernel (each thread quantizes the latent cache once per call),
// as every other product of such a model does; otherwise it is an f32 product on the dequantised
// copy.
// Heads are split over the threads; each thread's scratch holds one head's k [N, dn+dr],
// [k_nope | v] [N, dn+dv] and scores [kDecompressedBlock, N] (N = start_pos + T):
// (dn + dr + dn + dv + 64) N floats, 8.4 MB at N = 4096 for DeepSeek-V3 (with bf16 products,
// Bf16AttentionProducts: k in bf16 and v^T twice, (dn + dr) / 2 + 2 dv + dn + 64 floats a
// position, 6 % more); kAuto bounds the total (kMaxDecompressedScratch). Each block's queries score
// every key up to the block's last one, so the block's square past the diagonal is computed and
// masked: 64 rather than 128 queries halve that (bench-medium q4_0 pp512, forwards alternating
// between both in one process: the attention 3-6 % less time, 3 runs; 32 was level with 64).
constexpr int64_t kDecompressedBlock = 64;
// kAuto takes the decompressed form only while all threads' scratch stays within this (it grows
// with the context; the absorbed form's does not): 256 MiB is 65.5k positions on 2 threads for
// DeepSeek-V3, 2.0k on 64 (61.7k and 1.9k with bf16 products).
constexpr int64_t kMaxDecompressedScratch = int64_t{256} << 20;

// Per thread: k [N, dn+dr] f32 (or bf16 [N, dn+dr] and v^T [dv, N] twice in bf16, with a block's
// queries [64, dn+dr] and outputs [64, dv]), [k_nope | v] [N, dn+dv], scores [64, N].
int64_t DecompressedScratchFloats(const ModelConfig& c, int64_t N, bool bf16_products) {
  const int64_t qk = c.qk_head_dim(), dv = c.v_head_dim;
  const int64_t k_floats =
      bf16_products ? (N * qk + 1) / 2 + dv * N + kDecompressedBlock * (qk + dv) : N * qk;
  return k_floats + N * (c.qk_nope_head_dim + dv + kDecompressedBlock);
}

// Whether the scores (q k^T) and values (s v) of the decompressed form run as bf16 x bf16
// products (vdpbf16ps through MatMul's bf16-dot kernel, about twice the f32 FMA rate; AVX-512):
// q, k, the softmax weights and v each rounded to bf16 (relative error <= 2^-8 per value; a block
// of fewer than 8 queries takes MatMul's dot form, which keeps q and the weights f32). Under
// the bf16-dot path, and wherever kv_b_proj's products already run on int8 activations
// (q8_0 / q4_0 with int8-dot, the CLI's default): their per-block rounding of every product's
// input (half a code, 2^-8 of the block's largest value) is as coarse as bf16's for the largest
// value and coarser for the rest. Held-out perplexity of dsv3-tiny (--ctx 256): q8_0 29.2914 ->
// 29.2868, q4_0 29.3727 -> 29.3791, BF16 --bf16-dot 29.2851 -> 29.2801. bench-medium pp512,
// forwards alternating between both in one process: the attention 8.0 -> 6.0 ms a layer (q4_0;
// q8_0 7.9 -> 5.9, BF16 --bf16-dot 9.4 -> 7.2), the forward 1.9-4.4 % less time.
// KernelContext::f32_attention (--f32-attention) keeps them f32.
bool Bf16AttentionProducts(const AttentionWeights& w, const ops::KernelContext& ctx) {
  return ctx.isa == ops::Isa::kAvx512 && !ctx.f32_attention &&
         (ctx.bf16_dot || ops::UsesInt8Dot(ctx, w.kv_b_proj));
}

// Whether the bf16-dot path (KernelContext::bf16_dot) takes the decompression of every
// head's keys and values: AVX-512, kv_b_proj BF16 as stored, or FP8 with every head's rows
// starting on a scale block (the product reads a head's rows as a weight of their own). Where
// MatMul's bf16-dot kernel takes the product (8 or more positions; FP8 blocks of even width up to
// 512) the latent is rounded to bf16 like the other products' activations; elsewhere it runs
// exact. bench-medium BF16 pp512,
// forwards alternating with the f32 decompression in one process: the decompressed attention
// 11.1-11.7 ms per layer against 14.0-15.2 (2 runs).
bool Bf16DotDecompression(const ModelConfig& c, const AttentionWeights& w,
                          const ops::KernelContext& ctx) {
  const ops::WeightView& kv = w.kv_b_proj;
  if (!ctx.bf16_dot || ctx.isa != ops::Isa::kAvx512) return false;
  return kv.dtype == DType::kBF16 ||
         (kv.dtype == DType::kF8E4M3 && (c.qk_nope_head_dim + c.v_head_dim) % kv.block_rows == 0);
}

// Rows [first, first + n) of a row-major BF16 or FP8 weight as a weight of their own (FP8: first
// on a scale block).
ops::WeightView RowRange(const ops::WeightView& w, int64_t first, int64_t n) {
  ops::WeightView v = w;
  v.rows = n;
  if (w.dtype == DType::kF8E4M3) {
    v.data = static_cast<const uint8_t*>(w.data) + first * w.cols;
    v.scale = w.scale + first / w.block_rows * ((w.cols + w.block_cols - 1) / w.block_cols);
  } else {
    v.data = static_cast<const uint16_t*>(w.data) + first * w.cols;
  }
  return v;
}

// Row i of the block's scores: scaled (unless scale is 1), softmax over the `visible` positions
// token i sees, zero past them (up to `keys`).
void SoftmaxVisible(ops::Isa isa, float scale, int64_t visible, int64_t keys, float* row) {
  if (scale != 1.0f)
    for (int64_t j = 0; j < visible; ++j) row[j] *= scale;
  ops::Softmax(isa, row, visible);
  std::fill(row + visible, row + keys, 0.0f);
}

// bf16 [rows, cols], row-major, as a weight.
ops::WeightView Bf16Rows(const uint16_t* data, int64_t rows, int64_t cols) {
  ops::WeightView v;
  v.dtype = DType::kBF16;
  v.rows = rows;
  v.cols = cols;
  v.data = data;
  return v;
}

// Head h's blocks of queries in the decompressed form with bf16 x bf16 products
// (Bf16AttentionProducts), on the calling thread: the softmax scale applied to q before its
// rounding, v transposed once and each block's keys copied from it (transposing each block's
// keys, 4.5x the values at pp512, took 7.4 us a block against the values' product's 16.4). kv: the
// head's [N, dn+dv] = [k_nope | v]; k16 [N, dn+dr], v16 2 x [dv, N], q_block [64, dn+dr], s [64,
// N], o_block [64, dv] scratch.
void BlocksInBf16(const ModelConfig& c, ops::Isa isa, const float* q, int64_t T, int64_t start_pos,
                  int64_t h, const float* kv, const LayerKvCache& cache, float scale, uint16_t* k16,
                  uint16_t* v16, float* q_block, float* s, float* o_block, float* o) {
  const int64_t nh = c.num_attention_heads, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim;
  const int64_t dv = c.v_head_dim, qk = dn + dr, N = start_pos + T;
  // k16[j] = bf16([k_nope_j | k_pe_j])
  ops::CopyToBf16(isa, kv, N, dn, dn + dv, k16, qk);
  ops::CopyToBf16(isa, cache.rope_key.data(), N, dr, dr, k16 + dn, qk);
  uint16_t* v_all = v16 + dv * N;  // v^T [dv, N]
  ops::TransposeToBf16(isa, kv + dn, N, dv, dn + dv, v_all);
  ops::KernelContext bf16_one{nullptr, isa};
  bf16_one.bf16_dot = true;
  for (int64_t t0 = 0; t0 < T; t0 += kDecompressedBlock) {
    const int64_t n = std::min(kDecompressedBlock, T - t0), keys = start_pos + t0 + n;
    for (int64_t i = 0; i < n; ++i) {  // q_block[i] = scale q[t0 + i, h, :]
      const float* qi = q + ((t0 + i) * nh + h) * qk;
      for (int64_t e = 0; e < qk; ++e) q_block[i * qk + e] = scale * qi[e];
    }
    // s[i, j] = q_block[i] . k[j] for the keys the block's last token sees: k as the weight
    ops::MatMul(bf16_one, q_block, n, Bf16Rows(k16, keys, qk), s);
    for (int64_t i = 0; i < n; ++i)
      SoftmaxVisible(isa, 1.0f, start_pos + t0 + i + 1, keys, s + i * keys);
    // o_block[i, e] = sum_j s[i, j] v[j, e]: v^T [dv, keys] as the weight
    const uint16_t* vt = v_all;
    if (keys < N) {
      for (int64_t e = 0; e < dv; ++e)
        std::memcpy(v16 + e * keys, v_all + e * N, static_cast<size_t>(keys) * sizeof(uint16_t));
      vt = v16;
    }
    ops::MatMul(bf16_one, s, n, Bf16Rows(vt, dv, keys), o_block);
    for (int64_t i = 0; i < n; ++i)  // o[t0 + i, h*dv : (h+1)*dv]
      std::memcpy(o + (t0 + i) * nh * dv + h * dv, o_block + i * dv,
                  static_cast<size_t>(dv) * sizeof(float));
  }
}

void DecompressedBatched(const ModelConfig& c, const RopeParams& rope, const AttentionWeights& w,
                         const ops::KernelContext& ctx, const float* q, int64_t T,
                         int64_t start_pos, const LayerKvCache& cache, MlaScratch& scratch,
                         float* o) {
  const int64_t nh = c.num_attention_heads, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim;
  const int64_t dv = c.v_head_dim, r = c.kv_lora_rank, qk = dn + dr, N = start_pos + T;
  const bool bf16_products = Bf16AttentionProducts(w, ctx);
  const int64_t per_thread = DecompressedScratchFloats(c, N, bf16_products);
  const int threads = NumThreads(ctx);
  float* base = scratch.decompressed.Get(threads * per_thread);
  const ops::KernelContext one{nullptr, ctx.isa};
  const float scale = static_cast<float>(rope.softmax_scale);
  const ops::GemmOperand latent{cache.latent.data(), r, false};  // c_j: [N, r]
  const bool int8 = ops::UsesInt8Dot(ctx, w.kv_b_proj) && w.kv_b_proj.row_tiles == 0;
  ops::KernelContext bf16_one = one;  // the decompression as a bf16 x bf16 product
  bf16_one.bf16_dot = true;
  const bool bf16 = Bf16DotDecompression(c, w, ctx);
  // Per thread, where the decompression is an f32 product: one head's [W_UK; W_UV] in f32.
  float* head_f32 = int8 || bf16 ? nullptr : scratch.head_f32.Get(threads * (dn + dv) * r);
  auto heads = [&](int thread) {
    float* kv = base + thread * per_thread;  // [N, dn+dv]: k_nope | v
    float* s = kv + N * (dn + dv);           // [block, keys]
    float* k = s + kDecompressedBlock * N;   // [N, dn+dr]: k_nope | k_pe
    // bf16_products: k as bf16 [N, dn+dr], v^T [dv, N] and a block's [dv, keys], queries, outputs.
    uint16_t* k16 = reinterpret_cast<uint16_t*>(k);
    uint16_t* v16 = reinterpret_cast<uint16_t*>(k + (N * qk + 1) / 2);
    float* q_block = k + (N * qk + 1) / 2 + dv * N;      // [block, dn+dr]
    float* o_block = q_block + kDecompressedBlock * qk;  // [block, dv]
    std::optional<ops::Int8RowRunner> runner;
    if (int8) runner.emplace(ctx.isa);
    for (int64_t h = nh * thread / threads; h < nh * (thread + 1) / threads; ++h) {
      // kv[j] = [W_UK[h] c_j | W_UV[h] c_j]: kv_b_proj's rows h (dn + dv) .. (h + 1) (dn + dv)
      if (int8) {
        runner->Run(cache.latent.data(), N, ops::Int8RowRange(w.kv_b_proj, h * (dn + dv), dn + dv),
                    0, dn + dv, kv);
      } else if (bf16) {
        ops::MatMul(bf16_one, cache.latent.data(), N, RowRange(w.kv_b_proj, h * (dn + dv), dn + dv),
                    kv);
      } else {
        float* w_ukv = head_f32 + thread * (dn + dv) * r;  // [dn+dv, r]
        DequantizeKvBRows(ctx.isa, w.kv_b_proj, h * (dn + dv), dn + dv, w_ukv);
        ops::Gemm(one, N, dn + dv, r, latent, {w_ukv, r, false}, kv, dn + dv, false);
      }
      if (bf16_products) {
        BlocksInBf16(c, ctx.isa, q, T, start_pos, h, kv, cache, scale, k16, v16, q_block, s,
                     o_block, o);
        continue;
      }
      for (int64_t j = 0; j < N; ++j) {
        std::memcpy(k + j * qk, kv + j * (dn + dv), static_cast<size_t>(dn) * sizeof(float));
        std::memcpy(k + j * qk + dn, cache.rope_key.data() + j * dr,
                    static_cast<size_t>(dr) * sizeof(float));
      }
      const ops::GemmOperand v{kv + dn, dn + dv, true};  // v[j, e]: the B of o = s v
      for (int64_t t0 = 0; t0 < T; t0 += kDecompressedBlock) {
        const int64_t n = std::min(kDecompressedBlock, T - t0), keys = start_pos + t0 + n;
        // s[i, j] = q[t0 + i, h, :] . k[j, :] for the keys the block's last token sees
        ops::Gemm(one, n, keys, qk, {q + (t0 * nh + h) * qk, nh * qk, false}, {k, qk, false}, s,
                  keys, false);
        for (int64_t i = 0; i < n; ++i)
          SoftmaxVisible(ctx.isa, scale, start_pos + t0 + i + 1, keys, s + i * keys);
        // o[t0 + i, h*dv + e] = sum_j s[i, j] v[j, e]
        ops::Gemm(one, n, dv, keys, {s, keys, false}, v, o + t0 * nh * dv + h * dv, nh * dv, false);
      }
    }
  };
  if (threads == 1)
    heads(0);
  else
    ctx.pool->RunOnAll(heads);
}

// Whether the decompressed form costs fewer multiply-adds than the absorbed one for T tokens
// after start_pos cached positions (per head; attention only, the projections are shared), and
// its scratch for `threads` threads stays within kMaxDecompressedScratch.
bool DecompressedIsCheaper(const ModelConfig& c, int64_t T, int64_t start_pos, int threads,
                           bool bf16_products) {
  const int64_t scratch_bytes = threads *
                                DecompressedScratchFloats(c, start_pos + T, bf16_products) *
                                static_cast<int64_t>(sizeof(float));
  if (scratch_bytes > kMaxDecompressedScratch) return false;
  const double dn = static_cast<double>(c.qk_nope_head_dim),
               dr = static_cast<double>(c.qk_rope_head_dim);
  const double dv = static_cast<double>(c.v_head_dim), r = static_cast<double>(c.kv_lora_rank);
  const double t = static_cast<double>(T), p = static_cast<double>(start_pos);
  const double absorbed = t * (dn + dv) * r + t * (p + (t + 1.0) / 2.0) * (2.0 * r + dr);
  // Each block's tokens score every key up to the block's last token.
  const double block = std::min(t, static_cast<double>(kDecompressedBlock));
  const double decompressed =
      (p + t) * (dn + dv) * r + t * (p + (t + block) / 2.0) * (dn + dr + dv);
  return decompressed < absorbed;
}

}  // namespace

void MlaForward(const ModelConfig& c, const RopeParams& rope, const AttentionWeights& w,
                const ops::KernelContext& ctx, const float* x, int64_t T, int64_t start_pos,
                const float* cos_sin, AttentionPath path, LayerKvCache& cache, MlaScratch& scratch,
                float* out, PhaseProfile* profile) {
  PhaseClock clock(profile);
  const int64_t nh = c.num_attention_heads, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim;
  const int64_t dv = c.v_head_dim, r = c.kv_lora_rank, qk = c.qk_head_dim();
  const int64_t half = dr / 2;
  const float* cos = cos_sin;
  const float* sin = cos_sin + T * half;

  // q: [T, nh, dn+dr]
  // q: [T, nh, dn+dr]; ckv: [T, r+dr]. Both projections of x run in one parallel region.
  float* q = scratch.q.Get(T * nh * qk);
  float* ckv = scratch.ckv.Get(T * (r + dr));
  if (c.has_q_lora()) {
    float* q_a = scratch.q_a.Get(T * c.q_lora_rank);  // [T, rq]
    const ops::MatMulJob jobs[2] = {{x, T, &w.q_a_proj, q_a}, {x, T, &w.kv_a_proj_with_mqa, ckv}};
    ops::MatMulBatch(ctx, jobs, 2);
    ParallelRows(ctx, T, kTokenGrain, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        float* row = q_a + t * c.q_lora_rank;
        ops::RmsNorm(ctx.isa, row, w.q_a_layernorm.data(), c.q_lora_rank, c.rms_norm_eps, row);
      }
    });
    ops::MatMul(ctx, q_a, T, w.q_b_proj, q);
  } else {
    const ops::MatMulJob jobs[2] = {{x, T, &w.q_proj, q}, {x, T, &w.kv_a_proj_with_mqa, ckv}};
    ops::MatMulBatch(ctx, jobs, 2);
  }
  clock.Lap(Phase::kAttentionIn);

  // cache: normalised latent c [r] and rotated k_pe [dr] per position.
  ParallelRows(ctx, T, kTokenGrain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t pos = start_pos + t;
      float* latent = cache.latent.data() + pos * r;
      float* rope_key = cache.rope_key.data() + pos * dr;
      ops::RmsNorm(ctx.isa, ckv + t * (r + dr), w.kv_a_layernorm.data(), r, c.rms_norm_eps, latent);
      std::memcpy(rope_key, ckv + t * (r + dr) + r, static_cast<size_t>(dr) * sizeof(float));
      ApplyRope(rope, cos + t * half, sin + t * half, rope_key, dr);
      for (int64_t h = 0; h < nh; ++h)
        ApplyRope(rope, cos + t * half, sin + t * half, q + (t * nh + h) * qk + dn, dr);
    }
  });

  // o: [T, nh*dv], head-major per token (h*dv + d), as o_proj expects.
  float* o = scratch.o.Get(T * nh * dv);
  const int64_t num_keys_max = start_pos + T;
  const bool packed = ops::GemmIsPacked(ctx.isa);
  if (path == AttentionPath::kAuto)
    path = packed && T >= 2 &&
                   DecompressedIsCheaper(c, T, start_pos, NumThreads(ctx),
                                         Bf16AttentionProducts(w, ctx))
               ? AttentionPath::kDecompressed
               : AttentionPath::kAbsorbed;
  if (path == AttentionPath::kDecompressed && T >= 2) {
    DecompressedBatched(c, rope, w, ctx, q, T, start_pos, cache, scratch, o);
  } else if (path != AttentionPath::kNaive && T >= 2 && packed) {
    AbsorbedBatched(c, rope, w, ctx, q, T, start_pos, cache, scratch, o);
  } else if ((path == AttentionPath::kAuto || path == AttentionPath::kAbsorbed) && T == 1 &&
             start_pos + 1 >= kSplitKeysFrom) {
    AbsorbedSplitKeys(c, rope, w, ctx, q, start_pos + 1, cache, scratch, o);
  } else if (path != AttentionPath::kNaive) {
    // Per thread: q_lat and o_lat for up to nh heads, a row and an output of kv_b_proj. The size
    // does not grow with the context, so after the first call decoding allocates nothing here.
    const int64_t per_thread = 2 * nh * r + r + nh * (dn + dv);
    float* thread_scratch = scratch.per_thread.Get(NumThreads(ctx) * per_thread);
    ForEachBalancedHeadRange(ctx, c, T, start_pos, [&](int thread, int64_t begin, int64_t end) {
      float* q_lat = thread_scratch + thread * per_thread;
      float* o_lat = q_lat + nh * r;
      float* row = o_lat + nh * r;
      float* kv_out = row + r;
      for (int64_t i = begin; i < end;) {
        const int64_t t = i / nh, h_begin = i % nh, h_end = std::min(nh, h_begin + (end - i));
        AbsorbedHeads(c, rope, w, ctx.int8_dot, ctx.isa, q + t * nh * qk, h_begin, h_end,
                      start_pos + t + 1, cache, q_lat, o_lat, row, kv_out, o + t * nh * dv);
        i += h_end - h_begin;
      }
    });
  } else {
    // Naive: k[j, h] = [W_UK[h] c_j ; k_pe_j], v[j, h] = W_UV[h] c_j for every cached position.
    float* kv = scratch.naive_kv.Get(num_keys_max * nh * (dn + dv) + num_keys_max);
    float* scores = kv + num_keys_max * nh * (dn + dv);
    float* row_f32 = scratch.head_f32.Get(r);  // kv_b_proj's row, dequantised
    for (int64_t row = 0; row < nh * (dn + dv); ++row) {
      DequantizeKvBRows(ops::Isa::kScalar, w.kv_b_proj, row, 1, row_f32);
      for (int64_t j = 0; j < num_keys_max; ++j)
        kv[j * nh * (dn + dv) + row] =
            ops::Dot(ops::Isa::kScalar, row_f32, cache.latent.data() + j * r, r);
    }
    const float scale = static_cast<float>(rope.softmax_scale);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t num_keys = start_pos + t + 1;
      for (int64_t h = 0; h < nh; ++h) {
        const float* qh = q + (t * nh + h) * qk;
        for (int64_t j = 0; j < num_keys; ++j) {
          const float* k_nope = kv + (j * nh + h) * (dn + dv);
          const float* k_pe = cache.rope_key.data() + j * dr;
          scores[j] = scale * (ops::Dot(ops::Isa::kScalar, qh, k_nope, dn) +
                               ops::Dot(ops::Isa::kScalar, qh + dn, k_pe, dr));
        }
        ops::Softmax(ops::Isa::kScalar, scores, num_keys);
        float* oh = o + (t * nh + h) * dv;
        std::fill(oh, oh + dv, 0.0f);
        for (int64_t j = 0; j < num_keys; ++j)
          ops::Axpy(ops::Isa::kScalar, scores[j], kv + (j * nh + h) * (dn + dv) + dn, dv, oh);
      }
    }
  }
  clock.Lap(Phase::kAttention);
  // out: [T, H]
  ops::MatMul(ctx, o, T, w.o_proj, out);
  clock.Lap(Phase::kAttentionOut);
}

}  // namespace dsv3
