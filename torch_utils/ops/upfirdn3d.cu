// SPDX-License-Identifier: Apache-2.0
// CUDA kernels for upfirdn3d: one thread per output element, walking the output in memory order so that
// neighbouring threads touch neighbouring addresses whatever the layout (contiguous or channels_last_3d).
// Two kernels: a 1D pass along any one axis (the separable passes) and a [fz, fy, fx] 3D-filter pass.
// Accumulation is in float (double for fp64 data); zero-inserted samples are skipped, not multiplied.
// The per-element bodies live in upfirdn3d.h, where the CPU tests run them in a host loop.

#include <algorithm>

#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "upfirdn3d.h"

namespace {

constexpr int kBlockSize = 256;
constexpr int64_t kMaxBlocks = 1 << 20;  // Beyond this the grid-stride loop takes over.

// Grid-stride loop over the output elements.
template <typename scalar_t, typename index_t, bool Full>
__global__ void upfirdn3d_kernel(const Upfirdn3dParams p) {
    const index_t total = static_cast<index_t>(p.total);
    const index_t stride = static_cast<index_t>(blockDim.x) * static_cast<index_t>(gridDim.x);
    for (index_t i = static_cast<index_t>(blockIdx.x) * static_cast<index_t>(blockDim.x) +
                     static_cast<index_t>(threadIdx.x);
         i < total; i += stride) {
        if (Full) {
            upfirdn3d_full_element<scalar_t, index_t>(p, i);
        } else {
            upfirdn3d_axis_element<scalar_t, index_t>(p, i);
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

void upfirdn3d_launch(const Upfirdn3dParams& p, c10::ScalarType dtype, bool full, bool use_int64) {
    if (p.total == 0) return;
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();  // of the device the binding's guard selected
    AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, dtype, "upfirdn3d_cuda", [&] {
        if (use_int64) {
            launch_typed<scalar_t, int64_t>(p, full, stream);
        } else {
            launch_typed<scalar_t, int32_t>(p, full, stream);
        }
    });
}
