// TfxbarCrossbar: the modelled hardware accumulator of one crossbar op on the CPU, fused.
//
// The same arithmetic as tfxbar/hardware/simulate.py `CrossbarSimulation._modelled` on program
// cells when no accumulator addition can overflow (docs/hardware_mode.md, "Engines"), in
// integers: per patch, the DAC bit-planes of its input codes; per DAC cycle and row group, the
// integer partial sum of every tile column — sparse method: vector adds of the cell rows whose
// plane value is not 0 (1-bit DAC planes of ReLU codes are mostly zero); dense method: int8 dot
// products of every row (AVX2 or AMX); lut method: 16-entry tables of 4-row cell sums indexed
// by 1-bit planes (AVX2) —; the ADC (round half up at step 2^shift, saturating at
// `top`), the shift-add into the accumulator, the reference column. Nothing is written to
// memory between the partial sum and the accumulator, which is why this is faster than the
// TF/XLA formulation: its GEMM outputs (one float per ADC conversion) cross the memory bus.
//
// This file: the op, its checks, the bit-planes and the choice of method; crossbar_sparse.h,
// crossbar_dense.h and crossbar_lut.h: the three methods; crossbar_plan.h: the tables they share. Built on first use
// by tfxbar/hardware/native.py against the installed TensorFlow.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <immintrin.h>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

#include "crossbar_dense.h"
#include "crossbar_lut.h"
#include "crossbar_plan.h"
#include "crossbar_sparse.h"

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
    .Input("step: float")         // () the layer's input step: codes = round_half_even(codes / step)
                                  // first (as tf.round(x / step)); empty: `codes` are the codes
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
    .Attr("method: {'auto', 'sparse', 'dense', 'lut'} = 'auto'")  // auto: see kAutoDense
    .SetShapeFn([](InferenceContext* c) {
      int64_t cols;
      TF_RETURN_IF_ERROR(c->GetAttr("cols", &cols));
      c->set_output(0, c->MakeShape({c->UnknownDim(), cols}));
      c->set_output(1, c->Scalar());
      return Status();
    });


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

// dst[t] = round_half_even(src[t] / step) for n values: the same IEEE float32 division and
// rounding as TF's tf.round(x / step), so the layer's codes need no tensor of their own.
inline void RoundQuotients(const float* __restrict src, int64_t n, float step, float* __restrict dst) {
  int64_t t = 0;
#if defined(__AVX2__)
  const __m256 s = _mm256_set1_ps(step);
  for (; t + 8 <= n; t += 8)
    _mm256_storeu_ps(dst + t, _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(src + t), s),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
  for (; t < n; ++t) dst[t] = std::nearbyint(src[t] / step);
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
    std::shared_ptr<const LutPlan> lut_plan;
    LutLayout lut;
    bool dense = false, use_lut = false;
#if defined(__AVX2__)
    if (method_ == "lut" || (method_ == "auto" && kAutoDense)) {
      lut_plan = CachedLut(p, cells_flat.data(), q_width, rows, sizes_in, shift_in, coef_in, ref_in, kw, bound);
      use_lut = lut_plan != nullptr;
      if (use_lut) lut = LayOutLut(p, *lut_plan, batch, hp);
    }
    OP_REQUIRES(ctx, use_lut || method_ != "lut",
                InvalidArgument("TfxbarCrossbar: method 'lut' needs AVX2, 1-bit DACs, a stride-1 Conv2D or a "
                                "Dense layer, no reference columns, partial sums below 2^15, cells of 4 rows "
                                "summing to at most 255, power-of-two column weights and column sums below "
                                "2^31; use 'auto'"));
    if (!use_lut && (method_ == "dense" || (method_ == "auto" && kAutoDense)))
      dense = PlanDense<T>(p, cells_flat.data(), q_width, shift, coef, bound, cell_max, &d);
#endif
    OP_REQUIRES(ctx, dense || method_ != "dense",
                InvalidArgument("TfxbarCrossbar: method 'dense' needs AVX2 (or AMX int8 tiles), cells of at "
                                "most 7 bits (8 with AMX), 2 · plane · cell < 2^15 (AVX2), ADC steps up to "
                                "2^30 and power-of-two column weights; use 'auto' or 'sparse'"));

    const float* x = codes.flat<float>().data();
    const Tensor& step_in = ctx->input(9);
    OP_REQUIRES(ctx, step_in.NumElements() <= 1, InvalidArgument("step must be a scalar or empty"));
    const bool divide = step_in.NumElements() == 1;
    const float step = divide ? step_in.flat<float>()(0) : 1.0f;
    // Paired cycles (`PairCycles`): slot i holds plane(2i) + plane(2i + 1) · 2^k, else slot j plane(j).
    const int pair = dense ? d.pair_shift : 0;
    const int64_t slots = pair > 0 ? (cycles_ + 1) / 2 : cycles_;
    // 64 bytes to spare: the dense path's last quad of a patch may read past its rows (× zero
    // cells), its zero tests load 32 bytes. Every call writes the whole interior and never the
    // padding, so a buffer of the same layout is reused from the last call (its padding still
    // 0): no zeroing and page faults of a fresh one (≈ 7 % of the MNIST crossbars' time,
    // benchmarks/kernel_ab.py). A concurrent call, or a buffer over 64 MB, takes its own.
    std::unique_lock<std::mutex> reuse(planes_mu_, std::try_to_lock);
    const std::vector<int64_t> layout{batch, height, width, p.channels, p.plane_stride, slots, use_lut};
    const int64_t bytes = use_lut ? cycles_ * lut.cycle_stride + 64 : slots * p.plane_stride + 64;
    std::vector<uint8_t> own;
    std::vector<uint8_t>& planes = reuse.owns_lock() && bytes <= (int64_t{64} << 20) ? planes_cache_ : own;
    if (&planes == &own || layout != planes_layout_) {
      planes.assign(bytes, 0);
      if (&planes == &planes_cache_) planes_layout_ = layout;
    }
    const int64_t pt = conv_ ? pads_[0] : 0, pl = conv_ ? pads_[2] : 0, dac = dac_bits_;
    const int64_t run = width * p.channels;   // one image row, contiguous in codes and planes
    std::atomic<bool> bad{false};
    auto fill = [&](int64_t begin, int64_t end) {   // rows (b, y) of the unpadded input
      bool ok = true;
      std::vector<int32_t> wide(run);
      std::vector<float> rounded(divide ? run : 0);
      for (int64_t by = begin; by < end; ++by) {
        const int64_t b = by / height, y = by % height;
        const float* __restrict src = x + by * run;
        if (divide) {
          RoundQuotients(src, run, step, rounded.data());
          src = rounded.data();
        }
        // Codes below 2^31 in magnitude (all real ones) take int32 vector lanes; a row with
        // a larger value takes int64; NaN / inf and beyond int64 are refused.
        int narrow = 1, finite = 1;
        for (int64_t t = 0; t < run; ++t) {   // comparisons are false for NaN
          narrow &= std::fabs(src[t]) < 2147483520.0f;
          finite &= std::fabs(src[t]) < 4.6e18f;
        }
        ok = finite != 0;
        if (!ok) break;
#if defined(__AVX2__)
        if (use_lut) {   // index bytes: pixel (y, x) of image b at (b · hp + y + pt) · wp + x + pl
          uint8_t* at = planes.data() + (conv_ ? (b * hp + y + pt) * p.wp + pl : by);
          if (narrow) {
            FillIndices(src, conv_ ? width : 1, p.channels, lut, cycles_, at, wide.data());
          } else {
            FillIndicesWide(src, conv_ ? width : 1, p.channels, lut, cycles_, at);
          }
          continue;
        }
#endif
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
      auto code = [&](int64_t i) { return divide ? std::nearbyint(x[i] / step) : x[i]; };
      int64_t i = 0;
      while (std::fabs(code(i)) < 4.6e18f) ++i;
      ctx->CtxFailure(InvalidArgument("input codes must be finite integers (got ", code(i), " at flat index ",
                                      i, divide ? " of input / step" : "",
                                      "); check the layer's input for NaN / inf"));
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
    if (use_lut) {
      const int64_t unit_cost = 16 * cycles_ * (lut.chunk_off.size() * lut_plan->pairs / 2 + 4 * p.groups * lut_plan->pairs);
      auto work = [&](int64_t begin, int64_t end) {
        clips += lut_plan->narrow ? RunUnitsLut<true>(p, *lut_plan, lut, planes.data(), patches, begin, end)
                                  : RunUnitsLut<false>(p, *lut_plan, lut, planes.data(), patches, begin, end);
      };
      auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
      tensorflow::Shard(workers->num_threads, workers->workers, lut.units, unit_cost, work);
      clips_out->scalar<int64_t>()() = clips.load();
      return;
    }
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
  // The lookup plan of these cells and tables (null: the method cannot run them), rebuilt only
  // when an input it depends on changes: a wide layer's tables cost as much as its products
  // on a small batch.
  std::shared_ptr<const LutPlan> CachedLut(const Plan& p, const T* cells, int64_t q_width, const int32_t* rows,
                                           const Tensor& sizes, const Tensor& shift, const Tensor& coef,
                                           const Tensor& ref, int64_t kw, double bound) {
    const int64_t total_rows = static_cast<int64_t>(p.offset.size());
    const std::vector<int64_t> shape{total_rows, q_width, p.channels, p.conv};
    const std::pair<const void*, size_t> parts[] = {
        {cells, sizeof(T) * total_rows * q_width}, {rows, sizeof(int32_t) * total_rows},
        {sizes.tensor_data().data(), sizes.tensor_data().size()}, {shift.tensor_data().data(), shift.tensor_data().size()},
        {coef.tensor_data().data(), coef.tensor_data().size()}, {ref.tensor_data().data(), ref.tensor_data().size()}};
    std::lock_guard<std::mutex> hold(lut_mu_);
    bool same = lut_valid_ && shape == lut_shape_;
    for (size_t i = 0; same && i < std::size(parts); ++i)
      same = lut_inputs_[i].size() == parts[i].second &&
             std::memcmp(lut_inputs_[i].data(), parts[i].first, parts[i].second) == 0;
    if (same) return lut_plan_;
    auto plan = std::make_shared<LutPlan>();
    const bool ok = PlanLut<T>(p, cells, q_width, rows, kw, shift.flat<int32_t>().data(),
                               coef.flat<int64_t>().data(), bound, plan.get());
    lut_plan_ = ok ? std::shared_ptr<const LutPlan>(plan) : nullptr;
    lut_shape_ = shape;
    for (size_t i = 0; i < std::size(parts); ++i) {
      const char* at = static_cast<const char*>(parts[i].first);
      lut_inputs_[i].assign(at, at + parts[i].second);
    }
    lut_valid_ = true;
    return lut_plan_;
  }

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


  std::string method_;
  bool conv_;
  std::vector<int32_t> kernel_, strides_, pads_;
  int32_t dac_bits_, cycles_, cols_, offset_shift_;
  int64_t top_;
  std::mutex planes_mu_;                  // guards the two below
  std::vector<uint8_t> planes_cache_;     // the last call's bit-planes (padding 0)
  std::vector<int64_t> planes_layout_;    // their layout: batch, height, width, channels, stride, slots
  std::mutex lut_mu_;                     // guards the four below
  bool lut_valid_ = false;
  std::vector<int64_t> lut_shape_;
  std::vector<char> lut_inputs_[6];       // copies of what the plan was built from
  std::shared_ptr<const LutPlan> lut_plan_;
};

REGISTER_KERNEL_BUILDER(Name("TfxbarCrossbar").Device(DEVICE_CPU).TypeConstraint<float>("T"),
                        CrossbarOp<float>);
REGISTER_KERNEL_BUILDER(Name("TfxbarCrossbar").Device(DEVICE_CPU).TypeConstraint<double>("T"),
                        CrossbarOp<double>);

}  // namespace tfxbar
