// The model's own layers between the crossbars, at inference, as one in-place pass each.
//
// TfxbarChannelAffine: y = (x − mean)·a + beta per channel (the last axis) — a
// BatchNormalization at inference, in TensorFlow's float32 order: FusedBatchNorm computes
// (x − mean)·(γ·rsqrt(var + ε)) + β, the unfused form x·inv + (β − mean·inv) is this with mean
// = 0 (x − 0 = x exactly).
// TfxbarClippedRound: y = round_half_even(clip(x / step, 0, top))·step — tfxbar's ClippedRound
// quantizer at inference, as tf.round(tf.clip_by_value(x / step, 0, top)) · step computes it:
// NaN stays NaN, −0 becomes +0 (Maximum returns its second operand on a tie).
//
// Why: on the CPU TensorFlow's FusedBatchNorm goes through Eigen's broadcasting evaluator and
// each of the quantizer's five ops writes a fresh tensor (fresh pages, zeroed by the OS); here
// each is one vectorised pass that writes into its input's buffer when nothing else holds it.
// Each value is the same IEEE float32 operation sequence (built with -ffp-contract=off, so no
// fused multiply-add), so the results are bit-identical (tests/test_native_layers.py).
// Built with crossbar_kernel.cc into one library by tfxbar/hardware/native.py.

#include <cmath>
#include <cstdint>
#include <functional>
#include <immintrin.h>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tfxbar {

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::errors::InvalidArgument;
using tensorflow::shape_inference::InferenceContext;

namespace {

// The input's buffer when this op holds its only reference, else a new output; null on failure
// (the status is set).
Tensor* InPlaceOutput(OpKernelContext* ctx) {
  Tensor* y = nullptr;
  const auto status = ctx->forward_input_or_allocate_output({0}, 0, ctx->input(0).shape(), &y);
  if (!status.ok()) {
    ctx->SetStatus(status);
    return nullptr;
  }
  return y;
}

void ShardRange(OpKernelContext* ctx, int64_t units, int64_t cost, const std::function<void(int64_t, int64_t)>& work) {
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  tensorflow::Shard(workers->num_threads, workers->workers, units, cost, work);
}

}  // namespace

REGISTER_OP("TfxbarChannelAffine")
    .Input("x: float")      // (..., C)
    .Input("mean: float")   // (C,)
    .Input("a: float")      // (C,)
    .Input("beta: float")   // (C,)
    .Output("y: float")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return tensorflow::OkStatus();
    });

class ChannelAffineOp : public OpKernel {
 public:
  explicit ChannelAffineOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    OP_REQUIRES(ctx, x.dims() >= 1, InvalidArgument("TfxbarChannelAffine: x must have a channel axis"));
    const int64_t channels = x.dim_size(x.dims() - 1);
    for (int i = 1; i < 4; ++i) {
      const Tensor& v = ctx->input(i);
      OP_REQUIRES(ctx, v.dims() == 1 && v.dim_size(0) == channels,
                  InvalidArgument("TfxbarChannelAffine: ", ctx->op_kernel().def().input(i), " has shape ",
                                  v.shape().DebugString(), "; it needs one value per channel of x (",
                                  channels, ")"));
    }
    Tensor* y = InPlaceOutput(ctx);
    if (y == nullptr || x.NumElements() == 0) return;
    const float* src = x.flat<float>().data();
    float* dst = y->flat<float>().data();
    const float* mean = ctx->input(1).flat<float>().data();
    const float* a = ctx->input(2).flat<float>().data();
    const float* beta = ctx->input(3).flat<float>().data();
    ShardRange(ctx, x.NumElements() / channels, 3 * channels, [&](int64_t first, int64_t last) {
      for (int64_t r = first; r < last; ++r) {
        const float* in = src + r * channels;
        float* out = dst + r * channels;
        for (int64_t c = 0; c < channels; ++c) out[c] = (in[c] - mean[c]) * a[c] + beta[c];
      }
    });
  }
};

REGISTER_OP("TfxbarClippedRound")
    .Input("x: float")
    .Input("step: float")   // () the quantizer's step
    .Attr("top: float")     // the largest code, 2^bits − 1
    .Output("y: float")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return tensorflow::OkStatus();
    });

class ClippedRoundOp : public OpKernel {
 public:
  explicit ClippedRoundOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("top", &top_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& step_t = ctx->input(1);
    OP_REQUIRES(ctx, step_t.NumElements() == 1,
                InvalidArgument("TfxbarClippedRound: step has shape ", step_t.shape().DebugString(),
                                "; it needs one value"));
    const float step = step_t.flat<float>()(0);
    const float top = top_;
    const Tensor& x = ctx->input(0);
    Tensor* y = InPlaceOutput(ctx);
    if (y == nullptr) return;
    const float* src = x.flat<float>().data();
    float* dst = y->flat<float>().data();
    ShardRange(ctx, x.NumElements(), 8, [&](int64_t first, int64_t last) {
      int64_t i = first;
#if defined(__AVX2__)
      const __m256 s = _mm256_set1_ps(step), hi = _mm256_set1_ps(top), zero = _mm256_setzero_ps();
      for (; i + 8 <= last; i += 8) {
        __m256 q = _mm256_div_ps(_mm256_loadu_ps(src + i), s);
        q = _mm256_blendv_ps(q, hi, _mm256_cmp_ps(q, hi, _CMP_GT_OQ));                  // min(q, top)
        const __m256 keep = _mm256_or_ps(_mm256_cmp_ps(q, zero, _CMP_GT_OQ), _mm256_cmp_ps(q, q, _CMP_UNORD_Q));
        q = _mm256_blendv_ps(zero, q, keep);                                            // max(q, 0)
        q = _mm256_round_ps(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_storeu_ps(dst + i, _mm256_mul_ps(q, s));
      }
#endif
      for (; i < last; ++i) {
        float q = src[i] / step;
        if (q > top) q = top;
        if (!(q > 0.0f) && q == q) q = 0.0f;   // NaN passes through, −0 becomes +0
        dst[i] = std::nearbyint(q) * step;
      }
    });
  }

 private:
  float top_;
};

REGISTER_KERNEL_BUILDER(Name("TfxbarChannelAffine").Device(DEVICE_CPU), ChannelAffineOp);
REGISTER_KERNEL_BUILDER(Name("TfxbarClippedRound").Device(DEVICE_CPU), ClippedRoundOp);

}  // namespace tfxbar
