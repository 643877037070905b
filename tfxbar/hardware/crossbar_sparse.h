// TfxbarCrossbar's sparse method: per patch and DAC cycle, vector adds of the cell rows whose
// plane byte is not 0 (docs/hardware_mode.md, "Engines").
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <immintrin.h>
#include <vector>

#include "crossbar_plan.h"

namespace tfxbar {

// A 64-byte vector of AccT (GCC / Clang vector extensions); loads need only AccT's alignment.
template <typename AccT>
struct Lanes;
template <>
struct Lanes<int16_t> {
  typedef int16_t V __attribute__((vector_size(64), aligned(2)));
};
template <>
struct Lanes<int32_t> {
  typedef int32_t V __attribute__((vector_size(64), aligned(4)));
};

// Bit k of the result: whether p[k] != 0, for k < n ≤ 64 (reads only p[0..n)).
inline uint64_t NonZero(const uint8_t* p, int n) {
#if defined(__AVX512BW__)
  const __mmask64 k = _cvtu64_mask64(n == 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1);
  const __m512i v = _mm512_maskz_loadu_epi8(k, p);
  return _cvtmask64_u64(_mm512_test_epi8_mask(v, v));
#elif defined(__AVX2__)
  // Two 32-byte compares; the bytes past n (inside the planes' 64-byte slack) are masked off.
  const __m256i zero = _mm256_setzero_si256();
  const uint32_t lo = static_cast<uint32_t>(
      _mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), zero)));
  const uint32_t hi = static_cast<uint32_t>(
      _mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32)), zero)));
  const uint64_t live = ~(static_cast<uint64_t>(hi) << 32 | lo);
  return n == 64 ? live : live & ((uint64_t{1} << n) - 1);
#else
  uint64_t mask = 0;
  for (int k = 0; k < n; ++k) mask |= static_cast<uint64_t>(p[k] != 0) << k;
  return mask;
#endif
}

// Patches [begin, end): QB columns at a time in a register-sized block of AccT partial sums.
template <typename AccT, int QB>
int64_t RunPatches(const Plan& p, const AccT* cells, const uint8_t* planes, int64_t begin, int64_t end) {
  std::vector<int64_t> accq(p.qp), index(p.offset.size() + 1);
  std::vector<AccT> value(p.offset.size() + 1);
  alignas(64) AccT part[QB];
  int64_t clips = 0;
  for (int64_t m = begin; m < end; ++m) {
    int64_t origin;
    if (p.conv) {
      const int64_t b = m / (p.out_h * p.out_w), oy = (m / p.out_w) % p.out_h, ox = m % p.out_w;
      origin = b * p.image_stride + (oy * p.sh * p.wp + ox * p.sw) * p.channels;
    } else {
      origin = m * p.image_stride;
    }
    std::fill(accq.begin(), accq.end(), 0);
    int64_t total = 0;
    for (int64_t j = 0; j < p.cycles; ++j) {
      const uint8_t* base = planes + j * p.plane_stride + origin;
      for (int64_t g = 0; g < p.groups; ++g) {
        // The rows whose plane value is not 0 (most bit-planes of ReLU codes are zero), found
        // 64 bytes at a time along runs of adjacent plane bytes (no data-dependent branch per
        // row: it would mispredict on random bits); `visit(cell row, value)` for each.
        int64_t sum = 0;
        auto for_live = [&](auto&& visit) {
          for (int64_t u = p.run_start[g]; u < p.run_start[g + 1]; ++u) {
            const Run& run = p.runs[u];
            const uint8_t* src = base + run.offset;
            for (int64_t t = 0; t < run.length; t += 64) {
              const int n = static_cast<int>(std::min<int64_t>(64, run.length - t));
              for (uint64_t mask = NonZero(src + t, n); mask != 0; mask &= mask - 1) {
                const int k = __builtin_ctzll(mask);
                visit(run.row + t + k, src[t + k]);
              }
            }
          }
        };
        const int64_t qp = p.qp;
        // Explicit 64-byte vectors: left to itself, g++ 12 turns the row loop into scalar
        // 16-bit adds over two rows at a time.
        using V = typename Lanes<AccT>::V;
        constexpr int kVectors = QB * sizeof(AccT) / 64;
        int64_t live = 0;
        if (qp == QB) {   // one block (Q ≤ 256 / 128): add each row as it is found
          V acc[kVectors] = {};
          if (p.dac == 1) {
            for_live([&](int64_t i, uint8_t) {
              const V* row = reinterpret_cast<const V*>(cells + i * qp);
              for (int u = 0; u < kVectors; ++u) acc[u] += row[u];
              ++sum;
            });
          } else {
            for_live([&](int64_t i, uint8_t v) {
              const V* row = reinterpret_cast<const V*>(cells + i * qp);
              for (int u = 0; u < kVectors; ++u) acc[u] += static_cast<AccT>(v) * row[u];
              sum += v;
            });
          }
          std::memcpy(part, acc, sizeof(part));
        } else {   // list the live rows once, then add them block by block
          for_live([&](int64_t i, uint8_t v) {
            index[live] = i;
            value[live++] = v;
            sum += v;
          });
        }
        const int64_t* __restrict idx = index.data();
        const AccT* __restrict val = value.data();
        for (int64_t q0 = 0; q0 < qp; q0 += QB) {
          if (qp != QB) {
            V acc[kVectors] = {};
            const AccT* __restrict block = cells + q0;
            for (int64_t r = 0; r < live; ++r) {
              const V* row = reinterpret_cast<const V*>(block + idx[r] * qp);
              const AccT v = val[r];
              for (int u = 0; u < kVectors; ++u) acc[u] += v * row[u];
            }
            std::memcpy(part, acc, sizeof(part));
          }
          // ADC: floor(partial · 2^−s + 0.5) saturating at top (partials ≥ 0), then shift-add.
          const int64_t* s = p.shift.data() + g * p.qp + q0;
          const int64_t* h = p.half.data() + g * p.qp + q0;
          const int64_t* w = p.coef.data() + (g * p.cycles + j) * p.qp + q0;
          int64_t* a = accq.data() + q0;
          for (int t = 0; t < QB; ++t) {
            int64_t code = (static_cast<int64_t>(part[t]) + h[t]) >> s[t];
            clips += code > p.top;
            code = code > p.top ? p.top : code;
            a[t] += w[t] * code;
          }
        }
        const int64_t rs = p.ref_shift[g];
        if (rs >= 0) {   // the reference column: Σ plane values, its own ADC
          int64_t code = rs == 0 ? sum : (rs > 62 ? 0 : (sum + (int64_t{1} << (rs - 1))) >> rs);
          clips += code > p.top;
          code = code > p.top ? p.top : code;
          total += code << (rs + p.dac * j);
        }
      }
    }
    for (int64_t n = 0; n < p.cols; ++n) {
      int64_t a = 0;
      for (int64_t q = n; q < p.qp; q += p.cols) a += accq[q];
      // The same float64 operations as the TF path (every value exact below 2^53), so the
      // same float32 result: X = a · 2^f − total · B, then X · scale.
      const double x = static_cast<double>(a) * p.unit - static_cast<double>(total) * p.offset_num[n];
      if (p.scale != nullptr) {
        p.out_real[m * p.cols + n] = static_cast<float>(x * p.scale[n]);
      } else {
        p.out_x[m * p.cols + n] = x;
      }
    }
  }
  return clips;
}

}  // namespace tfxbar
