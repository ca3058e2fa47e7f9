// BF16 and FP8 weights in the bf16-dot kernel's 32-row pair tiles (ops/bf16_tiles.h): the layout,
// and every reader of a tiled weight against the same weight row-major.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "backend/thread_pool.h"
#include "ops/bf16_tiles.h"
#include "ops/isa.h"
#include "ops/matmul.h"
#include "util/dtype.h"

namespace dsv3::ops {
namespace {

// A random BF16 or FP8 weight [rows, cols], row-major (FP8: values over the e4m3 range with a
// random positive scale per block_rows x block_cols block).
struct Case {
  DType dtype;
  int64_t rows, cols, block_rows, block_cols;
  std::vector<uint8_t> bytes;
  std::vector<float> scale;

  Case(std::mt19937& rng, DType d, int64_t r, int64_t c, int64_t br = 128, int64_t bc = 128)
      : dtype(d), rows(r), cols(c), block_rows(br), block_cols(bc) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_real_distribution<float> positive(0.5f, 2.0f);
    const int64_t e = d == DType::kBF16 ? 2 : 1;
    bytes.resize(static_cast<size_t>(rows * cols * e));
    for (int64_t i = 0; i < rows * cols; ++i) {
      if (d == DType::kBF16) {
        const uint16_t b = F32ToBf16(normal(rng));
        std::memcpy(&bytes[static_cast<size_t>(2 * i)], &b, 2);
      } else {
        bytes[static_cast<size_t>(i)] = F32ToFp8E4M3(100.0f * normal(rng));
      }
    }
    if (d == DType::kF8E4M3)
      for (int64_t i = 0; i < ((rows + br - 1) / br) * ((cols + bc - 1) / bc); ++i)
        scale.push_back(positive(rng) / 100.0f);
  }
  WeightView View(const std::vector<uint8_t>& data) const {
    WeightView v;
    v.dtype = dtype;
    v.rows = rows;
    v.cols = cols;
    v.data = data.data();
    v.scale = scale.empty() ? nullptr : scale.data();
    v.block_rows = block_rows;
    v.block_cols = block_cols;
    return v;
  }
  double At(int64_t r, int64_t c) const {
    if (dtype == DType::kBF16) {
      uint16_t b;
      std::memcpy(&b, &bytes[static_cast<size_t>(2 * (r * cols + c))], 2);
      return Bf16ToF32(b);
    }
    const int64_t scale_cols = (cols + block_cols - 1) / block_cols;
    return static_cast<double>(Fp8E4M3ToF32(bytes[static_cast<size_t>(r * cols + c)])) *
           scale[static_cast<size_t>(r / block_rows * scale_cols + c / block_cols)];
  }
  std::string Name() const {
    return std::string(DTypeName(dtype)) + " " + std::to_string(rows) + "x" + std::to_string(cols) +
           " blocks " + std::to_string(block_rows) + "x" + std::to_string(block_cols);
  }
};

// The formats: BF16; FP8 with the default grid, and a small one whose row blocks change inside a
// 16-row half (8) and whose column blocks are many (32).
std::vector<Case> Cases(std::mt19937& rng, int64_t rows, std::initializer_list<int64_t> widths) {
  std::vector<Case> cases;
  for (int64_t cols : widths) {
    cases.emplace_back(rng, DType::kBF16, rows, cols);
    cases.emplace_back(rng, DType::kF8E4M3, rows, cols);
    cases.emplace_back(rng, DType::kF8E4M3, rows, cols, 8, 32);
  }
  return cases;
}

std::vector<float> RandomX(std::mt19937& rng, int64_t T, int64_t cols) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(T * cols));
  for (float& v : x) v = normal(rng);
  return x;
}

// The tiled weight: the same bytes, tiled in place in a copy.
std::pair<std::vector<uint8_t>, WeightView> Tiled(const Case& c) {
  std::pair<std::vector<uint8_t>, WeightView> out{c.bytes, {}};
  out.second = c.View(out.first);
  EXPECT_TRUE(CanTilePairRows(out.second));
  TilePairRows(&out.second, out.first.data());
  return out;
}

// w (FP8, tiled) with its zero-exponent line flags, made into *flags.
WeightView WithLineFlags(WeightView w, std::vector<uint64_t>* flags) {
  flags->assign(static_cast<size_t>(Fp8LineFlagsSize(w)), ~0ull);
  MarkFp8ZeroExponentLines(w, flags->data());
  w.fp8_line_flags = flags->data();
  return w;
}

// 2 tiles and a 16-row tail; 70 columns (not a multiple of 32: a partial pair block), 518.
TEST(Bf16Tiles, LayoutAndRowCopies) {
  std::mt19937 rng(1);
  for (const Case& c : Cases(rng, 80, {2, 70, 518})) {
    SCOPED_TRACE(c.Name());
    auto [tiled, w] = Tiled(c);
    const int64_t e = c.dtype == DType::kBF16 ? 2 : 1, cols = c.cols;
    EXPECT_EQ(w.row_tiles, kBf16Tile);
    EXPECT_EQ(PairTiledRows(w), 64);
    // Pair j of row 32 t + i at pair j * 32 + i of tile t; the tail where it was.
    for (int64_t r = 0; r < 64; ++r)
      for (int64_t j = 0; j < cols / 2; ++j)
        ASSERT_EQ(0, std::memcmp(TilePairs(w, r / 32, j) + r % 32 * 2 * e,
                                 &c.bytes[static_cast<size_t>((r * cols + 2 * j) * e)],
                                 static_cast<size_t>(2 * e)))
            << r << " " << j;
    EXPECT_EQ(0, std::memcmp(tiled.data() + 64 * cols * e, c.bytes.data() + 64 * cols * e,
                             static_cast<size_t>(16 * cols * e)));
    if (c.dtype == DType::kF8E4M3) {
      // Line j of tile t flagged exactly where one of its 32 rows' codes in columns 2 j, 2 j + 1
      // has a zero exponent: the random codes (which rarely have one) with a zero or subnormal
      // code of either sign put in every third column, in a row that moves.
      Case z = c;
      for (int64_t k = 0; k < cols; k += 3)
        z.bytes[static_cast<size_t>((k * 7 % 64) * cols + k)] =
            static_cast<uint8_t>(k % 2 ? 0x85 : 0);
      auto [z_tiled, zw] = Tiled(z);
      std::vector<uint64_t> flags;
      WithLineFlags(zw, &flags);
      for (int64_t t = 0; t < 2; ++t)
        for (int64_t j = 0; j < cols / 2; ++j) {
          bool zero = false;
          for (int64_t r = 32 * t; r < 32 * t + 32; ++r)
            for (int64_t k = 2 * j; k < 2 * j + 2; ++k)
              zero = zero || (z.bytes[static_cast<size_t>(r * cols + k)] & 0x78) == 0;
          const uint64_t word = flags[static_cast<size_t>(t * Fp8LineFlagWords(cols) + j / 64)];
          ASSERT_EQ((word >> (j % 64) & 1) != 0, zero) << "tile " << t << " line " << j;
        }
    }
    std::vector<uint8_t> row(static_cast<size_t>(cols * e));
    for (int64_t r = 0; r < c.rows; ++r) {
      CopyTiledRow(w, r, 1, cols - 1, row.data());
      ASSERT_EQ(0, std::memcmp(row.data(), &c.bytes[static_cast<size_t>((r * cols + 1) * e)],
                               static_cast<size_t>((cols - 1) * e)))
          << r;
    }
  }
  // No whole pairs: an odd column count, or FP8 blocks of an odd width.
  EXPECT_FALSE(CanTilePairRows(Case(rng, DType::kBF16, 64, 7).View({1})));
  EXPECT_FALSE(CanTilePairRows(Case(rng, DType::kF8E4M3, 64, 66, 128, 33).View({1})));
  EXPECT_TRUE(CanTilePairRows(Case(rng, DType::kF8E4M3, 64, 66, 128, 32).View({1})));
}

// Every ISA's exact path on the tiled weight against the same path on the row-major one: the
// scalar reference (which other ISAs take for tiles) bitwise, as it reads the same values in the
// same order; AVX-512's tiled kernels sum even and odd columns apart, so against an fp64 sum
// within the f32 summation bound gamma_n * sum |w x| (n = cols terms and, FP8, one product with a
// block scale per block: u = 2^-24, doubled for slack). Row ranges that start or end inside a
// 16-row half take the reference for those rows. DequantizeRow reads tiled rows bitwise as
// row-major ones.
TEST(Bf16Tiles, ExactPathsMatchTheRowMajorWeight) {
  std::mt19937 rng(2);
  ThreadPool pool(2);
  for (const Case& c : Cases(rng, 80, {70, 518})) {
    SCOPED_TRACE(c.Name());
    const int64_t cols = c.cols;
    const WeightView plain = c.View(c.bytes);
    auto [tiled, w] = Tiled(c);
    for (int64_t T : {1, 2, 3, 4, 7, 9}) {
      const std::vector<float> x = RandomX(rng, T, cols);
      for (Isa isa : RunnableIsas()) {
        KernelContext ctx{&pool, isa};
        std::vector<float> got(static_cast<size_t>(T * c.rows)), want(got.size());
        MatMul(ctx, x.data(), T, w, got.data());
        KernelContext ref{nullptr, Isa::kScalar};
        MatMul(ref, x.data(), T, plain, want.data());
        // Native readers of tiles: AVX-512 and AVX2.
        if (isa != Isa::kAvx512 && isa != Isa::kAvx2) {
          EXPECT_EQ(got, want) << IsaName(isa) << " T=" << T;
          continue;
        }
        // Rows [8, 72): a range cut inside halves at both ends.
        std::vector<float> part(got.size(), 0.0f);
        MatMulRowRange(ctx, x.data(), T, w, 8, 72, part.data());
        if (c.dtype == DType::kF8E4M3) {
          // With its zero-exponent line flags (a model's tiles have them; AVX2 then decodes by
          // shifts and masks instead of through f16): the same bits, whole and in the range.
          std::vector<uint64_t> flags;
          const WeightView flagged = WithLineFlags(w, &flags);
          std::vector<float> got_flagged(got.size()), part_flagged(got.size(), 0.0f);
          MatMul(ctx, x.data(), T, flagged, got_flagged.data());
          MatMulRowRange(ctx, x.data(), T, flagged, 8, 72, part_flagged.data());
          ASSERT_EQ(got_flagged, got) << IsaName(isa) << " T=" << T;
          ASSERT_EQ(part_flagged, part) << IsaName(isa) << " T=" << T;
        }
        for (int64_t t = 0; t < T; ++t)
          for (int64_t r = 0; r < c.rows; ++r) {
            double sum = 0, mag = 0;
            for (int64_t k = 0; k < cols; ++k) {
              const double p = c.At(r, k) * x[static_cast<size_t>(t * cols + k)];
              sum += p;
              mag += std::fabs(p);
            }
            const double bound = 2 * (cols + 2) * std::ldexp(1.0, -24) * mag + 1e-30;
            const size_t i = static_cast<size_t>(t * c.rows + r);
            ASSERT_NEAR(got[i], sum, bound) << "T=" << T << " t=" << t << " r=" << r;
            if (r >= 8 && r < 72) {
              ASSERT_NEAR(part[i], sum, bound) << "range, r=" << r;
            }
          }
      }
    }
    std::vector<float> a(static_cast<size_t>(cols)), b(a.size());
    for (Isa isa : RunnableIsas())
      for (int64_t r = 0; r < c.rows; ++r) {
        DequantizeRow(isa, w, r, a.data());
        DequantizeRow(isa, plain, r, b.data());
        ASSERT_EQ(a, b) << IsaName(isa) << " row " << r;
      }
  }
}

// MatMul of x [T, w.cols] on the tiled weight w and on the same weight row-major, whole and over
// rows [r0, r1): bitwise alike.
void ExpectTilesReadAsRows(const KernelContext& ctx, const std::vector<float>& x, int64_t T,
                           const WeightView& w, const WeightView& plain, int64_t r0, int64_t r1) {
  std::vector<float> got(static_cast<size_t>(T * w.rows)), want(got.size());
  MatMul(ctx, x.data(), T, w, got.data());
  MatMul(ctx, x.data(), T, plain, want.data());
  EXPECT_EQ(got, want) << "T=" << T;
  std::vector<float> part(got.size(), 0.0f), part_want(got.size(), 0.0f);
  MatMulRowRange(ctx, x.data(), T, w, r0, r1, part.data());
  MatMulRowRange(ctx, x.data(), T, plain, r0, r1, part_want.data());
  EXPECT_EQ(part, part_want) << "rows [" << r0 << ", " << r1 << "), T=" << T;
}

// AVX2's packed form (T >= 32; on FP8 tiles from 16) reads tiles as it reads the rows (8 rows'
// column pair a load instead of 8 rows transposed; FP8's bytes shuffled into even and odd columns,
// each row's block scale per lane): the same panel values, so the same bits as on the row-major
// weight, for whole products and for row ranges off 8-row bounds (rows copied out one by one).
// 518 columns: three packed column blocks, the last of 6 columns; FP8 scale blocks 10 columns
// wide besides: 8 columns converted together can straddle two. From 16 tokens on FP8 tiles: a
// token's outputs those of the same token among 32 (the packed form's, which never depend on
// the other tokens; the dot form's would differ in the last bits).
TEST(Bf16Tiles, Avx2PackedFormReadsTilesAsRows) {
  if (!CpuSupports(Isa::kAvx2)) GTEST_SKIP() << "needs AVX2";
  std::mt19937 rng(3);
  std::vector<Case> cases = Cases(rng, 80, {70, 518});
  cases.emplace_back(rng, DType::kF8E4M3, 80, 518, 8, 10);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.Name());
    const WeightView plain = c.View(c.bytes);
    auto [tiled, w] = Tiled(c);
    const KernelContext ctx{nullptr, Isa::kAvx2};
    for (int64_t T : {32, 45}) {
      const std::vector<float> x = RandomX(rng, T, c.cols);
      ExpectTilesReadAsRows(ctx, x, T, w, plain, 5, 75);
      if (T != 32 || c.dtype != DType::kF8E4M3) continue;
      std::vector<float> got(static_cast<size_t>(T * c.rows));
      MatMul(ctx, x.data(), T, w, got.data());
      std::vector<float> first(static_cast<size_t>(16 * c.rows));
      MatMul(ctx, x.data(), 16, w, first.data());
      EXPECT_TRUE(std::equal(first.begin(), first.end(), got.begin())) << "T=16 on FP8 tiles";
    }
  }
}

// MatMul of x [T, w.cols] on every ISA, bitwise against want(t, r) (rows where it is NaN: the
// NaN codes, skipped).
void ExpectExactOnEveryIsa(ThreadPool& pool, const WeightView& w, const std::vector<float>& x,
                           int64_t T, const std::function<double(int64_t, int64_t)>& want,
                           const std::string& trace) {
  for (Isa isa : RunnableIsas()) {
    KernelContext ctx{&pool, isa};
    std::vector<float> got(static_cast<size_t>(T * w.rows));
    MatMul(ctx, x.data(), T, w, got.data());
    for (int64_t t = 0; t < T; ++t)
      for (int64_t r = 0; r < w.rows; ++r) {
        const double v = want(t, r);
        if (std::isnan(v)) continue;
        ASSERT_EQ(got[static_cast<size_t>(t * w.rows + r)], static_cast<float>(v))
            << IsaName(isa) << " " << trace << " T=" << T << " t=" << t << " row " << r;
      }
  }
}

// Every e4m3 code through the exact tiled path, one product per row so each result is exact:
// row r (256 rows, 8 tiles) holds code r at column k = (r + shift) % 64 and +0 elsewhere (shift 0
// and 1: every code in an even and an odd column), x is a signed power of two in [2^-40, 2^40]
// and the block scales are 0.75 * 2^k, so y[t, r] = e4m3(r) * x[t, k] * scale (at most 6
// significant bits) must come out bitwise on every ISA, NaN codes aside. Pins the decoding of
// each code (subnormals, signs; every line here holds zeros, so AVX-512's line kernel mends
// zero-exponent codes in all of them, where the random weights above mostly take its fast
// loop), its rescaling over that range of x, and which row's scale each lane takes (the 3 x 32
// grid changes scale every 3 rows, so between a lane's even and odd row too, and every 32
// columns).
TEST(Bf16Tiles, EveryFp8CodeExactOnTiles) {
  std::mt19937 rng(5);
  ThreadPool pool(2);
  for (int64_t br : {128, 3})
    for (int64_t shift : {0, 1}) {
      const int64_t bc = br == 128 ? 128 : 32, rows = 256, cols = 64;
      Case c(rng, DType::kF8E4M3, rows, cols, br, bc);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t k = 0; k < cols; ++k)
          c.bytes[static_cast<size_t>(r * cols + k)] =
              k == (r + shift) % cols ? static_cast<uint8_t>(r) : 0;
      for (size_t i = 0; i < c.scale.size(); ++i)
        c.scale[i] = std::ldexp(0.75f, static_cast<int>(i % 9) - 4);
      auto [tiled, w] = Tiled(c);
      std::vector<uint64_t> flags;  // the mended lines found by their flags, as a model's are
      const WeightView flagged = WithLineFlags(w, &flags);
      for (int64_t T : {1, 2, 3}) {
        std::vector<float> x(static_cast<size_t>(T * cols));
        for (size_t i = 0; i < x.size(); ++i)
          x[i] = std::ldexp(i % 3 == 0 ? -1.0f : 1.0f,
                            static_cast<int>((i * 7 + rng() % 3) % 81) - 40);
        for (const WeightView* v : {static_cast<const WeightView*>(&w), &flagged})
          ExpectExactOnEveryIsa(
              pool, *v, x, T,
              [&](int64_t t, int64_t r) {
                const int64_t k = (r + shift) % cols;
                return (r & 0x7f) == 0x7f ? NAN : c.At(r, k) * x[static_cast<size_t>(t * cols + k)];
              },
              "grid " + std::to_string(br) + " shift " + std::to_string(shift) +
                  (v == &flagged ? " flagged" : ""));
      }
    }
}

// The zero-exponent codes (zeros, subnormals), each the only one in its pair-step line: 16 tiles,
// tile t holding zero-exponent code t (negative ones first) in row (13 t + 5) % 32 (either half
// of the line) and nonzero-exponent codes in its other rows, all in column k0; every other column
// holds 0x38 (1.0) and x is 0 there, so y[t, r] = e4m3 * x[t, k0] * scale exactly. AVX-512's line
// kernel must notice a lone code anywhere in a line, of either sign, and mend it (the test above
// has +0 in every line). The 48 x 32 grid has tiles inside one row block and tiles across two.
TEST(Bf16Tiles, LoneZeroExponentCodesExactOnTiles) {
  std::mt19937 rng(6);
  ThreadPool pool(2);
  const int64_t rows = 512, cols = 64;
  std::vector<uint8_t> codes(static_cast<size_t>(rows));
  for (int64_t r = 0, next = 0; r < rows; ++r) {
    const int64_t tile = r / 32;
    if (r % 32 == (13 * tile + 5) % 32) {
      codes[static_cast<size_t>(r)] = static_cast<uint8_t>(tile < 8 ? 0x80 + tile : tile - 8);
      continue;
    }
    uint8_t code;
    do code = static_cast<uint8_t>(next++ % 256);
    while ((code & 0x78) == 0 || (code & 0x7f) == 0x7f);  // nonzero exponent, not NaN
    codes[static_cast<size_t>(r)] = code;
  }
  for (int64_t br : {128, 48})
    for (int64_t k0 : {0, 1, 45, 63}) {
      Case c(rng, DType::kF8E4M3, rows, cols, br, br == 128 ? 128 : 32);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t k = 0; k < cols; ++k)
          c.bytes[static_cast<size_t>(r * cols + k)] =
              k == k0 ? codes[static_cast<size_t>(r)] : 0x38;
      for (size_t i = 0; i < c.scale.size(); ++i)
        c.scale[i] = std::ldexp(0.75f, static_cast<int>(i % 9) - 4);
      auto [tiled, w] = Tiled(c);
      std::vector<uint64_t> flags;  // the lone codes' lines found by their flags, as a model's are
      const WeightView flagged = WithLineFlags(w, &flags);
      for (int64_t T : {1, 2, 3}) {
        std::vector<float> x(static_cast<size_t>(T * cols), 0.0f);
        for (int64_t t = 0; t < T; ++t)
          x[static_cast<size_t>(t * cols + k0)] =
              std::ldexp(t % 2 == 0 ? 1.0f : -1.0f, static_cast<int>(rng() % 41) - 20);
        for (const WeightView* v : {static_cast<const WeightView*>(&w), &flagged})
          ExpectExactOnEveryIsa(
              pool, *v, x, T,
              [&](int64_t t, int64_t r) {
                return c.At(r, k0) * x[static_cast<size_t>(t * cols + k0)];
              },
              "grid " + std::to_string(br) + " k0 " + std::to_string(k0) +
                  (v == &flagged ? " flagged" : ""));
      }
    }
}

// AVX-512's exact FP8 kernels on tiles: a range that starts and ends inside tiles takes its lone
// 16-row halves through the f16 decoding (TiledDotFp8Half) and its whole tiles through the line
// decoding; both give a row the bits the whole weight's product (whole tiles only) gives it, for
// ordinary magnitudes (no product or partial sum near 2^-70), with the halves' rows in one scale
// block (128 x 128) or across two (8 x 32).
TEST(Bf16Tiles, Fp8LoneHalvesGiveTheWholeTilesBits) {
  if (!CpuSupports(Isa::kAvx512)) GTEST_SKIP() << "needs AVX-512";
  std::mt19937 rng(8);
  for (const auto& [br, bc] : {std::pair<int64_t, int64_t>{128, 128}, {8, 32}}) {
    const Case c(rng, DType::kF8E4M3, 128, 256, br, bc);
    auto [tiled, w] = Tiled(c);
    for (int64_t T : {1, 2, 3}) {
      SCOPED_TRACE("grid " + std::to_string(br) + " T=" + std::to_string(T));
      const std::vector<float> x = RandomX(rng, T, c.cols);
      const KernelContext ctx{nullptr, Isa::kAvx512};
      std::vector<float> whole(static_cast<size_t>(T * c.rows)), part(whole.size(), NAN);
      MatMul(ctx, x.data(), T, w, whole.data());
      MatMulRowRange(ctx, x.data(), T, w, 16, c.rows - 16, part.data());
      for (int64_t t = 0; t < T; ++t)
        for (int64_t r = 16; r < c.rows - 16; ++r) {
          const size_t i = static_cast<size_t>(t * c.rows + r);
          ASSERT_EQ(part[i], whole[i]) << "t=" << t << " r=" << r;
        }
    }
  }
}

// The bf16-dot path (AVX-512 BF16, T >= 8) multiplies BF16 tiles in place and converts FP8 tiles
// with no transpose: the bits of the row-major weight's packed panels, on 1 and 2 threads, for
// the whole weight and for row ranges that start on a tile; a range starting inside a tile takes
// the exact path instead.
TEST(Bf16Tiles, Bf16DotReadsTilesInPlace) {
  if (!CpuSupports(Isa::kAvx512)) GTEST_SKIP() << "the bf16-dot path runs on AVX-512 BF16";
  std::mt19937 rng(3);
  ThreadPool pool(2);
  for (const Case& c : Cases(rng, 80, {70, 518, 1100})) {
    SCOPED_TRACE(c.Name());
    const int64_t cols = c.cols;
    const WeightView plain = c.View(c.bytes);
    auto [tiled, w] = Tiled(c);
    for (int64_t T : {8, 13, 64, 200}) {
      const std::vector<float> x = RandomX(rng, T, cols);
      for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
        KernelContext ctx{p, Isa::kAvx512};
        ctx.bf16_dot = true;
        ExpectTilesReadAsRows(ctx, x, T, w, plain, 32, 80);
        ASSERT_FALSE(HasFailure());
      }
      // Rows [16, 48): not on a tile, so the exact path (which differs from bf16-dot's bits).
      KernelContext ctx{nullptr, Isa::kAvx512};
      KernelContext exact = ctx;
      ctx.bf16_dot = true;
      std::vector<float> got(static_cast<size_t>(T * c.rows), 0.0f), want(got.size(), 0.0f);
      MatMulRowRange(ctx, x.data(), T, w, 16, 48, got.data());
      MatMulRowRange(exact, x.data(), T, w, 16, 48, want.data());
      ASSERT_EQ(got, want) << "T=" << T;
    }
  }
}

// A product's tokens given as rows of a larger x (MatMulJob::x_rows, the MoE layer's tokens of one
// expert): the bf16-dot path's packed form (8+ tokens) reads them in place, the bits of the same
// rows copied out first; fewer tokens, and ranges off a tile, take the copy. Tiled and row-major.
TEST(Bf16Tiles, RowsOfXReadInPlace) {
  if (!CpuSupports(Isa::kAvx512)) GTEST_SKIP() << "the bf16-dot path runs on AVX-512 BF16";
  std::mt19937 rng(5);
  ThreadPool pool(2);
  for (const Case& c : Cases(rng, 80, {70, 518})) {
    SCOPED_TRACE(c.Name());
    const int64_t cols = c.cols;
    auto [tiled, tiled_view] = Tiled(c);
    for (const WeightView& w : {c.View(c.bytes), tiled_view}) {
      for (int64_t T : {3, 8, 13, 45}) {
        const int64_t all_rows = 2 * T + 5;
        const std::vector<float> x = RandomX(rng, all_rows, cols);
        std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(all_rows - 1));
        std::vector<int32_t> rows(static_cast<size_t>(T));
        for (int32_t& r : rows) r = pick(rng);
        std::vector<float> gathered(static_cast<size_t>(T * cols));
        for (int64_t t = 0; t < T; ++t)
          std::copy_n(x.begin() + rows[t] * cols, cols, gathered.begin() + t * cols);
        KernelContext ctx{&pool, Isa::kAvx512};
        ctx.bf16_dot = true;
        EXPECT_EQ(ReadsRowsInPlace(ctx, w, T), T >= 8) << "T=" << T;
        std::vector<float> got(static_cast<size_t>(T * c.rows), NAN), want(got.size(), NAN);
        const MatMulJob by_rows{x.data(), T, &w, got.data(), rows.data()};
        const MatMulJob copied{gathered.data(), T, &w, want.data()};
        MatMulBatch(ctx, &by_rows, 1);
        MatMulBatch(ctx, &copied, 1);
        ASSERT_EQ(got, want) << "T=" << T << " tiled=" << (w.row_tiles != 0);
        // Rows [16, 48): off a tile of the tiled weight.
        std::fill(got.begin(), got.end(), 0.0f);
        std::fill(want.begin(), want.end(), 0.0f);
        MatMulRowRangeOfRows(ctx, x.data(), rows.data(), T, w, 16, 48, got.data());
        MatMulRowRange(ctx, gathered.data(), T, w, 16, 48, want.data());
        ASSERT_EQ(got, want) << "rows [16, 48), T=" << T << " tiled=" << (w.row_tiles != 0);
      }
    }
  }
}

}  // namespace
}  // namespace dsv3::ops
