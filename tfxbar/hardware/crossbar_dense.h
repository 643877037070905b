// TfxbarCrossbar's dense method: int8 dot products of every row's plane byte with its cells
// (AVX2 or AMX), the ADC on them in registers (docs/hardware_mode.md, "Engines").
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <immintrin.h>
#include <vector>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "crossbar_plan.h"

namespace tfxbar {

// ---- Dense path: every row's plane byte times its cells, 16 patches at a time ----
//
// With method "dense" (and "auto" where it is the default, `kAutoDense`), the partial sums of 16
// patches come from int8 dot products of their plane bytes (u8) with the cells, zero rows
// included — on random bit-planes that can beat skipping zero rows — by one of two backends:
//
// - AMX tiles (16 patches × 64 rows × 16 columns per `tdpbuud`, cells u8) where the CPU, the OS
//   and the build allow them;
// - else AVX2 `vpmaddubsw` (u8 planes × s8 cells → s16 pair sums, 32 products per instruction;
//   cells ≤ 127, a pair sum ≤ 2^15 − 1), summed in s16 lanes when every partial sum is below
//   2^15, else widened to s32 at once (`vpmaddwd` by ones).
//
// The ADC then runs on int32 lanes (AVX2: in registers, straight from the partial sums). The
// column weights follow the program's shift-add, coef[g][j][q] = coef[g][0][q] · 2^(dac·j) =
// ±2^(e + dac·j): AVX2 adds ±code · 2^(e + dac·j) straight into an int32 accumulator where no
// column's sum can reach 2^31 (`fused`), else (and AMX) the cycles of a group are combined in
// int32 (code << dac·j) before one signed shift by ±2^e into int64. AVX2 reads each patch's
// plane bytes where they lie when every 4 rows of a group are adjacent there (3×3 taps of ≥ 4
// channels), else from a gathered copy; with 1-bit DACs it multiplies two cycles at once
// (`PairCycles`), and skips a patch whose plane bytes are all 0 in a group's rows for a DAC
// cycle (ReLU codes of a background region; the sparse high planes): its partial sums there
// are 0, and so are their codes.

enum class Backend { kNone, kAmx, kAvx2Narrow, kAvx2Wide };

// "auto" takes the dense path on CPUs without AVX-512 (where the sparse path loses its 64-byte
// zero test and vector adds; measured in docs/benchmarks.md), the sparse path elsewhere.
#if defined(__AVX2__) && !defined(__AVX512BW__)
constexpr bool kAutoDense = true;
#else
constexpr bool kAutoDense = false;
#endif

// Whether this process may use AMX tiles (asked once: Linux grants them per process on request).
inline bool AmxUsable() {
#if defined(__AMX_INT8__) && defined(__AMX_TILE__) && defined(__linux__)
  static const bool usable = [] {
    constexpr long kReqPerm = 0x1023, kXtileData = 18;   // ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA
    return syscall(SYS_arch_prctl, kReqPerm, kXtileData) == 0;
  }();
  return usable;
#else
  return false;
#endif
}

// The dense backend that can run cells up to `cell_max` on planes up to `plane_max` exactly.
inline Backend ChooseBackend(double cell_max, int64_t plane_max, double bound) {
  if (AmxUsable() && cell_max <= 255) return Backend::kAmx;
#if defined(__AVX2__)
  if (cell_max <= 127 && 2.0 * static_cast<double>(plane_max) * cell_max <= 32767.0)
    return bound < 32768.0 ? Backend::kAvx2Narrow : Backend::kAvx2Wide;
#endif
  return Backend::kNone;
}

// Quads of a group that lie side by side in a patch's plane bytes: `bytes` from `offset` on.
struct PlaneSpan {
  int64_t offset, bytes;
};

struct DensePlan {
  Backend backend;
  int64_t qd;                          // Q padded to 16
  std::vector<int64_t> kp;             // (G,) rows of each group padded to 64
  std::vector<int64_t> k4;             // (G,) rows of each group in quads (rows past them are 0)
  std::vector<bool> direct;            // (G,) every quad of rows is contiguous in the planes
  // (G,) AVX2 reads the group's quads where they lie in the planes (direct, and no reference
  // column: its sum is taken from the gathered rows); else from a gathered copy.
  std::vector<bool> in_place;
  std::vector<int64_t> qoff, qoff_start;  // quad k of group g at qoff[qoff_start[g] + k] from a patch's origin
  std::vector<int64_t> iota;           // 0, 4, 8, …: the quads of a gathered A row
  std::vector<int64_t> a_start;        // (G + 1,) byte offset of each group's A block (16 · kp)
  std::vector<int64_t> b_start;        // (G,) offset of each group's packed cells
  std::vector<uint8_t> b;              // per group, column block, 64-row chunk: 16 × 64 bytes
  std::vector<int32_t> shift, half;    // (G, qd)
  std::vector<int32_t> exp, sign;     // (G, qd) cycle-0 weight: sign · 2^exp, sign ∈ {−1, 0, 1}
  // AVX2 with `fused`: each code goes straight into an int32 accumulator per column as
  // sign · code · 2^(dac·j + exp) (exact: PlanDense bounds every column's sum below 2^31), else
  // into y (code · 2^(dac·j); the all-0 / all-1 tables), combined per group in int64.
  bool fused = false;
  std::vector<int32_t> zeros, ones;
  int pair_shift = 0;       // > 0: paired cycles (`PairCycles`), plane byte x + x' · 2^pair_shift
  int64_t pair_quads = 0;   // quads summed in s16 before the two cycles' sums are split
  // Per group, where its quads lie in a patch's plane bytes (in place or in the gathered copy):
  // a patch whose bytes there are all 0 is skipped (`AnyPlaneByte`).
  std::vector<PlaneSpan> spans;
  std::vector<int64_t> span_start;   // (G + 1,)
};

// Two DAC cycles per `vpmaddubsw` (AVX2, s16 partial sums): with the plane byte u = x + x' · 2^k
// (x, x' the planes of cycles 2i and 2i + 1), a pair sum is f + f' · 2^k, and f, f' can be told
// apart while f < 2^k. f grows by at most 2 · plane · cell per quad, so every `pair_quads` quads
// the running sum is split: hi += sum >> k, all += sum (mod 2^16); at the end f' = hi and
// f = all − hi · 2^k (mod 2^16, exact: every partial sum is below 2^15 on this path). For 1-bit
// DACs and cells up to 31 this halves the multiplies and plane reads of cycles 2i, 2i + 1.
// Only when every group reads its planes in place (the planes then hold the pairs).
inline void PairCycles(int64_t plane_max, double cell_max, int64_t cycles, bool all_direct, DensePlan* d) {
  int k = 7;
  while (k > 0 && plane_max * ((int64_t{1} << k) + 1) > 255) --k;   // u fits a byte
  const double growth = 2.0 * static_cast<double>(plane_max) * cell_max;
  const int64_t quads = growth > 0 ? static_cast<int64_t>(static_cast<double>((int64_t{1} << k) - 1) / growth) : 0;
  if (d->backend != Backend::kAvx2Narrow || cycles < 2 || !all_direct || quads < 2) return;
  d->pair_shift = k;
  d->pair_quads = quads;
}

// Σ of n plane bytes (the reference column's partial sum).
inline int64_t SumBytes(const uint8_t* a, int64_t n) {
  int64_t total = 0;
  int64_t k = 0;
#if defined(__AVX2__)
  __m256i sum = _mm256_setzero_si256();
  for (; k + 32 <= n; k += 32)
    sum = _mm256_add_epi64(sum, _mm256_sad_epu8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + k)),
                                                _mm256_setzero_si256()));
  alignas(32) int64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), sum);
  total = lanes[0] + lanes[1] + lanes[2] + lanes[3];
#endif
  for (; k < n; ++k) total += a[k];
  return total;
}

#if defined(__AVX2__)
// Whether some plane byte of group g's quads is ≠ 0 in the patch whose bytes start at `src`
// (32-byte loads, the last one masked to the span; the planes and the gathered copy have 32
// bytes to spare past their ends).
inline bool AnyPlaneByte(const DensePlan& d, int64_t g, const uint8_t* src) {
  alignas(32) static const uint8_t kKeep[64] = {
      255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
      255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255};
  __m256i any = _mm256_setzero_si256();
  for (int64_t u = d.span_start[g]; u < d.span_start[g + 1]; ++u) {
    const uint8_t* at = src + d.spans[u].offset;
    int64_t left = d.spans[u].bytes;
    for (; left >= 32; left -= 32, at += 32)
      any = _mm256_or_si256(any, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(at)));
    if (left > 0) {   // keep bytes [0, left): kKeep[32 − left …] starts with `left` 255s
      const __m256i keep = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kKeep + 32 - left));
      any = _mm256_or_si256(any, _mm256_and_si256(keep, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(at))));
    }
  }
  return !_mm256_testz_si256(any, any);
}

// The ADC on 8 columns' int32 partial sums: floor(part · 2^−s + 0.5) = (part + half) >> s,
// saturating at top (counted in `over`, negated).
inline __m256i Avx2Adc(__m256i part, __m256i h, __m256i s, __m256i vtop, __m256i& over) {
  const __m256i code = _mm256_srlv_epi32(_mm256_add_epi32(part, h), s);
  over = _mm256_add_epi32(over, _mm256_cmpgt_epi32(code, vtop));
  return _mm256_min_epi32(code, vtop);
}

// out[0..8) += sign · code · 2^up (per lane).
inline void Avx2Add(__m256i code, __m256i up, __m256i sign, int32_t* out) {
  __m256i* o = reinterpret_cast<__m256i*>(out);
  _mm256_storeu_si256(o, _mm256_add_epi32(_mm256_loadu_si256(o), _mm256_sign_epi32(_mm256_sllv_epi32(code, up), sign)));
}

// What one call of a register block reads (one row group and DAC cycle, or pair of cycles).
struct Avx2Args {
  const uint8_t* const* src;   // src[r]: patch r's plane bytes (quad k at src[r] + qoff[k])
  const int64_t* qoff;
  int64_t quads;
  const uint8_t* b;            // the group's cells, VNNI order, `chunk` bytes per column tile
  int64_t chunk, live, qd;     // live: patches (of src, out_row)
  const int32_t* shift;
  const int32_t* half;
  __m256i vtop;
  __m256i vup;                 // code shift of the cycle
  __m128i vdac;                // paired: the next cycle's codes weigh 2^dac more
  __m128i vpair;               // paired: the plane byte's field shift k
  int64_t pair_quads;          // paired: quads between splits
  const int32_t* exp;          // (qd,) per column: code shift on top of the cycle's
  const int32_t* sign;         // (qd,) per column: −1, 0, 1
  int32_t* y;                  // 16 × qd: Σ sign · code · 2^(up + exp)
  const int64_t* out_row;      // out_row[r]: patch r's row of y
};

// One register block: patches r0 … r0 + kP − 1 (those past `live` repeat the last one and are
// discarded) × kV vectors of 8 columns from column tile t0 on. kPaired: two cycles at once
// (`PairCycles`, s16 partial sums).
template <bool kNarrow, bool kPaired, int kP, int kV>
inline void Avx2Block(const Avx2Args& a, int64_t t0, int64_t r0, __m256i& over) {
  const __m256i ones = _mm256_set1_epi16(1);
  const uint8_t* row[kP];
  for (int r = 0; r < kP; ++r) row[r] = a.src[std::min<int64_t>(r0 + r, a.live - 1)];
  const uint8_t* bv[kV];
  for (int v = 0; v < kV; ++v) bv[v] = a.b + (t0 + v / 2) * a.chunk + 32 * (v % 2);
  __m256i acc[kP][kV], all[kP][kV], hi[kP][kV];
  for (int r = 0; r < kP; ++r)
    for (int v = 0; v < kV; ++v) acc[r][v] = all[r][v] = hi[r][v] = _mm256_setzero_si256();
  const int64_t split = kPaired ? a.pair_quads : a.quads;
  for (int64_t k0 = 0; k0 < a.quads; k0 += split) {
    const int64_t k1 = std::min(a.quads, k0 + split);
    for (int64_t k = k0; k < k1; ++k) {
      __m256i bk[kV];
      for (int v = 0; v < kV; ++v) bk[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bv[v] + 64 * k));
      const int64_t o = a.qoff[k];
      for (int r = 0; r < kP; ++r) {
        int32_t quad;
        std::memcpy(&quad, row[r] + o, 4);
        const __m256i x = _mm256_set1_epi32(quad);
        for (int v = 0; v < kV; ++v) {
          const __m256i pair = _mm256_maddubs_epi16(x, bk[v]);
          // Narrow: s16 lanes (rows 4k, 4k+1 and 4k+2, 4k+3 of each column); else s32 at once.
          acc[r][v] = kNarrow ? _mm256_add_epi16(acc[r][v], pair)
                              : _mm256_add_epi32(acc[r][v], _mm256_madd_epi16(pair, ones));
        }
      }
    }
    if (kPaired)
      for (int r = 0; r < kP; ++r)
        for (int v = 0; v < kV; ++v) {
          hi[r][v] = _mm256_add_epi16(hi[r][v], _mm256_srl_epi16(acc[r][v], a.vpair));
          all[r][v] = _mm256_add_epi16(all[r][v], acc[r][v]);
          acc[r][v] = _mm256_setzero_si256();
        }
  }
  const int64_t rows = std::min<int64_t>(kP, a.live - r0);
  for (int v = 0; v < kV; ++v) {
    const int64_t q = 16 * t0 + 8 * v;
    const __m256i s = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.shift + q));
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.half + q));
    const __m256i e = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.exp + q));
    const __m256i sign = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.sign + q));
    const __m256i up = _mm256_add_epi32(e, a.vup);
    for (int r = 0; r < kP; ++r) {
      if (r >= rows) break;
      int32_t* out = a.y + a.out_row[r0 + r] * a.qd + q;
      if (kPaired) {
        // The two cycles' codes as one term: code + code' · 2^dac, then · sign · 2^up.
        const __m256i low = _mm256_sub_epi16(all[r][v], _mm256_sll_epi16(hi[r][v], a.vpair));
        const __m256i code = Avx2Adc(_mm256_madd_epi16(low, ones), h, s, a.vtop, over);
        const __m256i next = Avx2Adc(_mm256_madd_epi16(hi[r][v], ones), h, s, a.vtop, over);
        Avx2Add(_mm256_add_epi32(code, _mm256_sll_epi32(next, a.vdac)), up, sign, out);
      } else {
        Avx2Add(Avx2Adc(kNarrow ? _mm256_madd_epi16(acc[r][v], ones) : acc[r][v], h, s, a.vtop, over), up, sign,
                out);
      }
    }
  }
}

// AVX2, one row group and DAC cycle (or pair of cycles) of `live` ≤ 16 patches: the partial
// sums of nb column tiles of 16, the ADC on them in registers, code << up added into y;
// returns the number of clipped codes.
template <bool kNarrow, bool kPaired>
int64_t Avx2Cycle(const Avx2Args& a, int64_t nb) {
  __m256i over = _mm256_setzero_si256();   // − clipped codes, per lane
  // Two patches × two column tiles: the fastest of the shapes tried side by side on an AVX2
  // CPU (4 × 1, 2 × 2, 3 × 2, 6 × 1, 8 × 1, 1 × 4, 2 × 3, 1 × 2, 2 × 4 patches × tiles).
  constexpr int kP = 2, kT = 2;
  int64_t t0 = 0;
  for (; t0 + kT <= nb; t0 += kT)
    for (int64_t r0 = 0; r0 < a.live; r0 += kP) Avx2Block<kNarrow, kPaired, kP, 2 * kT>(a, t0, r0, over);
  for (; t0 < nb; ++t0)
    for (int64_t r0 = 0; r0 < a.live; r0 += 4) Avx2Block<kNarrow, kPaired, 4, 2>(a, t0, r0, over);
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), over);
  int64_t clips = 0;
  for (int32_t v : lanes) clips -= v;
  return clips;
}
#endif

#if defined(__AMX_INT8__) && defined(__AMX_TILE__)
struct alignas(64) TileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// Tile c (an immediate) += A tile 4 · B tile 5, for C tiles 0..3.
#define TFXBAR_DP(c) _tile_dpbuud(c, 4, 5)

// The partial sums of 16 patches for `nt` ≤ 4 column tiles of one row group and DAC cycle:
// c[t][r·16 + n] = Σ_k a[r·kp + k] · cell(k, 16·t + n), from the A block `a` (16 × kp plane
// bytes) and the group's cells from column tile 0 on, `b` (VNNI order, `chunk` bytes per tile).
using Partials = int32_t[4][16 * 16];

// AMX (the tile configuration loaded on this thread): C tiles 0..3, one per column tile.
void AmxPartials(const uint8_t* a, int64_t kp, const uint8_t* b, int64_t chunk, int64_t nt, Partials& c) {
  const int64_t chunks = kp / 64;
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t kc = 0; kc < chunks; ++kc) {
    _tile_loadd(4, a + kc * 64, kp);
    const uint8_t* bk = b + kc * 1024;
    _tile_loadd(5, bk, 64);
    TFXBAR_DP(0);
    if (nt > 1) { _tile_loadd(5, bk + chunk, 64); TFXBAR_DP(1); }
    if (nt > 2) { _tile_loadd(5, bk + 2 * chunk, 64); TFXBAR_DP(2); }
    if (nt > 3) { _tile_loadd(5, bk + 3 * chunk, 64); TFXBAR_DP(3); }
  }
  _tile_stored(0, c[0], 64);
  if (nt > 1) _tile_stored(1, c[1], 64);
  if (nt > 2) _tile_stored(2, c[2], 64);
  if (nt > 3) _tile_stored(3, c[3], 64);
}
#undef TFXBAR_DP
#endif  // AMX

#if defined(__AVX2__)
int64_t RunBlocksDense(const Plan& p, const DensePlan& d, const uint8_t* planes, int64_t begin, int64_t end) {
#if defined(__AMX_INT8__) && defined(__AMX_TILE__)
  if (d.backend == Backend::kAmx) {
    TileConfig config{};
    config.palette = 1;
    for (int t = 0; t < 6; ++t) {
      config.rows[t] = 16;
      config.colsb[t] = 64;
    }
    _tile_loadconfig(&config);
  }
#endif
  // Tails past a group's rows stay 0; 32 bytes to spare for `AnyPlaneByte`'s loads.
  std::vector<uint8_t> a(d.a_start[p.groups] + 32, 0);
  std::vector<int64_t> acc(16 * d.qd);
  std::vector<int32_t> y(16 * d.qd);   // fused: the int32 accumulator of the 16 patches
  std::vector<double> sums(p.cols);
#if defined(__AMX_INT8__) && defined(__AMX_TILE__)
  alignas(64) Partials c;
#endif
  int64_t origin[16], total[16], clips = 0;
  const int64_t nb = d.qd / 16;
  for (int64_t m0 = begin; m0 < end; m0 += 16) {
    const int64_t live = std::min<int64_t>(16, end - m0);
    // Patch m0 + r at (b, oy, ox), stepped along without a division per patch; rows past the
    // end repeat the last patch (discarded).
    int64_t b = m0 / (p.out_h * p.out_w), oy = (m0 / p.out_w) % p.out_h, ox = m0 % p.out_w;
    for (int64_t r = 0; r < 16; ++r) {
      if (r >= live) {
        origin[r] = origin[live - 1];
      } else if (p.conv) {
        origin[r] = b * p.image_stride + (oy * p.sh * p.wp + ox * p.sw) * p.channels;
        if (++ox == p.out_w) {
          ox = 0;
          if (++oy == p.out_h) oy = 0, ++b;
        }
      } else {
        origin[r] = (m0 + r) * p.image_stride;
      }
      total[r] = 0;
    }
    if (d.fused) {
      std::fill(y.begin(), y.end(), 0);
    } else {
      std::fill(acc.begin(), acc.end(), 0);
    }
    for (int64_t g = 0; g < p.groups; ++g) {
      const int64_t kp = d.kp[g], chunk = kp * 16;
      uint8_t* ag = a.data() + d.a_start[g];
      const uint8_t* bg = d.b.data() + d.b_start[g];
      const int32_t* s = d.shift.data() + g * d.qd;
      const int32_t* h = d.half.data() + g * d.qd;
      const int32_t top = static_cast<int32_t>(p.top);
      if (!d.fused) std::fill(y.begin(), y.end(), 0);
      const int64_t rs = p.ref_shift[g];
      const bool direct = d.in_place[g];
      const int64_t* qoff = direct ? d.qoff.data() + d.qoff_start[g] : d.iota.data();
      // Paired: slot j holds cycles 2j and 2j + 1 (the last one alone for an odd count).
      const int64_t slots = d.pair_shift > 0 ? (p.cycles + 1) / 2 : p.cycles;
      for (int64_t j = 0; j < slots; ++j) {
        const int64_t cycle = d.pair_shift > 0 ? 2 * j : j;
        const uint8_t* base = planes + j * p.plane_stride;
        const uint8_t* src[16];
        for (int64_t r = 0; r < 16; ++r) src[r] = direct ? base + origin[r] : ag + r * kp;
        if (!direct)
          for (int64_t r = 0; r < 16; ++r)   // gather: the group's rows of each patch, in cell order
            for (int64_t u = p.run_start[g]; u < p.run_start[g + 1]; ++u) {
              const Run& run = p.runs[u];
              std::memcpy(ag + r * kp + (run.row - p.start[g]), base + origin[r] + run.offset, run.length);
            }
        // AVX2: only the patches with a plane byte ≠ 0 among the group's rows; the others' partial
        // sums are 0, their codes 0 (round half up of 0): they add nothing and clip nothing.
        const uint8_t* taken[16];
        int64_t taken_row[16], n_taken = 0;
        for (int64_t r = 0; r < live; ++r)
          if (d.backend == Backend::kAmx || AnyPlaneByte(d, g, src[r])) {
            taken[n_taken] = src[r];
            taken_row[n_taken++] = r;
          }
        const int32_t up = static_cast<int32_t>(p.dac * cycle);
        const Avx2Args args{taken, qoff, d.k4[g], bg, chunk, n_taken, d.qd, s, h, _mm256_set1_epi32(top),
                            _mm256_set1_epi32(up), _mm_cvtsi32_si128(static_cast<int>(p.dac)),
                            _mm_cvtsi32_si128(d.pair_shift), d.pair_quads,
                            d.fused ? d.exp.data() + g * d.qd : d.zeros.data(),
                            d.fused ? d.sign.data() + g * d.qd : d.ones.data(), y.data(), taken_row};
        if (n_taken > 0 && d.pair_shift > 0 && cycle + 1 < p.cycles) {
          clips += Avx2Cycle<true, true>(args, nb);
        } else if (n_taken > 0 && d.backend == Backend::kAvx2Narrow) {
          clips += Avx2Cycle<true, false>(args, nb);
        } else if (n_taken > 0 && d.backend == Backend::kAvx2Wide) {
          clips += Avx2Cycle<false, false>(args, nb);
        }
#if defined(__AMX_INT8__) && defined(__AMX_TILE__)
        for (int64_t cb = 0; d.backend == Backend::kAmx && cb < nb; cb += 4) {
          const int64_t nt = std::min<int64_t>(4, nb - cb);
          AmxPartials(ag, kp, bg + cb * chunk, chunk, nt, c);
          // ADC: floor(partial · 2^−s + 0.5) saturating at top, then code · 2^(dac·j) into y.
          for (int64_t t = 0; t < nt; ++t) {
            const int64_t q0 = (cb + t) * 16;
            int32_t over[16] = {};
            for (int64_t r = 0; r < live; ++r) {   // rows past `live` are discarded
              const int32_t* __restrict part = c[t] + r * 16;
              const int32_t* __restrict hq = h + q0;
              const int32_t* __restrict sq = s + q0;
              int32_t* __restrict yr = y.data() + r * d.qd + q0;
              for (int k = 0; k < 16; ++k) {
                const int32_t code = (part[k] + hq[k]) >> sq[k];
                over[k] += code > top;
                yr[k] += (code > top ? top : code) << up;
              }
            }
            for (int k = 0; k < 16; ++k) clips += over[k];
          }
        }
#endif
        if (rs >= 0) {   // the reference column: Σ plane values of the group's rows, its own ADC
          for (int64_t r = 0; r < 16; ++r) {
            const int64_t v = SumBytes(ag + r * kp, kp);
            int64_t code = rs == 0 ? v : (rs > 62 ? 0 : (v + (int64_t{1} << (rs - 1))) >> rs);
            clips += r < live && code > p.top;
            code = code > p.top ? p.top : code;
            total[r] += code << (rs + p.dac * cycle);
          }
        }
      }
      for (int64_t r = 0; !d.fused && r < live; ++r) {
        int64_t* __restrict ar = acc.data() + r * d.qd;
        const int32_t* __restrict yr = y.data() + r * d.qd;
        const int32_t* __restrict e = d.exp.data() + g * d.qd;
        const int32_t* __restrict sg = d.sign.data() + g * d.qd;
        const int64_t qd = d.qd;
        for (int64_t q = 0; q < qd; ++q) {   // sign · y · 2^e, as masks (vectorizes; a 64-bit multiply does not)
          const int64_t keep = -static_cast<int64_t>(sg[q] & 1), neg = sg[q] < 0 ? -1 : 0;
          const int64_t term = (static_cast<int64_t>(yr[q]) << e[q]) & keep;
          ar[q] += (term ^ neg) - neg;
        }
      }
    }
    for (int64_t r = 0; r < live; ++r) {
      // Σ of each output's columns (its slices / polarities, q ≡ n mod cols): exact in float64
      // (integers below 2^53), so X = Σ · 2^f − total · B takes the TF path's float64 operations.
      double* __restrict v = sums.data();
      std::fill(sums.begin(), sums.end(), 0.0);
      if (d.fused) {
        const int32_t* __restrict yr = y.data() + r * d.qd;
        for (int64_t q0 = 0; q0 < d.qd; q0 += p.cols)
          for (int64_t n = 0; n < std::min(p.cols, d.qd - q0); ++n) v[n] += static_cast<double>(yr[q0 + n]);
      } else {
        const int64_t* ar = acc.data() + r * d.qd;
        for (int64_t n = 0; n < p.cols; ++n) {
          int64_t total_n = 0;
          for (int64_t q = n; q < d.qd; q += p.cols) total_n += ar[q];
          v[n] = static_cast<double>(total_n);
        }
      }
      const double offset = static_cast<double>(total[r]);
      const double* __restrict b = p.offset_num;
      const int64_t m = m0 + r;
      if (p.scale != nullptr) {
        const double* __restrict scale = p.scale;
        float* __restrict out = p.out_real + m * p.cols;
        for (int64_t n = 0; n < p.cols; ++n) out[n] = static_cast<float>((v[n] * p.unit - offset * b[n]) * scale[n]);
      } else {
        double* __restrict out = p.out_x + m * p.cols;
        for (int64_t n = 0; n < p.cols; ++n) out[n] = v[n] * p.unit - offset * b[n];
      }
    }
  }
#if defined(__AMX_INT8__) && defined(__AMX_TILE__)
  if (d.backend == Backend::kAmx) _tile_release();
#endif
  return clips;
}
#endif  // AVX2

// The dense plan (packed cells, int32 ADC tables) when a dense backend can run this call
// exactly: its cell and pair-sum limits hold (`ChooseBackend`), partial sum + half step and the
// cycle-combined codes fit int32, and the weights follow the shift-add
// (coef[g][j] = coef[g][0] · 2^(dac·j)).
template <typename T>
bool PlanDense(const Plan& p, const T* cells, int64_t q_width, const int32_t* shift, const int64_t* coef,
               double bound, T cell_max, DensePlan* d) {
  d->backend = ChooseBackend(static_cast<double>(cell_max), (int64_t{1} << p.dac) - 1, bound);
  if (d->backend == Backend::kNone) return false;
  const int64_t g_count = p.groups;
  int64_t max_shift = 0;
  for (int64_t i = 0; i < g_count * q_width; ++i) max_shift = std::max<int64_t>(max_shift, shift[i]);
  if (max_shift > 30 || bound + std::ldexp(1.0, static_cast<int>(max_shift)) >= 2147483648.0) return false;
  if (std::ldexp(static_cast<double>(p.top) + 1.0, static_cast<int>(p.dac * p.cycles)) >= 2147483648.0)
    return false;
  for (int64_t g = 0; g < g_count; ++g)
    for (int64_t j = 1; j < p.cycles; ++j)
      for (int64_t q = 0; q < q_width; ++q) {
        const int64_t c0 = coef[g * p.cycles * q_width + q];
        const int64_t cj = coef[(g * p.cycles + j) * q_width + q];
        if (static_cast<double>(cj) != std::ldexp(static_cast<double>(c0), static_cast<int>(p.dac * j)))
          return false;
      }
  d->qd = (q_width + 15) / 16 * 16;
  const int64_t blocks = d->qd / 16;
  d->kp.resize(g_count);
  d->k4.resize(g_count);
  int64_t max_quads = 0;
  d->a_start.assign(1, 0);
  d->b_start.resize(g_count);
  int64_t b_size = 0;
  for (int64_t g = 0; g < g_count; ++g) {
    d->kp[g] = (p.start[g + 1] - p.start[g] + 63) / 64 * 64;
    d->k4[g] = (p.start[g + 1] - p.start[g] + 3) / 4;
    // Quad k is rows 4k..4k+3 of the group; direct when they lie side by side in the planes.
    d->qoff_start.push_back(static_cast<int64_t>(d->qoff.size()));
    bool contiguous = true;
    for (int64_t k = 0; k < d->k4[g]; ++k) {
      const int64_t first = p.start[g] + 4 * k, last = std::min(first + 4, p.start[g + 1]);
      for (int64_t i = first + 1; i < last; ++i) contiguous &= p.offset[i] == p.offset[first] + (i - first);
      d->qoff.push_back(p.offset[first]);
    }
    d->direct.push_back(contiguous);
    max_quads = std::max(max_quads, d->k4[g]);
    d->a_start.push_back(d->a_start.back() + 16 * d->kp[g]);
    d->b_start[g] = b_size;
    b_size += blocks * d->kp[g] * 16;
  }
  // B tiles in the VNNI order: byte (k4, 4·n + kk) = cell (row 4·k4 + kk, column n).
  for (int64_t k = 0; k < max_quads; ++k) d->iota.push_back(4 * k);
  d->b.assign(b_size, 0);
  for (int64_t g = 0; g < g_count; ++g) {
    const int64_t chunks = d->kp[g] / 64, rows = p.start[g + 1] - p.start[g];
    for (int64_t cb = 0; cb < blocks; ++cb)
      for (int64_t kc = 0; kc < chunks; ++kc) {
        uint8_t* tile = d->b.data() + d->b_start[g] + (cb * chunks + kc) * 1024;
        for (int64_t k = kc * 64; k < std::min(rows, kc * 64 + 64); ++k)
          for (int64_t n = 0; n < 16 && cb * 16 + n < q_width; ++n)
            tile[((k % 64) / 4) * 64 + 4 * n + k % 4] =
                static_cast<uint8_t>(cells[(p.start[g] + k) * q_width + cb * 16 + n]);
      }
  }
  d->shift.assign(g_count * d->qd, 0);
  d->half.assign(g_count * d->qd, 0);
  d->exp.assign(g_count * d->qd, 0);
  d->sign.assign(g_count * d->qd, 0);
  for (int64_t g = 0; g < g_count; ++g)
    for (int64_t q = 0; q < q_width; ++q) {
      const int32_t sq = shift[g * q_width + q];
      d->shift[g * d->qd + q] = sq;
      d->half[g * d->qd + q] = sq == 0 ? 0 : int32_t{1} << (sq - 1);
      const int64_t c0 = coef[g * p.cycles * q_width + q], mag = c0 < 0 ? -c0 : c0;
      if (mag != 0) {
        if ((mag & (mag - 1)) != 0 || mag > (int64_t{1} << 32)) return false;
        d->exp[g * d->qd + q] = __builtin_ctzll(static_cast<uint64_t>(mag));
        d->sign[g * d->qd + q] = c0 < 0 ? -1 : 1;
      }
    }
  // Fused int32 accumulation when every column's Σ over groups of (top + 1) · 2^(dac·cycles + exp)
  // stays below 2^31 (AVX2 only: the AMX path adds its codes into y).
  d->fused = d->backend != Backend::kAmx;
  for (int64_t q = 0; q < q_width; ++q) {
    double most = 0;
    for (int64_t g = 0; g < g_count; ++g)
      if (d->sign[g * d->qd + q] != 0)
        most += std::ldexp(static_cast<double>(p.top) + 1.0, static_cast<int>(p.dac * p.cycles + d->exp[g * d->qd + q]));
    d->fused &= most < 2147483648.0;
  }
  d->zeros.assign(d->qd, 0);
  d->ones.assign(d->qd, 1);
  d->span_start.assign(1, 0);
  bool all_direct = true;
  for (int64_t g = 0; g < g_count; ++g) {
    d->in_place.push_back(d->backend != Backend::kAmx && d->direct[g] && p.ref_shift[g] < 0);
    all_direct &= d->in_place[g];
    const int64_t* at = d->in_place[g] ? d->qoff.data() + d->qoff_start[g] : d->iota.data();
    for (int64_t k = 0; k < d->k4[g];) {   // a run of adjacent quads
      int64_t n = 1;
      while (k + n < d->k4[g] && at[k + n] == at[k] + 4 * n) ++n;
      d->spans.push_back({at[k], 4 * n});
      k += n;
    }
    d->span_start.push_back(static_cast<int64_t>(d->spans.size()));
  }
  PairCycles((int64_t{1} << p.dac) - 1, static_cast<double>(cell_max), p.cycles, all_direct, d);
  return true;
}

}  // namespace tfxbar
