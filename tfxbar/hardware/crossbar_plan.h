// The geometry and tables of one TfxbarCrossbar call that both ways of forming partial sums read
// (crossbar_kernel.cc builds them; crossbar_sparse.h and crossbar_dense.h run them).
#pragma once

#include <cstdint>
#include <vector>

namespace tfxbar {

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

}  // namespace tfxbar
