// SPDX-License-Identifier: Apache-2.0
// Parameters shared by the upfirdn3d binding (upfirdn3d.cpp) and its CUDA kernels (upfirdn3d.cu).
//
// Tensors are [N, C, D, H, W] with arbitrary strides (contiguous, channels_last_3d, sliced or expanded views).
// Per-axis arrays are indexed by spatial axis s = dim - 2: 0 = D (z), 1 = H (y), 2 = W (x).
// Output sample o along an axis reads the up-sampled, padded input at positions o * down - pad0 + j for
// filter taps j = 0 .. fsize - 1; only positions that are multiples of `up` inside [0, in * up) hold input
// samples (the rest are inserted zeros or padding), so the kernels visit just those taps.

#pragma once

#include <cstdint>

#include <c10/core/ScalarType.h>
#include <cuda_runtime.h>

struct Upfirdn3dParams {
    const void* x;          // input [N, C, D, H, W], element type = the dispatched scalar type
    void* y;                // output [N, C, D', H', W']
    const void* f;          // taps in correlation order, accumulation type (float, or double for fp64 data);
                            // full kernel: [fz, fy, fx] contiguous; axis kernel: [fsize] for the filtered axis
    int64_t in_size[5];     // N, C, D, H, W of x
    int64_t in_stride[5];   // element strides of x
    int64_t out_size[5];    // N, C, D', H', W' of y
    int64_t out_stride[5];  // element strides of y
    int order[5];           // dims of y from outermost to innermost in memory (threads walk y in that order)
    int up[3];              // per spatial axis (z, y, x)
    int down[3];
    int pad0[3];            // leading padding (negative: crop)
    int fsize[3];           // taps per spatial axis (1 where unfiltered)
    int axis;               // axis kernel only: tensor dim (2, 3 or 4) it resamples; the others pass through
    double gain;            // multiplies every output
    int64_t total;          // number of output elements
};

// Launch the 1D-along-`p.axis` kernel (full = false) or the 3D-filter kernel (full = true) on `stream`.
// use_int64 selects 64-bit index arithmetic for tensors whose offsets do not fit in 32 bits.
void upfirdn3d_launch(const Upfirdn3dParams& p, c10::ScalarType dtype, bool full, bool use_int64,
                      cudaStream_t stream);
