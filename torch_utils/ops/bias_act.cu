// SPDX-License-Identifier: Apache-2.0
//
// CUDA kernel of bias_act: an element-wise grid-stride loop over the memory of dense tensors that share strides.
// The per-element math lives in bias_act.h; this file only walks the elements and launches.

#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <climits>

#include "bias_act.h"

// Threads per block, and resident blocks per multiprocessor the grid aims at (more would only queue up).
constexpr int kBiasActBlock = 256;
constexpr int kBiasActBlocksPerSM = 8;

template <class scalar_t, class index_t>
__global__ void bias_act_kernel(bias_act_params p)
{
    using opmath_t = at::opmath_type<scalar_t>;  // float for half, bfloat16 and float; double for double.
    const index_t n = static_cast<index_t>(p.numel);
    const index_t step = static_cast<index_t>(blockDim.x) * static_cast<index_t>(gridDim.x);
    const index_t first = static_cast<index_t>(blockIdx.x) * static_cast<index_t>(blockDim.x) +
                          static_cast<index_t>(threadIdx.x);
    for (index_t i = first; i < n; i += step)
        bias_act_element<scalar_t, opmath_t, index_t>(p, i);
}

template <class scalar_t>
void bias_act_launch(const bias_act_params& p)
{
    int device = 0;
    int sm_count = 0;
    C10_CUDA_CHECK(cudaGetDevice(&device));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
    const int64_t blocks_needed = (p.numel + kBiasActBlock - 1) / kBiasActBlock;
    const int grid = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(blocks_needed,
                                                                         int64_t(sm_count) * kBiasActBlocksPerSM)));
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

    // 32-bit indices are cheaper to divide; they are safe while the last index plus one grid step fits in int.
    const int64_t last_step = int64_t(grid) * kBiasActBlock;
    if (p.numel + last_step <= INT_MAX)
        bias_act_kernel<scalar_t, int32_t><<<grid, kBiasActBlock, 0, stream>>>(p);
    else
        bias_act_kernel<scalar_t, int64_t><<<grid, kBiasActBlock, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template void bias_act_launch<float>(const bias_act_params& p);
template void bias_act_launch<double>(const bias_act_params& p);
template void bias_act_launch<c10::Half>(const bias_act_params& p);
template void bias_act_launch<c10::BFloat16>(const bias_act_params& p);
