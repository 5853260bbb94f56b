// SPDX-License-Identifier: Apache-2.0
// CUDA kernels for upfirdn3d: one thread per output element, walking the output in memory order so that
// neighbouring threads touch neighbouring addresses whatever the layout (contiguous or channels_last_3d).
// Two kernels: a 1D pass along any one axis (the separable passes) and a [fz, fy, fx] 3D-filter pass.
// Accumulation is in float (double for fp64 data); zero-inserted samples are skipped, not multiplied.
// The per-element bodies are __host__ __device__ so that the index arithmetic can also be exercised on a CPU.

#include <algorithm>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "upfirdn3d.h"

namespace {

constexpr int kBlockSize = 256;
constexpr int64_t kMaxBlocks = 1 << 20;  // Beyond this the grid-stride loop takes over.

// Position of output element i, with i enumerating y in its memory order (p.order: outermost first).
// Returns y's offset; adds the pass-through dims' share of x's offset to in_offset; writes the output
// coordinate of every resampled dim (all spatial dims if Full, else only p.axis) into o[dim - 2].
template <bool Full, typename index_t>
__host__ __device__ __forceinline__ index_t locate(index_t i, const Upfirdn3dParams& p, index_t& in_offset,
                                          index_t& oz, index_t& oy, index_t& ox) {
    index_t out_offset = 0;
#pragma unroll
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
__host__ __device__ __forceinline__ index_t tap_range(index_t o, int up, int down, int pad0, int fsize, index_t in_size,
                                             index_t& j, index_t& j_end) {
    const index_t m0 = o * down - pad0;
    j = m0 < 0 ? -m0 : 0;                 // first tap at a non-negative position
    const index_t rem = (m0 + j) % up;    // m0 + j >= 0, so the remainder is non-negative
    if (rem != 0) j += up - rem;          // first tap on a real (not inserted) sample
    const index_t last = in_size * up - m0;  // taps at or beyond this position fall past the input
    j_end = last < fsize ? last : static_cast<index_t>(fsize);
    return m0;
}

// Output element i of one 1D upfirdn pass along tensor dim p.axis; every other dim maps one to one.
template <typename scalar_t, typename index_t>
__host__ __device__ __forceinline__ void axis_element(const Upfirdn3dParams& p, index_t i) {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* x = static_cast<const scalar_t*>(p.x);
    const acc_t* f = static_cast<const acc_t*>(p.f);
    const int s = p.axis - 2;
    const int up = p.up[s];
    const index_t in_step = static_cast<index_t>(p.in_stride[p.axis]);
    index_t in_offset = 0;
    index_t o[3] = {0, 0, 0};
    const index_t out_offset = locate<false>(i, p, in_offset, o[0], o[1], o[2]);
    index_t j, j_end;
    const index_t o_axis = s == 0 ? o[0] : (s == 1 ? o[1] : o[2]);  // constant indices keep o in registers
    const index_t m0 = tap_range(o_axis, up, p.down[s], p.pad0[s], p.fsize[s],
                                 static_cast<index_t>(p.in_size[p.axis]), j, j_end);
    acc_t acc = 0;
    for (; j < j_end; j += up) {
        acc += f[j] * static_cast<acc_t>(x[in_offset + (m0 + j) / up * in_step]);
    }
    static_cast<scalar_t*>(p.y)[out_offset] = static_cast<scalar_t>(acc * static_cast<acc_t>(p.gain));
}

// Output element i of a non-separable pass: a [fz, fy, fx] filter over all three spatial axes at once.
template <typename scalar_t, typename index_t>
__host__ __device__ __forceinline__ void full_element(const Upfirdn3dParams& p, index_t i) {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* x = static_cast<const scalar_t*>(p.x);
    const acc_t* f = static_cast<const acc_t*>(p.f);
    index_t base = 0;
    index_t o[3] = {0, 0, 0};
    const index_t out_offset = locate<true>(i, p, base, o[0], o[1], o[2]);
    index_t j[3], j_end[3], m0[3], step[3];
#pragma unroll
    for (int s = 0; s < 3; ++s) {
        m0[s] = tap_range(o[s], p.up[s], p.down[s], p.pad0[s], p.fsize[s], static_cast<index_t>(p.in_size[s + 2]),
                          j[s], j_end[s]);
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

// Grid-stride loop over the output elements.
template <typename scalar_t, typename index_t, bool Full>
__global__ void upfirdn3d_kernel(const Upfirdn3dParams p) {
    const index_t total = static_cast<index_t>(p.total);
    const index_t stride = static_cast<index_t>(blockDim.x) * gridDim.x;
    for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
        if (Full) {
            full_element<scalar_t, index_t>(p, i);
        } else {
            axis_element<scalar_t, index_t>(p, i);
        }
    }
}

template <typename scalar_t, typename index_t>
void launch_typed(const Upfirdn3dParams& p, bool full, cudaStream_t stream) {
    const int64_t blocks = std::min((p.total + kBlockSize - 1) / kBlockSize, kMaxBlocks);
    const unsigned grid = static_cast<unsigned>(blocks);
    if (full) {
        upfirdn3d_kernel<scalar_t, index_t, true><<<grid, kBlockSize, 0, stream>>>(p);
    } else {
        upfirdn3d_kernel<scalar_t, index_t, false><<<grid, kBlockSize, 0, stream>>>(p);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void upfirdn3d_launch(const Upfirdn3dParams& p, c10::ScalarType dtype, bool full, bool use_int64,
                      cudaStream_t stream) {
    if (p.total == 0) return;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, dtype, "upfirdn3d_cuda", [&] {
        if (use_int64) {
            launch_typed<scalar_t, int64_t>(p, full, stream);
        } else {
            launch_typed<scalar_t, int32_t>(p, full, stream);
        }
    });
}
