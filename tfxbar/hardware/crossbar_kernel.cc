// TfxbarCrossbar: the modelled hardware accumulator of one crossbar op on the CPU, fused.
//
// The same arithmetic as tfxbar/hardware/simulate.py `CrossbarSimulation._modelled` on program
// cells when no accumulator addition can overflow (docs/hardware_mode.md, "Engines"), in
// integers: per patch, the DAC bit-planes of its input codes; per DAC cycle and row group, the
// integer partial sum of every tile column — sparse method: vector adds of the cell rows whose
// plane value is not 0 (1-bit DAC planes of ReLU codes are mostly zero); dense method: int8 dot
// products of every row (AVX2 or AMX, "Dense path" below) —; the ADC (round half up at step 2^shift, saturating at
// `top`), the shift-add into an int64 accumulator, the reference column. Nothing is written to
// memory between the partial sum and the accumulator, which is why this is faster than the
// TF/XLA formulation: its GEMM outputs (one float per ADC conversion) cross the memory bus.
//
// Built on first use by tfxbar/hardware/native.py against the installed TensorFlow.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <immintrin.h>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tfxbar {

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Status;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::errors::InvalidArgument;
using tensorflow::shape_inference::InferenceContext;

constexpr int32_t kNoReference = -1;

REGISTER_OP("TfxbarCrossbar")
    .Input("codes: float")        // Conv2D: (B, H, W, C) unpadded; Dense: (B, K)
    .Input("cells: T")            // (R, Q) integer cells of every row group, stacked
    .Input("rows: int32")         // (R,) patch row of each cell row
    .Input("group_sizes: int32")  // (G,) rows per group
    .Input("shift: int32")        // (G, Q) ADC step exponents
    .Input("coef: int64")         // (G, cycles, Q) accumulator weight of each ADC code
    .Input("ref_shift: int32")    // (G,) reference column step exponent, -1: none
    .Input("offset_num: double")  // (N,) the digital offset B
    .Input("scale: double")       // (N,) real value of one unit of X (Tout = float), else empty
    .Output("out: Tout")          // (M, N) X = 2^f · Σ coef · code − B · Σ reference terms
                                  // (double), or float32(X · scale) (float)
    .Output("clips: int64")       // () ADC codes that saturated
    .Attr("T: {float, double}")
    .Attr("Tout: {float, double}")
    .Attr("offset_shift: int")
    .Attr("conv: bool")
    .Attr("kernel: list(int) = [1, 1]")
    .Attr("strides: list(int) = [1, 1]")
    .Attr("pads: list(int) = [0, 0, 0, 0]")  // top, bottom, left, right
    .Attr("dac_bits: int")
    .Attr("cycles: int")
    .Attr("top: int")
    .Attr("cols: int")
    .Attr("method: {'auto', 'sparse', 'dense'} = 'auto'")  // auto: see kAutoDense
    .SetShapeFn([](InferenceContext* c) {
      int64_t cols;
      TF_RETURN_IF_ERROR(c->GetAttr("cols", &cols));
      c->set_output(0, c->MakeShape({c->UnknownDim(), cols}));
      c->set_output(1, c->Scalar());
      return Status();
    });

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

// Cell rows [row, row + length) whose plane bytes are adjacent: [offset, offset + length).
struct Run {
  int64_t row, offset, length;
};

// What every worker reads: the call's geometry and tables (Q padded to a multiple of the block).
struct Plan {
  bool conv;
  int64_t groups, qp, cols, cycles, top, dac;
  int64_t out_h, out_w, wp, channels, sh, sw;
  int64_t plane_stride, image_stride;  // elements per DAC-cycle plane, per image
  std::vector<int64_t> start;          // (G + 1,) first cell row of each group
  std::vector<int64_t> offset;         // (R,) plane offset of each cell row from its patch's origin
  std::vector<Run> runs;               // each group's rows as runs of adjacent plane bytes
  std::vector<int64_t> run_start;      // (G + 1,) first run of each group
  std::vector<int64_t> shift, half;    // (G, qp) ADC step exponent (≤ 62) and half step
  std::vector<int64_t> coef;           // (G, cycles, qp)
  std::vector<int64_t> ref_shift;      // (G,) −1: no reference column
  double unit;                         // 2^offset_shift
  const double* offset_num;            // (N,)
  const double* scale;                 // (N,) or null: write X as double
  double* out_x;                       // (M, N) X, when scale is null
  float* out_real;                     // (M, N) float32(X · scale), when scale is given
};

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
// (`PairCycles`).

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

struct DensePlan {
  Backend backend;
  int64_t qd;                          // Q padded to 16
  std::vector<int64_t> kp;             // (G,) rows of each group padded to 64
  std::vector<int64_t> k4;             // (G,) rows of each group in quads (rows past them are 0)
  std::vector<bool> direct;            // (G,) every quad of rows is contiguous in the planes
  std::vector<int64_t> qoff, qoff_start;  // quad k of group g at qoff[qoff_start[g] + k] from a patch's origin
  std::vector<int64_t> iota;           // 0, 4, 8, …: the quads of a gathered A row
  std::vector<int64_t> a_start;        // (G + 1,) byte offset of each group's A block (16 · kp)
  std::vector<int64_t> b_start;        // (G,) offset of each group's packed cells
  std::vector<uint8_t> b;              // per group, column block, 64-row chunk: 16 × 64 bytes
  std::vector<int32_t> shift, half;    // (G, qd)
  std::vector<int64_t> exp0, keep, neg;  // (G, qd) cycle-0 weight: 0, or ±2^exp0 (keep = −1, neg = 0 / −1)
  // AVX2 with `fused`: each code goes straight into an int32 accumulator per column as
  // ±code · 2^(dac·j + exp0) (exact: PlanDense bounds every column's sum below 2^31), else into
  // y (code · 2^(dac·j)), combined per group in int64. Per (G, qd): the shift and the sign
  // (−1, 0, 1), or all-0 / all-1 tables for y.
  bool fused = false;
  std::vector<int32_t> exp32, sign32, zeros, ones;
  int pair_shift = 0;       // > 0: paired cycles (`PairCycles`), plane byte x + x' · 2^pair_shift
  int64_t pair_quads = 0;   // quads summed in s16 before the two cycles' sums are split
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
// The ADC on 8 columns' int32 partial sums: floor(part · 2^−s + 0.5) = (part + half) >> s,
// saturating at top (counted in `over`, negated), then sign · code · 2^up (per lane) added
// into out[0..8).
inline void Avx2Adc(__m256i part, __m256i h, __m256i s, __m256i vtop, __m256i up, __m256i sign, int32_t* out,
                    __m256i& over) {
  __m256i code = _mm256_srlv_epi32(_mm256_add_epi32(part, h), s);
  over = _mm256_add_epi32(over, _mm256_cmpgt_epi32(code, vtop));
  code = _mm256_min_epi32(code, vtop);
  __m256i* o = reinterpret_cast<__m256i*>(out);
  _mm256_storeu_si256(o, _mm256_add_epi32(_mm256_loadu_si256(o), _mm256_sign_epi32(_mm256_sllv_epi32(code, up), sign)));
}

// What one call of a register block reads (one row group and DAC cycle, or pair of cycles).
struct Avx2Args {
  const uint8_t* const* src;   // src[r]: patch r's plane bytes (quad k at src[r] + qoff[k])
  const int64_t* qoff;
  int64_t quads;
  const uint8_t* b;            // the group's cells, VNNI order, `chunk` bytes per column tile
  int64_t chunk, live, qd;
  const int32_t* shift;
  const int32_t* half;
  __m256i vtop;
  __m256i vup, vup_next;       // code shifts of the cycle (and of the next, paired)
  __m128i vpair;               // paired: the plane byte's field shift k
  int64_t pair_quads;          // paired: quads between splits
  const int32_t* exp;          // (qd,) per column: code shift on top of the cycle's
  const int32_t* sign;         // (qd,) per column: −1, 0, 1
  int32_t* y;                  // 16 × qd: Σ sign · code · 2^(up + exp)
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
      int32_t* out = a.y + (r0 + r) * a.qd + q;
      if (kPaired) {
        const __m256i low = _mm256_sub_epi16(all[r][v], _mm256_sll_epi16(hi[r][v], a.vpair));
        Avx2Adc(_mm256_madd_epi16(low, ones), h, s, a.vtop, up, sign, out, over);
        Avx2Adc(_mm256_madd_epi16(hi[r][v], ones), h, s, a.vtop, _mm256_add_epi32(e, a.vup_next), sign, out, over);
      } else {
        Avx2Adc(kNarrow ? _mm256_madd_epi16(acc[r][v], ones) : acc[r][v], h, s, a.vtop, up, sign, out, over);
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
  std::vector<uint8_t> a(d.a_start[p.groups], 0);   // tails past a group's rows stay 0
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
      // AVX2 reads each patch's quads where they lie in the planes when the group's rows allow
      // (no reference column: its sum is taken from the gathered rows); else from a gather.
      const bool direct = d.backend != Backend::kAmx && d.direct[g] && rs < 0;
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
        const int32_t up = static_cast<int32_t>(p.dac * cycle);
        const Avx2Args args{src, qoff, d.k4[g], bg, chunk, live, d.qd, s, h, _mm256_set1_epi32(top),
                            _mm256_set1_epi32(up), _mm256_set1_epi32(up + static_cast<int32_t>(p.dac)),
                            _mm_cvtsi32_si128(d.pair_shift), d.pair_quads,
                            d.fused ? d.exp32.data() + g * d.qd : d.zeros.data(),
                            d.fused ? d.sign32.data() + g * d.qd : d.ones.data(), y.data()};
        if (d.pair_shift > 0 && cycle + 1 < p.cycles) {
          clips += Avx2Cycle<true, true>(args, nb);
        } else if (d.backend == Backend::kAvx2Narrow) {
          clips += Avx2Cycle<true, false>(args, nb);
        } else if (d.backend == Backend::kAvx2Wide) {
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
      const int64_t* w = d.exp0.data() + g * d.qd;
      for (int64_t r = 0; !d.fused && r < live; ++r) {
        int64_t* __restrict ar = acc.data() + r * d.qd;
        const int32_t* __restrict yr = y.data() + r * d.qd;
        const int64_t* __restrict e = w;
        const int64_t* __restrict keep = d.keep.data() + g * d.qd;
        const int64_t* __restrict neg = d.neg.data() + g * d.qd;
        const int64_t qd = d.qd;
        for (int64_t q = 0; q < qd; ++q) {   // ± y · 2^e, as shifts (vectorizes; a 64-bit multiply does not)
          const int64_t term = (static_cast<int64_t>(yr[q]) << e[q]) & keep[q];
          ar[q] += (term ^ neg[q]) - neg[q];
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

// Whether all n cells are integers in 0..65535 (false on NaN); their largest in *most.
template <typename T>
bool CheckCells(const T* c, int64_t n, T* most) {
  bool ok = true;
  T top = 0;
  int64_t i = 0;
#if defined(__AVX2__)
  if (std::is_same<T, float>::value) {
    const float* f = reinterpret_cast<const float*>(c);
    __m256 good = _mm256_castsi256_ps(_mm256_set1_epi32(-1)), high = _mm256_setzero_ps();
    const __m256 zero = _mm256_setzero_ps(), limit = _mm256_set1_ps(65535.0f);
    for (; i + 8 <= n; i += 8) {
      const __m256 v = _mm256_loadu_ps(f + i);
      good = _mm256_and_ps(good, _mm256_and_ps(_mm256_cmp_ps(v, zero, _CMP_GE_OQ),
                                               _mm256_and_ps(_mm256_cmp_ps(v, limit, _CMP_LE_OQ),
                                                             _mm256_cmp_ps(_mm256_floor_ps(v), v, _CMP_EQ_OQ))));
      high = _mm256_max_ps(high, v);
    }
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, high);
    for (float v : lanes) top = std::max(top, static_cast<T>(v));
    ok = _mm256_movemask_ps(good) == 0xff;
  }
#endif
  for (; i < n; ++i) {
    ok &= c[i] >= T(0) && c[i] <= T(65535) && std::floor(c[i]) == c[i];
    top = std::max(top, c[i]);
  }
  *most = top;
  return ok;
}

// The plane bytes of one row of n codes below 2^31 in magnitude, slot j at dst + j · stride:
// (x >> dac·j) & plane_max, or with pairs (`PairCycles`, pair > 0) the bytes of cycles 2j and
// 2j + 1 as plane(2j) + plane(2j + 1) · 2^pair. `code` is scratch for n int32.
inline void FillPlanes(const float* __restrict src, int64_t n, int32_t* __restrict code, uint8_t* dst,
                       int64_t stride, int64_t slots, int pair, int64_t dac, int64_t cycles, int64_t plane_max) {
  int64_t t = 0;
#if defined(__AVX2__)
  for (; t + 8 <= n; t += 8)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(code + t), _mm256_cvttps_epi32(_mm256_floor_ps(_mm256_loadu_ps(src + t))));
#endif
  for (; t < n; ++t) code[t] = static_cast<int32_t>(std::floor(src[t]));
  const int32_t mask = static_cast<int32_t>(plane_max);
  for (int64_t j = 0; j < slots; ++j) {
    const int64_t c0 = pair > 0 ? 2 * j : j;
    const int32_t bits = static_cast<int32_t>(std::min<int64_t>(dac * c0, 31));
    uint8_t* __restrict out = dst + j * stride;
    if (pair > 0 && c0 + 1 < cycles) {
      const int32_t next = static_cast<int32_t>(std::min<int64_t>(dac * (c0 + 1), 31));
      for (int64_t i = 0; i < n; ++i)
        out[i] = static_cast<uint8_t>(((code[i] >> bits) & mask) | (((code[i] >> next) & mask) << pair));
    } else {
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>((code[i] >> bits) & mask);
    }
  }
}

template <typename T>
class CrossbarOp : public OpKernel {
 public:
  explicit CrossbarOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("conv", &conv_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("kernel", &kernel_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("strides", &strides_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pads", &pads_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("dac_bits", &dac_bits_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("cycles", &cycles_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("top", &top_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("cols", &cols_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("offset_shift", &offset_shift_));
    OP_REQUIRES(ctx, kernel_.size() == 2 && strides_.size() == 2 && pads_.size() == 4,
                InvalidArgument("TfxbarCrossbar: kernel, strides need 2 values, pads 4"));
    OP_REQUIRES(ctx, kernel_[0] >= 1 && kernel_[1] >= 1 && strides_[0] >= 1 && strides_[1] >= 1 &&
                         *std::min_element(pads_.begin(), pads_.end()) >= 0,
                InvalidArgument("TfxbarCrossbar: kernel and strides ≥ 1, pads ≥ 0"));
    // Planes travel as bytes: DACs up to 8 bits.
    OP_REQUIRES(ctx, dac_bits_ >= 1 && dac_bits_ <= 8 && cycles_ >= 1 && dac_bits_ * cycles_ <= 62,
                InvalidArgument("TfxbarCrossbar: dac_bits in 1..8, dac_bits · cycles ≤ 62"));
    OP_REQUIRES(ctx, cols_ >= 1 && top_ >= 0, InvalidArgument("TfxbarCrossbar: cols ≥ 1, top ≥ 0"));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("method", &method_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& codes = ctx->input(0);
    const Tensor& cells_in = ctx->input(1);
    const Tensor& rows_in = ctx->input(2);
    const Tensor& sizes_in = ctx->input(3);
    const Tensor& shift_in = ctx->input(4);
    const Tensor& coef_in = ctx->input(5);
    const Tensor& ref_in = ctx->input(6);

    Plan p;
    p.conv = conv_;
    p.groups = sizes_in.NumElements();
    p.cols = cols_;
    p.cycles = cycles_;
    p.top = top_;
    p.dac = dac_bits_;
    OP_REQUIRES(ctx, cells_in.dims() == 2, InvalidArgument("cells must be (R, Q)"));
    const int64_t total_rows = cells_in.dim_size(0), q_width = cells_in.dim_size(1);
    OP_REQUIRES(ctx, q_width % cols_ == 0, InvalidArgument("cells' width is not a multiple of cols"));
    OP_REQUIRES(ctx, rows_in.NumElements() == total_rows, InvalidArgument("rows must have R entries"));
    OP_REQUIRES(ctx, shift_in.NumElements() == p.groups * q_width, InvalidArgument("shift must be (G, Q)"));
    OP_REQUIRES(ctx, coef_in.NumElements() == p.groups * cycles_ * q_width,
                InvalidArgument("coef must be (G, cycles, Q)"));
    OP_REQUIRES(ctx, ref_in.NumElements() == p.groups, InvalidArgument("ref_shift must be (G,)"));

    // Geometry: M patches of K rows; planes zero padded (the program's padding is code 0).
    int64_t batch, height = 1, width = 1, hp = 1, k_rows;
    const int64_t kh = kernel_[0], kw = kernel_[1];
    p.sh = strides_[0];
    p.sw = strides_[1];
    if (conv_) {
      OP_REQUIRES(ctx, codes.dims() == 4, InvalidArgument("Conv2D codes must be NHWC"));
      batch = codes.dim_size(0);
      height = codes.dim_size(1);
      width = codes.dim_size(2);
      p.channels = codes.dim_size(3);
      hp = height + pads_[0] + pads_[1];
      p.wp = width + pads_[2] + pads_[3];
      p.out_h = hp >= kh ? (hp - kh) / p.sh + 1 : 0;
      p.out_w = p.wp >= kw ? (p.wp - kw) / p.sw + 1 : 0;
      OP_REQUIRES(ctx, p.out_h >= 1 && p.out_w >= 1, InvalidArgument("input smaller than the kernel"));
      k_rows = kh * kw * p.channels;
      p.image_stride = hp * p.wp * p.channels;
    } else {
      OP_REQUIRES(ctx, codes.dims() == 2, InvalidArgument("Dense codes must be (B, K)"));
      batch = codes.dim_size(0);
      p.channels = k_rows = codes.dim_size(1);
      p.out_h = p.out_w = p.wp = 1;
      p.image_stride = k_rows;
    }
    p.plane_stride = batch * p.image_stride;
    const int64_t patches = batch * p.out_h * p.out_w;

    // Group tables; each cell row's offset in the padded plane from its patch's origin.
    const int32_t* rows = rows_in.flat<int32_t>().data();
    auto sizes = sizes_in.flat<int32_t>();
    p.start.assign(p.groups + 1, 0);
    for (int64_t g = 0; g < p.groups; ++g) p.start[g + 1] = p.start[g] + sizes(g);
    OP_REQUIRES(ctx, p.start[p.groups] == total_rows, InvalidArgument("group_sizes must sum to R"));
    p.offset.resize(total_rows);
    for (int64_t i = 0; i < total_rows; ++i) {
      const int64_t k = rows[i];
      OP_REQUIRES(ctx, k >= 0 && k < k_rows, InvalidArgument("row index ", k, " out of the patch"));
      if (conv_) {
        const int64_t tap = k / p.channels, c = k % p.channels;
        p.offset[i] = ((tap / kw) * p.wp + tap % kw) * p.channels + c;
      } else {
        p.offset[i] = k;
      }
    }

    p.run_start.assign(1, 0);
    for (int64_t g = 0; g < p.groups; ++g) {
      for (int64_t i = p.start[g]; i < p.start[g + 1]; ++i) {
        if (i > p.start[g] && p.offset[i] == p.offset[i - 1] + 1) {
          ++p.runs.back().length;
        } else {
          p.runs.push_back({i, p.offset[i], 1});
        }
      }
      p.run_start.push_back(static_cast<int64_t>(p.runs.size()));
    }

    // Integer cells, Q padded to the block width with zero cells (their codes are 0).
    auto cells_flat = cells_in.flat<T>();
    // One branch-free pass (a wide layer has ~10^6 cells per call), the offending value looked
    // up only on failure.
    T cell_max = 0;
    const T* cell_data = cells_flat.data();
    if (!CheckCells(cell_data, cells_flat.size(), &cell_max)) {
      int64_t i = 0;
      while (cell_data[i] >= T(0) && cell_data[i] <= T(65535) && std::floor(cell_data[i]) == cell_data[i]) ++i;
      ctx->CtxFailure(InvalidArgument("cells must be integers in 0..65535 (program cells), got ", cell_data[i]));
      return;
    }
    int64_t rows_max = 0;
    for (int64_t g = 0; g < p.groups; ++g) rows_max = std::max<int64_t>(rows_max, sizes(g));
    const int64_t plane_max = (int64_t{1} << dac_bits_) - 1;
    const double bound = static_cast<double>(rows_max) * plane_max * static_cast<double>(cell_max);
    OP_REQUIRES(ctx, bound < 2147483648.0, InvalidArgument("partial sums may exceed int32"));
    const bool narrow = bound < 32768.0;
    const int64_t widest = narrow ? 256 : 128;
    int64_t qb = narrow ? 32 : 16;
    while (qb < q_width && qb < widest) qb *= 2;
    p.qp = (q_width + qb - 1) / qb * qb;

    const int32_t* shift = shift_in.flat<int32_t>().data();
    const int64_t* coef = coef_in.flat<int64_t>().data();
    p.shift.assign(p.groups * p.qp, 0);
    p.half.assign(p.groups * p.qp, 0);
    p.coef.assign(p.groups * cycles_ * p.qp, 0);
    for (int64_t g = 0; g < p.groups; ++g) {
      for (int64_t q = 0; q < q_width; ++q) {
        const int64_t sq = shift[g * q_width + q];
        OP_REQUIRES(ctx, sq >= 0, InvalidArgument("ADC shifts must be ≥ 0"));
        // floor(x · 2^−s + 0.5) = (x + 2^(s−1)) >> s; from 2^62 on every partial gives 0.
        p.shift[g * p.qp + q] = std::min<int64_t>(sq, 62);
        p.half[g * p.qp + q] = sq == 0 || sq > 62 ? 0 : int64_t{1} << (sq - 1);
      }
      for (int64_t j = 0; j < cycles_; ++j)
        for (int64_t q = 0; q < q_width; ++q)
          p.coef[(g * cycles_ + j) * p.qp + q] = coef[(g * cycles_ + j) * q_width + q];
    }
    p.ref_shift.resize(p.groups);
    for (int64_t g = 0; g < p.groups; ++g) p.ref_shift[g] = ref_in.flat<int32_t>()(g);

    // Bit-planes of the codes, padded: (x >> d·j) & (2^d − 1) as the TF path's
    // floormod(floor(x / 2^dj), 2^d). Codes become int64: refuse what has no integer value
    // there (the TF path would carry NaN / inf into the output, which no hardware computes).
    // A Dense input is one "image row" of K codes (height = width = 1, channels = K).
    // The dense path, when it runs this call.
    DensePlan d;
    bool dense = false;
#if defined(__AVX2__)
    if (method_ == "dense" || (method_ == "auto" && kAutoDense))
      dense = PlanDense(p, cells_flat.data(), q_width, shift, coef, bound, cell_max, &d);
#endif
    OP_REQUIRES(ctx, dense || method_ != "dense",
                InvalidArgument("TfxbarCrossbar: method 'dense' needs AVX2 (or AMX int8 tiles), cells of at "
                                "most 7 bits (8 with AMX), 2 · plane · cell < 2^15 (AVX2), ADC steps up to "
                                "2^30 and power-of-two column weights; use 'auto' or 'sparse'"));

    const float* x = codes.flat<float>().data();
    // 64 bytes of slack: the dense path's last quad of a patch may read past its rows (× zero cells).
    // Paired cycles (`PairCycles`): slot i holds plane(2i) + plane(2i + 1) · 2^k, else slot j plane(j).
    const int pair = dense ? d.pair_shift : 0;
    const int64_t slots = pair > 0 ? (cycles_ + 1) / 2 : cycles_;
    std::vector<uint8_t> planes(slots * p.plane_stride + 64, 0);
    const int64_t pt = conv_ ? pads_[0] : 0, pl = conv_ ? pads_[2] : 0, dac = dac_bits_;
    const int64_t run = width * p.channels;   // one image row, contiguous in codes and planes
    std::atomic<bool> bad{false};
    auto fill = [&](int64_t begin, int64_t end) {   // rows (b, y) of the unpadded input
      bool ok = true;
      std::vector<int32_t> wide(run);
      for (int64_t by = begin; by < end; ++by) {
        const int64_t b = by / height, y = by % height;
        const float* __restrict src = x + by * run;
        // Codes below 2^31 in magnitude (all real ones) take int32 vector lanes; a row with
        // a larger value takes int64; NaN / inf and beyond int64 are refused.
        int narrow = 1, finite = 1;
        for (int64_t t = 0; t < run; ++t) {   // comparisons are false for NaN
          narrow &= std::fabs(src[t]) < 2147483520.0f;
          finite &= std::fabs(src[t]) < 4.6e18f;
        }
        ok = finite != 0;
        if (!ok) break;
        uint8_t* dst = planes.data() + b * p.image_stride + ((y + pt) * p.wp + pl) * p.channels;
        if (narrow) {
          FillPlanes(src, run, wide.data(), dst, p.plane_stride, slots, pair, dac, cycles_, plane_max);
          continue;
        }
        for (int64_t j = 0; j < slots; ++j, dst += p.plane_stride) {
          const int64_t c0 = pair > 0 ? 2 * j : j;
          const bool two = pair > 0 && c0 + 1 < cycles_;
          for (int64_t t = 0; t < run; ++t) {
            const int64_t v = static_cast<int64_t>(std::floor(src[t]));
            const int64_t hi = two ? ((v >> (dac * (c0 + 1))) & plane_max) << pair : 0;
            dst[t] = static_cast<uint8_t>(((v >> (dac * c0)) & plane_max) | hi);
          }
        }
      }
      if (!ok) bad = true;
    };
    auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(workers->num_threads, workers->workers, batch * height, run * (cycles_ + 1) * 2, fill);
    if (bad) {   // name the first value without an integer code (NaN, inf or beyond int64)
      int64_t i = 0;
      while (std::fabs(x[i]) < 4.6e18f) ++i;
      ctx->CtxFailure(InvalidArgument("input codes must be finite integers (got ", x[i], " at flat index ",
                                      i, "); check the layer's input for NaN / inf"));
      return;
    }

    const Tensor& offset_in = ctx->input(7);
    const Tensor& scale_in = ctx->input(8);
    OP_REQUIRES(ctx, offset_in.NumElements() == cols_, InvalidArgument("offset_num must be (N,)"));
    const bool real = ctx->expected_output_dtype(0) == tensorflow::DT_FLOAT;
    OP_REQUIRES(ctx, scale_in.NumElements() == (real ? cols_ : 0),
                InvalidArgument("scale must be (N,) for a float output, empty for a double one"));
    p.unit = std::ldexp(1.0, offset_shift_);
    p.offset_num = offset_in.flat<double>().data();
    Tensor* out = nullptr;
    Tensor* clips_out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({patches, cols_}), &out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({}), &clips_out));
    p.scale = real ? scale_in.flat<double>().data() : nullptr;
    p.out_real = real ? out->flat<float>().data() : nullptr;
    p.out_x = real ? nullptr : out->flat<double>().data();

    std::atomic<int64_t> clips{0};
#if defined(__AVX2__)
    if (dense) {
      const int64_t block_cost = 16 * cycles_ * (d.a_start[p.groups] / 16 * d.qd / 64 + 4 * p.groups * d.qd);
      auto work = [&](int64_t begin, int64_t end) {
        clips += RunBlocksDense(p, d, planes.data(), begin * 16, std::min(end * 16, patches));
      };
      auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
      tensorflow::Shard(workers->num_threads, workers->workers, (patches + 15) / 16, block_cost, work);
      clips_out->scalar<int64_t>()() = clips.load();
      return;
    }
#endif
    const int64_t cost = cycles_ * (total_rows * p.qp / 4 + 8 * p.groups * p.qp);
    if (narrow) {
      Run<int16_t>(ctx, p, cells_flat, q_width, qb, planes.data(), patches, cost, &clips);
    } else {
      Run<int32_t>(ctx, p, cells_flat, q_width, qb, planes.data(), patches, cost, &clips);
    }
    clips_out->scalar<int64_t>()() = clips.load();
  }

 private:
  template <typename AccT>
  void Run(OpKernelContext* ctx, const Plan& p, typename tensorflow::TTypes<T>::ConstFlat cells_flat,
           int64_t q_width, int64_t qb, const uint8_t* planes, int64_t patches, int64_t cost,
           std::atomic<int64_t>* clips) {
    const int64_t total_rows = cells_flat.size() / q_width;
    std::vector<AccT> cells(total_rows * p.qp, 0);
    for (int64_t i = 0; i < total_rows; ++i)
      for (int64_t q = 0; q < q_width; ++q)
        cells[i * p.qp + q] = static_cast<AccT>(cells_flat(i * q_width + q));
    auto work = [&](int64_t begin, int64_t end) {
      int64_t n = 0;
      const AccT* c = cells.data();
      switch (qb) {
        case 16: n = RunPatches<AccT, 16>(p, c, planes, begin, end); break;
        case 32: n = RunPatches<AccT, 32>(p, c, planes, begin, end); break;
        case 64: n = RunPatches<AccT, 64>(p, c, planes, begin, end); break;
        case 128: n = RunPatches<AccT, 128>(p, c, planes, begin, end); break;
        default: n = RunPatches<AccT, 256>(p, c, planes, begin, end); break;
      }
      *clips += n;
    };
    auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(workers->num_threads, workers->workers, patches, cost, work);
  }

  // The dense plan (packed cells, int32 ADC tables) when a dense backend can run this call
  // exactly: its cell and pair-sum limits hold (`ChooseBackend`), partial sum + half step and
  // the cycle-combined codes fit int32,
  // and the weights follow the shift-add (coef[g][j] = coef[g][0] · 2^(dac·j)).
  bool PlanDense(const Plan& p, const T* cells, int64_t q_width, const int32_t* shift, const int64_t* coef,
                 double bound, T cell_max, DensePlan* d) const {
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
    d->exp0.assign(g_count * d->qd, 0);
    d->keep.assign(g_count * d->qd, 0);
    d->neg.assign(g_count * d->qd, 0);
    for (int64_t g = 0; g < g_count; ++g)
      for (int64_t q = 0; q < q_width; ++q) {
        const int32_t sq = shift[g * q_width + q];
        d->shift[g * d->qd + q] = sq;
        d->half[g * d->qd + q] = sq == 0 ? 0 : int32_t{1} << (sq - 1);
        const int64_t c0 = coef[g * p.cycles * q_width + q], mag = c0 < 0 ? -c0 : c0;
        if (mag != 0) {
          if ((mag & (mag - 1)) != 0 || mag > (int64_t{1} << 32)) return false;
          d->exp0[g * d->qd + q] = __builtin_ctzll(static_cast<uint64_t>(mag));
          d->keep[g * d->qd + q] = -1;
          d->neg[g * d->qd + q] = c0 < 0 ? -1 : 0;
        }
      }
    // Fused int32 accumulation when every column's Σ over groups of (top + 1) · 2^(dac·cycles + exp0)
    // stays below 2^31 (AVX2 only: the AMX path adds its codes into y).
    d->fused = d->backend != Backend::kAmx;
    for (int64_t q = 0; q < q_width; ++q) {
      double most = 0;
      for (int64_t g = 0; g < g_count; ++g)
        if (d->keep[g * d->qd + q] != 0)
          most += std::ldexp(static_cast<double>(p.top) + 1.0, static_cast<int>(p.dac * p.cycles + d->exp0[g * d->qd + q]));
      d->fused &= most < 2147483648.0;
    }
    d->zeros.assign(d->qd, 0);
    d->ones.assign(d->qd, 1);
    d->exp32.assign(g_count * d->qd, 0);
    d->sign32.assign(g_count * d->qd, 0);
    for (int64_t i = 0; i < g_count * d->qd; ++i) {
      d->exp32[i] = static_cast<int32_t>(d->exp0[i]);
      d->sign32[i] = d->keep[i] == 0 ? 0 : (d->neg[i] != 0 ? -1 : 1);
    }
    bool all_direct = true;
    for (int64_t g = 0; g < g_count; ++g) all_direct &= d->direct[g] && p.ref_shift[g] < 0;
    PairCycles((int64_t{1} << p.dac) - 1, static_cast<double>(cell_max), p.cycles, all_direct, d);
    return true;
  }

  std::string method_;
  bool conv_;
  std::vector<int32_t> kernel_, strides_, pads_;
  int32_t dac_bits_, cycles_, cols_, offset_shift_;
  int64_t top_;
};

REGISTER_KERNEL_BUILDER(Name("TfxbarCrossbar").Device(DEVICE_CPU).TypeConstraint<float>("T"),
                        CrossbarOp<float>);
REGISTER_KERNEL_BUILDER(Name("TfxbarCrossbar").Device(DEVICE_CPU).TypeConstraint<double>("T"),
                        CrossbarOp<double>);

}  // namespace tfxbar
