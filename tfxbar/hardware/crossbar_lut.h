// TfxbarCrossbar's lookup method (1-bit DACs, AVX2): the bit-planes of four rows that share a
// kernel tap and a quad of channels form a 4-bit index; a 16-entry table per column holds the
// sum of their cells for every index, so one `vpshufb` forms 4-row partial sums of 16 patches
// for two columns (128 products) where `vpmaddubsw` forms 32 (docs/hardware_mode.md, "Engines").
//
// The planes are stored as one byte per (cycle, channel quad, padded pixel): the index of the
// quad's four channels there. 16 patches side by side along an output row read their indices
// for a tap as 16 adjacent bytes (stride-1 convolutions; a Dense layer's patches are batch
// rows). Table sums add up in bytes for `reps` chunks, then in u16 lanes; the ADC runs on the
// u16 partial sums (round half up at 2^shift as a high multiply by 2^(16 − shift)), the codes of
// the cycles combine in u16 (code · 2^j) and go into an int32 accumulator per column as
// sign · combined · 2^exp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <immintrin.h>
#include <map>
#include <new>
#include <utility>
#include <vector>

#include "crossbar_plan.h"

namespace tfxbar {

// Storage on 64-byte boundaries: a table's 32-byte loads then never straddle a cache line.
template <typename T>
struct CacheAligned {
  using value_type = T;
  CacheAligned() = default;
  template <typename U>
  CacheAligned(const CacheAligned<U>&) {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
  void deallocate(T* p, std::size_t) { ::operator delete(p, std::align_val_t(64)); }
  template <typename U>
  bool operator==(const CacheAligned<U>&) const { return true; }
  template <typename U>
  bool operator!=(const CacheAligned<U>&) const { return false; }
};

// Column pairs per register block: 4 byte sums, 8 u16 sums, an index and a table fit the 16
// ymm registers.
constexpr int kLutPairs = 4;
// Output rows per pass over a pair block's tables (which then stay in L1).
constexpr int kLutUnits = 4;

// A chunk: the rows of a group at kernel tap (dy, dx) and channels 4 · quad … 4 · quad + 3.
struct LutChunk {
  int64_t quad, dy, dx;
  bool operator<(const LutChunk& o) const {
    return quad != o.quad ? quad < o.quad : dy != o.dy ? dy < o.dy : dx < o.dx;
  }
};

// What depends on the cells and tables only (kept from call to call while they do not change).
struct LutPlan {
  int64_t pairs = 0, qd = 0;       // column pairs (padded to kLutPairs), columns (2 · pairs)
  std::vector<int64_t> chunk_start;  // (G + 1,) each group's first chunk
  std::vector<LutChunk> chunks;
  std::vector<int64_t> reps;         // (G,) chunks summed in bytes before widening to u16
  std::vector<int64_t> table_start;  // (G,) each group's tables
  // Per group, pair block, chunk, pair: 32 bytes, column 2p's 16 sums then column 2p + 1's.
  std::vector<uint8_t, CacheAligned<uint8_t>> tables;
  // Per group and pair, 16 u16 (8 for column 2p, 8 for 2p + 1): the ADC's half step, high
  // multiplier 2^(16 − shift) (0 when shift is 0 or ≥ 16) and a mask keeping the sum itself
  // (shift 0).
  std::vector<uint16_t, CacheAligned<uint16_t>> half, mul, keep;
  std::vector<int32_t> exp, sign;    // (G, qd) column weight sign · 2^exp of cycle 0
  // Narrow: every column's Σ over groups and cycles of top · 2^(exp + j) is below 2^15, so codes
  // go straight into int16 lanes as code · mult, mult = sign · 2^(exp + j) per (G, pair, cycle):
  // 16 int16, 8 for column 2p, 8 for 2p + 1. Else combined per group in u16, then int32.
  bool narrow = false;
  std::vector<int16_t, CacheAligned<int16_t>> mult;
};

// What depends on the call's geometry: where the index bytes lie.
struct LutLayout {
  int64_t hp = 1, wp = 1;          // padded input height and width (Dense: 1, 1)
  int64_t quads = 0;               // channel quads: ceil(C / 4) (Dense: ceil(K / 4))
  int64_t cq_stride = 0;           // bytes from one channel quad's index plane to the next
  int64_t cycle_stride = 0;        // bytes from one DAC cycle's planes to the next
  int64_t units = 0, segments = 1; // 16-patch units; per output row (Conv2D)
  std::vector<int64_t> chunk_off;  // per chunk: its index bytes from a unit's position
};

inline LutLayout LayOutLut(const Plan& p, const LutPlan& L, int64_t batch, int64_t hp) {
  LutLayout a;
  a.hp = p.conv ? hp : 1;
  a.wp = p.conv ? p.wp : 1;
  a.quads = (p.channels + 3) / 4;
  // 32 bytes to spare: a unit's last lanes read up to 15 bytes past its plane (discarded).
  a.cq_stride = batch * a.hp * a.wp + 32;
  a.cycle_stride = a.quads * a.cq_stride;
  a.segments = p.conv ? (p.out_w + 15) / 16 : 1;
  a.units = p.conv ? batch * p.out_h * a.segments : (batch + 15) / 16;
  for (const LutChunk& c : L.chunks) a.chunk_off.push_back(c.quad * a.cq_stride + c.dy * a.wp + c.dx);
  return a;
}

// The lookup plan when this call can run it exactly: 1-bit DACs, stride-1 convolutions or Dense
// layers, no reference columns, partial sums below 2^15, table sums of a chunk ≤ 255, cycle
// codes combined below 2^16, power-of-two column weights that follow the shift-add, and every
// output's sum below 2^31 in magnitude. `rows`: the patch row of each cell row; `kw`: kernel width.
template <typename T>
bool PlanLut(const Plan& p, const T* cells, int64_t q_width, const int32_t* rows, int64_t kw,
             const int32_t* shift, const int64_t* coef, double bound, LutPlan* L) {
#if !defined(__AVX2__)
  return false;
#else
  if (p.dac != 1 || p.cycles > 15 || bound >= 32768.0 || (p.conv && (p.sh != 1 || p.sw != 1))) return false;
  if (static_cast<double>(p.top) * static_cast<double>((int64_t{1} << p.cycles) - 1) >= 65536.0) return false;
  for (int64_t g = 0; g < p.groups; ++g)
    if (p.ref_shift[g] >= 0) return false;
  const int64_t groups = p.groups, cycles = p.cycles;
  L->pairs = ((q_width + 1) / 2 + kLutPairs - 1) / kLutPairs * kLutPairs;
  L->qd = 2 * L->pairs;
  const int64_t qd = L->qd;
  L->exp.assign(groups * qd, 0);    // columns past q_width: sign 0
  L->sign.assign(groups * qd, 0);
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t q = 0; q < q_width; ++q) {
      const int64_t c0 = coef[g * cycles * q_width + q], mag = c0 < 0 ? -c0 : c0;
      for (int64_t j = 1; j < cycles; ++j)
        if (coef[(g * cycles + j) * q_width + q] != c0 * (int64_t{1} << j)) return false;
      if (mag == 0) continue;
      if ((mag & (mag - 1)) != 0 || mag > (int64_t{1} << 30)) return false;
      L->exp[g * qd + q] = __builtin_ctzll(static_cast<uint64_t>(mag));
      L->sign[g * qd + q] = c0 < 0 ? -1 : 1;
    }
  for (int64_t n = 0; n < p.cols; ++n) {   // int32 sums per output: Σ over its columns and groups
    double most = 0;                         // of (top + 1) · 2^(cycles + exp)
    for (int64_t q = n; q < q_width; q += p.cols)
      for (int64_t g = 0; g < groups; ++g)
        if (L->sign[g * qd + q] != 0)
          most += std::ldexp(static_cast<double>(p.top) + 1.0, static_cast<int>(cycles + L->exp[g * qd + q]));
    if (most >= 2147483648.0) return false;
  }

  // Chunks: a group's rows keyed by (tap, channel quad); bit c % 4 of the index is channel c.
  L->chunk_start.assign(1, 0);
  const int64_t blocks = L->pairs / kLutPairs;
  std::vector<int32_t> sums;   // per chunk, bit, column: Σ cells of the rows there
  for (int64_t g = 0; g < groups; ++g) {
    std::map<LutChunk, int64_t> chunk_of;
    std::vector<std::pair<int64_t, int64_t>> where(p.start[g + 1] - p.start[g]);   // (chunk, bit) per row
    for (int64_t i = p.start[g]; i < p.start[g + 1]; ++i) {
      const int64_t k = rows[i];
      const int64_t tap = p.conv ? k / p.channels : 0, c = p.conv ? k % p.channels : k;
      auto found = chunk_of.emplace(LutChunk{c / 4, tap / kw, tap % kw}, static_cast<int64_t>(chunk_of.size())).first;
      where[i - p.start[g]] = {found->second, c % 4};
    }
    const int64_t chunks = static_cast<int64_t>(chunk_of.size());
    L->chunks.resize(L->chunk_start.back() + chunks);
    for (const auto& [chunk, k] : chunk_of) L->chunks[L->chunk_start.back() + k] = chunk;
    L->chunk_start.push_back(L->chunk_start.back() + chunks);
    sums.assign(chunks * 4 * L->qd, 0);
    for (int64_t i = p.start[g]; i < p.start[g + 1]; ++i) {
      const auto [k, bit] = where[i - p.start[g]];
      for (int64_t q = 0; q < q_width; ++q)
        sums[(k * 4 + bit) * L->qd + q] += static_cast<int32_t>(cells[i * q_width + q]);
    }
    int32_t most = 0;
    L->table_start.push_back(static_cast<int64_t>(L->tables.size()));
    L->tables.resize(L->tables.size() + blocks * chunks * kLutPairs * 32);
    uint8_t* t = L->tables.data() + L->table_start.back();
    for (int64_t b = 0; b < blocks; ++b)
      for (int64_t k = 0; k < chunks; ++k)
        for (int64_t c = 0; c < kLutPairs; ++c)
          for (int64_t l = 0; l < 2; ++l) {
            const int64_t q = 2 * (b * kLutPairs + c) + l;
            int32_t v[16] = {0};
            for (int64_t nib = 1; nib < 16; ++nib) {   // v[nib] = v[nib without its lowest bit] + that bit's sum
              v[nib] = v[nib & (nib - 1)] + sums[(k * 4 + __builtin_ctzll(nib)) * L->qd + q];
              most = std::max(most, v[nib]);
            }
            for (int64_t nib = 0; nib < 16; ++nib) *t++ = static_cast<uint8_t>(v[nib]);
          }
    if (most > 255) return false;
    L->reps.push_back(std::max<int64_t>(1, most == 0 ? chunks : 255 / most));
  }
  L->half.assign(groups * L->pairs * 16, 0);
  L->mul.assign(groups * L->pairs * 16, 0);
  L->keep.assign(groups * L->pairs * 16, 0);
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t q = 0; q < L->qd; ++q) {
      const int64_t s = q < q_width ? shift[g * q_width + q] : 0;
      const int64_t at = (g * L->pairs + q / 2) * 16 + 8 * (q % 2);
      // S < 2^15: shift ≥ 16 gives code 0 (mul 0, keep 0); shift 0 keeps S.
      for (int64_t lane = 0; lane < 8; ++lane) {
        L->half[at + lane] = static_cast<uint16_t>(s >= 1 && s <= 15 ? int64_t{1} << (s - 1) : 0);
        L->mul[at + lane] = static_cast<uint16_t>(s >= 1 && s <= 15 ? int64_t{1} << (16 - s) : 0);
        L->keep[at + lane] = static_cast<uint16_t>(s == 0 ? 0xffff : 0);
      }
    }
  L->narrow = true;
  for (int64_t q = 0; q < q_width; ++q) {
    double most = 0;
    for (int64_t g = 0; g < groups; ++g)
      if (L->sign[g * qd + q] != 0) {
        L->narrow &= L->exp[g * qd + q] + cycles - 1 <= 14;
        most += std::ldexp(static_cast<double>(p.top) * static_cast<double>((int64_t{1} << cycles) - 1),
                           static_cast<int>(L->exp[g * qd + q]));
      }
    L->narrow &= most < 32768.0;
  }
  if (L->narrow) {
    L->mult.assign(groups * L->pairs * cycles * 16, 0);
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t q = 0; q < L->qd; ++q)
        for (int64_t j = 0; j < cycles; ++j)
          for (int64_t lane = 0; lane < 8; ++lane)
            L->mult[((g * L->pairs + q / 2) * cycles + j) * 16 + 8 * (q % 2) + lane] =
                static_cast<int16_t>(L->sign[g * qd + q] * (int32_t{1} << (L->exp[g * qd + q] + j)));
  }
  return true;
#endif
}

#if defined(__AVX2__)
// The index bytes of one input row (n pixels of C codes below 2^31 in magnitude): pixel x's
// quad cq of cycle j at dst + j · cycle_stride + cq · cq_stride + x. `code`: scratch for n · C int32.
inline void FillIndices(const float* __restrict src, int64_t n, int64_t channels, const LutLayout& L,
                        int64_t cycles, uint8_t* dst, int32_t* __restrict code) {
  if (channels % 8 != 0) {   // the scalar tail below reads int32 codes
    int64_t i = 0;
    for (; i + 8 <= n * channels; i += 8)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(code + i), _mm256_cvttps_epi32(_mm256_floor_ps(_mm256_loadu_ps(src + i))));
    for (; i < n * channels; ++i) code[i] = static_cast<int32_t>(std::floor(src[i]));
  }
  for (int64_t x = 0; x < n; ++x) {
    const int32_t* c = code + x * channels;
    uint8_t* d = dst + x;
    int64_t t = 0;
    for (; t + 8 <= channels; t += 8) {   // bit j of 8 codes = 2 quads, by the sign bits
      const __m256i v = _mm256_cvttps_epi32(_mm256_floor_ps(_mm256_loadu_ps(src + x * channels + t)));
      uint8_t* dq = d + (t / 4) * L.cq_stride;
      for (int64_t j = 0; j < cycles; ++j) {
        const int m = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_sll_epi32(v, _mm_cvtsi32_si128(31 - static_cast<int>(j)))));
        dq[j * L.cycle_stride] = static_cast<uint8_t>(m & 15);
        dq[j * L.cycle_stride + L.cq_stride] = static_cast<uint8_t>(m >> 4);
      }
    }
    for (; t < channels; t += 4)
      for (int64_t j = 0; j < cycles; ++j) {
        int nib = 0;
        for (int64_t i = 0; i < 4 && t + i < channels; ++i) nib |= ((c[t + i] >> j) & 1) << i;
        d[j * L.cycle_stride + (t / 4) * L.cq_stride] = static_cast<uint8_t>(nib);
      }
  }
}

// The same for a row with a code of 2^31 or more in magnitude (below 2^62: int64).
inline void FillIndicesWide(const float* __restrict src, int64_t n, int64_t channels, const LutLayout& L,
                            int64_t cycles, uint8_t* dst) {
  for (int64_t x = 0; x < n; ++x)
    for (int64_t t = 0; t < channels; t += 4)
      for (int64_t j = 0; j < cycles; ++j) {
        int nib = 0;
        for (int64_t i = 0; i < 4 && t + i < channels; ++i)
          nib |= static_cast<int>((static_cast<int64_t>(std::floor(src[x * channels + t + i])) >> j) & 1) << i;
        dst[j * L.cycle_stride + (t / 4) * L.cq_stride + x] = static_cast<uint8_t>(nib);
      }
}

// Units [begin, end) of 16 patches: their X (or float32(X · scale)) rows; returns the clipped
// codes. `indices`: the index planes (`FillIndices`).
template <bool kNarrow>
int64_t RunUnitsLut(const Plan& p, const LutPlan& L, const LutLayout& A, const uint8_t* indices,
                    int64_t patches, int64_t begin, int64_t end) {
  constexpr int P = kLutPairs, U = kLutUnits;
  const int64_t qd = L.qd, blocks = L.pairs / P, cycles = p.cycles;
  // Narrow: int16 sums, per unit, pair and half (patches 0..7, 8..15); else int32 per column.
  std::vector<int16_t, CacheAligned<int16_t>> y16(kNarrow ? U * L.pairs * 32 : 0);
  std::vector<int32_t, CacheAligned<int32_t>> y(kNarrow ? 0 : U * qd * 16);
  alignas(32) uint16_t comb[U][P][2][16];
  std::vector<int32_t> rowsum(16 * p.cols);
  const __m256i zero = _mm256_setzero_si256(), ones = _mm256_set1_epi16(1);
  const __m256i vtop = _mm256_set1_epi16(static_cast<int16_t>(p.top));
  int64_t clips = 0;
  for (int64_t u0 = begin; u0 < end; u0 += U) {
    const int64_t nu = std::min<int64_t>(U, end - u0);
    int64_t pos[U], first[U], live[U];
    __m256i valid[U][2];   // u16 1 in the lanes of real patches: patches 0..7, then 8..15
    for (int64_t u = 0; u < nu; ++u) {
      const int64_t id = u0 + u;
      if (p.conv) {
        const int64_t seg = id % A.segments, row = id / A.segments;   // row: (b, oy)
        const int64_t b = row / p.out_h, oy = row % p.out_h;
        pos[u] = (b * A.hp + oy) * A.wp + 16 * seg;
        first[u] = row * p.out_w + 16 * seg;
        live[u] = std::min<int64_t>(16, p.out_w - 16 * seg);
      } else {
        pos[u] = first[u] = 16 * id;
        live[u] = std::min<int64_t>(16, patches - 16 * id);
      }
      alignas(32) uint16_t lanes[2][16];
      for (int h = 0; h < 2; ++h)
        for (int i = 0; i < 16; ++i) lanes[h][i] = (8 * h + i % 8) < live[u];
      valid[u][0] = _mm256_load_si256(reinterpret_cast<const __m256i*>(lanes[0]));
      valid[u][1] = _mm256_load_si256(reinterpret_cast<const __m256i*>(lanes[1]));
    }
    std::fill(y.begin(), y.end(), 0);
    std::fill(y16.begin(), y16.end(), 0);
    for (int64_t g = 0; g < p.groups; ++g) {
      const int64_t chunks = L.chunk_start[g + 1] - L.chunk_start[g], reps = L.reps[g];
      const int64_t* off = A.chunk_off.data() + L.chunk_start[g];
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const uint8_t* tb = L.tables.data() + L.table_start[g] + blk * chunks * P * 32;
        const int64_t pair0 = g * L.pairs + blk * P;
        __m256i over = zero;
        for (int64_t u = 0; u < nu; ++u) {
          if (!kNarrow) std::memset(comb[u], 0, sizeof(comb[u]));
          for (int64_t j = 0; j < cycles; ++j) {
            const uint8_t* base = indices + j * A.cycle_stride + pos[u];
            __m256i lo[P], hi[P];
            for (int c = 0; c < P; ++c) lo[c] = hi[c] = zero;
            for (int64_t k0 = 0; k0 < chunks; k0 += reps) {
              const int64_t k1 = std::min(chunks, k0 + reps);
              __m256i a8[P];
              for (int c = 0; c < P; ++c) a8[c] = zero;
              int64_t k = k0;
              for (; k + 2 <= k1; k += 2) {   // two chunks per iteration: half the loop overhead
                const __m256i x0 = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(base + off[k])));
                const __m256i x1 = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(base + off[k + 1])));
                const uint8_t* t = tb + k * P * 32;
                for (int c = 0; c < P; ++c)
                  a8[c] = _mm256_add_epi8(a8[c], _mm256_shuffle_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(t + 32 * c)), x0));
                for (int c = 0; c < P; ++c)
                  a8[c] = _mm256_add_epi8(a8[c], _mm256_shuffle_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(t + 32 * (P + c))), x1));
              }
              if (k < k1) {
                const __m256i x = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(base + off[k])));
                const uint8_t* t = tb + k * P * 32;
                for (int c = 0; c < P; ++c)
                  a8[c] = _mm256_add_epi8(a8[c], _mm256_shuffle_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(t + 32 * c)), x));
              }
              for (int c = 0; c < P; ++c) {   // per 128-bit lane: patches 0..7, then 8..15
                lo[c] = _mm256_add_epi16(lo[c], _mm256_unpacklo_epi8(a8[c], zero));
                hi[c] = _mm256_add_epi16(hi[c], _mm256_unpackhi_epi8(a8[c], zero));
              }
            }
            const __m128i up = _mm_cvtsi32_si128(static_cast<int>(j));
            for (int c = 0; c < P; ++c) {
              const int64_t at = (pair0 + c) * 16;
              const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(L.half.data() + at));
              const __m256i m = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(L.mul.data() + at));
              const __m256i keep = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(L.keep.data() + at));
              for (int half = 0; half < 2; ++half) {
                const __m256i s = half == 0 ? lo[c] : hi[c];
                const __m256i code = _mm256_or_si256(_mm256_mulhi_epu16(_mm256_add_epi16(s, h), m), _mm256_and_si256(s, keep));
                const __m256i kept = _mm256_min_epu16(code, vtop);
                over = _mm256_add_epi16(over, _mm256_andnot_si256(_mm256_cmpeq_epi16(code, kept), valid[u][half]));
                if (kNarrow) {
                  const __m256i mult = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(L.mult.data() + ((pair0 + c) * cycles + j) * 16));
                  __m256i* yv = reinterpret_cast<__m256i*>(y16.data() + ((u * L.pairs + blk * P + c) * 2 + half) * 16);
                  _mm256_storeu_si256(yv, _mm256_add_epi16(_mm256_loadu_si256(yv), _mm256_mullo_epi16(kept, mult)));
                } else {
                  __m256i* cb = reinterpret_cast<__m256i*>(comb[u][c][half]);
                  _mm256_store_si256(cb, _mm256_add_epi16(_mm256_load_si256(cb), _mm256_sll_epi16(kept, up)));
                }
              }
            }
          }
          if (kNarrow) continue;
          // sign · combined · 2^exp into the int32 accumulator of each column.
          int32_t* yu = y.data() + u * qd * 16;
          for (int c = 0; c < P; ++c)
            for (int half = 0; half < 2; ++half) {
              const __m256i both = _mm256_load_si256(reinterpret_cast<const __m256i*>(comb[u][c][half]));
              for (int l = 0; l < 2; ++l) {
                const int64_t q = 2 * (blk * P + c) + l;
                const int32_t sg = L.sign[g * qd + q];
                if (sg == 0) continue;
                const __m256i wide = _mm256_cvtepu16_epi32(l == 0 ? _mm256_castsi256_si128(both) : _mm256_extracti128_si256(both, 1));
                const __m256i term = _mm256_sign_epi32(_mm256_sll_epi32(wide, _mm_cvtsi32_si128(L.exp[g * qd + q])),
                                                       _mm256_set1_epi32(sg));
                __m256i* o = reinterpret_cast<__m256i*>(yu + q * 16 + 8 * half);
                _mm256_storeu_si256(o, _mm256_add_epi32(_mm256_loadu_si256(o), term));
              }
            }
        }
        alignas(32) int32_t lanes[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), _mm256_madd_epi16(over, ones));
        for (int32_t n : lanes) clips += n;
      }
    }
    // Σ of each output's columns (q ≡ n mod cols) in int32 lanes (exact: the columns' sums are
    // below 2^31 together, `PlanLut`), transposed to patch rows; then the TF path's float64
    // steps with offset 0, four outputs at a time (the same IEEE operations).
    for (int64_t u = 0; u < nu; ++u) {
      const int32_t* yu = kNarrow ? nullptr : y.data() + u * qd * 16;
      for (int64_t n = 0; n < p.cols; ++n) {
        __m256i s0 = zero, s1 = zero;
        for (int64_t q = n; q < qd; q += p.cols) {
          if (kNarrow) {   // column q's lanes: the (q % 2)-th 128 bits of its pair's two halves
            const int16_t* at = y16.data() + (u * L.pairs + q / 2) * 32 + 8 * (q % 2);
            s0 = _mm256_add_epi32(s0, _mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(at))));
            s1 = _mm256_add_epi32(s1, _mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(at + 16))));
          } else {
            s0 = _mm256_add_epi32(s0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(yu + q * 16)));
            s1 = _mm256_add_epi32(s1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(yu + q * 16 + 8)));
          }
        }
        alignas(32) int32_t lanes[16];
        _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s0);
        _mm256_store_si256(reinterpret_cast<__m256i*>(lanes + 8), s1);
        for (int64_t r = 0; r < 16; ++r) rowsum[r * p.cols + n] = lanes[r];
      }
      const __m256d vunit = _mm256_set1_pd(p.unit), voffset = _mm256_setzero_pd();
      for (int64_t r = 0; r < live[u]; ++r) {
        const int32_t* v = rowsum.data() + r * p.cols;
        const int64_t m = first[u] + r;
        const double offset = 0.0;
        const double* __restrict bn = p.offset_num;
        int64_t n = 0;
        if (p.scale != nullptr) {
          float* __restrict out = p.out_real + m * p.cols;
          for (; n + 4 <= p.cols; n += 4) {
            const __m256d x = _mm256_sub_pd(_mm256_mul_pd(_mm256_cvtepi32_pd(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v + n))), vunit),
                                            _mm256_mul_pd(voffset, _mm256_loadu_pd(bn + n)));
            _mm_storeu_ps(out + n, _mm256_cvtpd_ps(_mm256_mul_pd(x, _mm256_loadu_pd(p.scale + n))));
          }
          for (; n < p.cols; ++n)
            out[n] = static_cast<float>((static_cast<double>(v[n]) * p.unit - offset * bn[n]) * p.scale[n]);
        } else {
          double* __restrict out = p.out_x + m * p.cols;
          for (; n + 4 <= p.cols; n += 4)
            _mm256_storeu_pd(out + n, _mm256_sub_pd(_mm256_mul_pd(_mm256_cvtepi32_pd(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v + n))), vunit),
                                                    _mm256_mul_pd(voffset, _mm256_loadu_pd(bn + n))));
          for (; n < p.cols; ++n) out[n] = static_cast<double>(v[n]) * p.unit - offset * bn[n];
        }
      }
    }
  }
  return clips;
}
#endif

}  // namespace tfxbar
