// SPDX-License-Identifier: Apache-2.0
// Parameter block and per-element bodies of upfirdn3d, shared by the binding (upfirdn3d.cpp), the CUDA kernels
// (upfirdn3d.cu) and a host loop that the CPU tests build, so the kernels' index arithmetic is checked on machines
// without a GPU. The header needs no CUDA headers.
//
// Tensors are [N, C, D, H, W] with arbitrary strides (contiguous, channels_last_3d, sliced or expanded views).
// Per-axis arrays are indexed by spatial axis s = dim - 2: 0 = D (z), 1 = H (y), 2 = W (x).
// Output sample o along an axis reads the up-sampled, padded input at positions o * down - pad0 + j for
// filter taps j = 0 .. fsize - 1; only positions that are multiples of `up` inside [0, in * up) hold input
// samples (the rest are inserted zeros or padding), so the kernels visit just those taps.

#pragma once

#include <cstdint>

#include <ATen/OpMathType.h>
#include <c10/core/ScalarType.h>

#if defined(__CUDACC__)
#define UPFIRDN3D_HD __host__ __device__ __forceinline__
#define UPFIRDN3D_UNROLL _Pragma("unroll")
#else
#define UPFIRDN3D_HD inline
#define UPFIRDN3D_UNROLL
#endif

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

// Run the 1D-along-`p.axis` kernel (full = false) or the 3D-filter kernel (full = true): on the current CUDA
// stream (upfirdn3d.cu), or in a plain loop in the CPU test build. use_int64 selects 64-bit index arithmetic
// for tensors whose offsets do not fit in 32 bits.
void upfirdn3d_launch(const Upfirdn3dParams& p, c10::ScalarType dtype, bool full, bool use_int64);

// Position of output element i, with i enumerating y in its memory order (p.order: outermost first).
// Returns y's offset; adds the pass-through dims' share of x's offset to in_offset; writes the output
// coordinate of every resampled dim (all spatial dims if Full, else only p.axis) into oz, oy, ox.
template <bool Full, typename index_t>
UPFIRDN3D_HD index_t upfirdn3d_locate(index_t i, const Upfirdn3dParams& p, index_t& in_offset, index_t& oz,
                                      index_t& oy, index_t& ox)
{
    index_t out_offset = 0;
UPFIRDN3D_UNROLL
    for (int k = 4; k >= 0; --k) {
        const int dim = p.order[k];
        const index_t size = static_cast<index_t>(p.out_size[dim]);
        const index_t c = i % size;
        i /= size;
        out_offset += c * static_cast<index_t>(p.out_stride[dim]);
        const bool resampled = Full ? dim >= 2 : dim == p.axis;
        if (!resampled) {
            in_offset += c * static_cast<index_t>(p.in_stride[dim]);
        } else if (dim == 2) {
            oz = c;
        } else if (dim == 3) {
            oy = c;
        } else {
            ox = c;
        }
    }
    return out_offset;
}

// Taps of output sample `o` along one axis that land on real input samples: j runs over [j, j_end) in steps
// of `up`, and input index = (m0 + j) / up. Returns m0 = o * down - pad0, the up-sampled position of tap 0.
template <typename index_t>
UPFIRDN3D_HD index_t upfirdn3d_tap_range(index_t o, int up, int down, int pad0, int fsize, index_t in_size,
                                         index_t& j, index_t& j_end)
{
    const index_t m0 = o * down - pad0;
    j = m0 < 0 ? -m0 : 0;                    // first tap at a non-negative position
    const index_t rem = (m0 + j) % up;       // m0 + j >= 0, so the remainder is non-negative
    if (rem != 0) j += up - rem;             // first tap on a real (not inserted) sample
    const index_t last = in_size * up - m0;  // taps at or beyond this position fall past the input
    j_end = last < fsize ? last : static_cast<index_t>(fsize);
    return m0;
}

// Output element i of one 1D upfirdn pass along tensor dim p.axis; every other dim maps one to one.
template <typename scalar_t, typename index_t>
UPFIRDN3D_HD void upfirdn3d_axis_element(const Upfirdn3dParams& p, index_t i)
{
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* x = static_cast<const scalar_t*>(p.x);
    const acc_t* f = static_cast<const acc_t*>(p.f);
    const int s = p.axis - 2;
    const int up = p.up[s];
    const index_t in_step = static_cast<index_t>(p.in_stride[p.axis]);
    index_t in_offset = 0;
    index_t o[3] = {0, 0, 0};
    const index_t out_offset = upfirdn3d_locate<false>(i, p, in_offset, o[0], o[1], o[2]);
    index_t j, j_end;
    const index_t o_axis = s == 0 ? o[0] : (s == 1 ? o[1] : o[2]);  // constant indices keep o in registers
    const index_t m0 = upfirdn3d_tap_range(o_axis, up, p.down[s], p.pad0[s], p.fsize[s],
                                           static_cast<index_t>(p.in_size[p.axis]), j, j_end);
    acc_t acc = 0;
    for (; j < j_end; j += up) {
        acc += f[j] * static_cast<acc_t>(x[in_offset + (m0 + j) / up * in_step]);
    }
    static_cast<scalar_t*>(p.y)[out_offset] = static_cast<scalar_t>(acc * static_cast<acc_t>(p.gain));
}

// Output element i of a non-separable pass: a [fz, fy, fx] filter over all three spatial axes at once.
template <typename scalar_t, typename index_t>
UPFIRDN3D_HD void upfirdn3d_full_element(const Upfirdn3dParams& p, index_t i)
{
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* x = static_cast<const scalar_t*>(p.x);
    const acc_t* f = static_cast<const acc_t*>(p.f);
    index_t base = 0;
    index_t o[3] = {0, 0, 0};
    const index_t out_offset = upfirdn3d_locate<true>(i, p, base, o[0], o[1], o[2]);
    index_t j[3], j_end[3], m0[3], step[3];
UPFIRDN3D_UNROLL
    for (int s = 0; s < 3; ++s) {
        m0[s] = upfirdn3d_tap_range(o[s], p.up[s], p.down[s], p.pad0[s], p.fsize[s],
                                    static_cast<index_t>(p.in_size[s + 2]), j[s], j_end[s]);
        step[s] = static_cast<index_t>(p.in_stride[s + 2]);
    }
    acc_t acc = 0;
    for (index_t jz = j[0]; jz < j_end[0]; jz += p.up[0]) {
        const index_t offset_z = base + (m0[0] + jz) / p.up[0] * step[0];
        for (index_t jy = j[1]; jy < j_end[1]; jy += p.up[1]) {
            const index_t offset_zy = offset_z + (m0[1] + jy) / p.up[1] * step[1];
            const acc_t* f_zy = f + (jz * p.fsize[1] + jy) * p.fsize[2];
            for (index_t jx = j[2]; jx < j_end[2]; jx += p.up[2]) {
                acc += f_zy[jx] * static_cast<acc_t>(x[offset_zy + (m0[2] + jx) / p.up[2] * step[2]]);
            }
        }
    }
    static_cast<scalar_t*>(p.y)[out_offset] = static_cast<scalar_t>(acc * static_cast<acc_t>(p.gain));
}
