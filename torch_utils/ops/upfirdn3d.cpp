// SPDX-License-Identifier: Apache-2.0
// Python binding of the upfirdn3d CUDA kernels: input checks, output allocation (same memory format as the
// input), index-width choice and launch. Gradients are assembled in upfirdn3d.py.
//
// The CPU tests compile this file with UPFIRDN3D_HOST_LOOP and a launcher that runs the kernels' per-element
// code (upfirdn3d.h) in a plain loop, so that this binding and the index arithmetic are checked without a GPU.

#include <algorithm>
#include <array>
#include <cstdlib>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>
#include <torch/csrc/utils/pybind.h>

#include "upfirdn3d.h"

#ifdef UPFIRDN3D_HOST_LOOP
#define UPFIRDN3D_DEVICE_OK(t) (t).is_cpu()
#define UPFIRDN3D_DEVICE_NAME "a CPU tensor (host-loop build)"
#else
#define UPFIRDN3D_DEVICE_OK(t) (t).is_cuda()
#define UPFIRDN3D_DEVICE_NAME "a CUDA tensor"
#endif

namespace {

// Offsets stay below this in the 32-bit kernels, with room for the grid-stride step.
constexpr int64_t kInt32Limit = int64_t(1) << 30;

int64_t max_offset(const at::Tensor& t) {
    int64_t offset = 0;
    for (int d = 0; d < t.dim(); ++d) offset += (t.size(d) - 1) * t.stride(d);
    return offset;
}

void check_inputs(const at::Tensor& x, const at::Tensor& f, int filter_dims) {
    TORCH_CHECK(UPFIRDN3D_DEVICE_OK(x), "upfirdn3d: x must be ", UPFIRDN3D_DEVICE_NAME);
    TORCH_CHECK(x.dim() == 5, "upfirdn3d: x must be [N, C, D, H, W], got ", x.dim(), " dimensions");
    const auto dtype = x.scalar_type();
    TORCH_CHECK(dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kFloat || dtype == at::kDouble,
                "upfirdn3d: x must be float16, bfloat16, float32 or float64, got ", dtype);
    TORCH_CHECK(f.device() == x.device(), "upfirdn3d: f must be on the same device as x");
    const auto f_dtype = dtype == at::kDouble ? at::kDouble : at::kFloat;
    TORCH_CHECK(f.scalar_type() == f_dtype, "upfirdn3d: f must be ", f_dtype, " for ", dtype, " data");
    TORCH_CHECK(f.dim() == filter_dims && f.numel() > 0, "upfirdn3d: f must be a non-empty ", filter_dims,
                "D tensor");
    TORCH_CHECK(f.is_contiguous(), "upfirdn3d: f must be contiguous");
    TORCH_CHECK(max_offset(f) < kInt32Limit, "upfirdn3d: filter too large");
}

// Sizes, strides, traversal order and index width; returns the allocated output.
at::Tensor prepare(Upfirdn3dParams& p, const at::Tensor& x, const at::Tensor& f,
                   const std::array<int64_t, 5>& out_size) {
    const auto y = at::empty({out_size[0], out_size[1], out_size[2], out_size[3], out_size[4]},
                             x.options().memory_format(x.suggest_memory_format()));
    p.x = x.data_ptr();
    p.y = y.data_ptr();
    p.f = f.data_ptr();
    for (int d = 0; d < 5; ++d) {
        p.in_size[d] = x.size(d);
        p.in_stride[d] = x.stride(d);
        p.out_size[d] = y.size(d);
        p.out_stride[d] = y.stride(d);
    }
    // Walk y from its largest stride to its smallest, so consecutive threads write consecutive addresses.
    std::array<int, 5> order = {0, 1, 2, 3, 4};
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p.out_stride[a] > p.out_stride[b]; });
    std::copy(order.begin(), order.end(), p.order);
    p.total = y.numel();
    return y;
}

bool needs_int64(const Upfirdn3dParams& p, const at::Tensor& x, const at::Tensor& y) {
    int64_t longest = 0;  // largest up-sampled, padded extent the tap arithmetic reaches
    for (int s = 0; s < 3; ++s) {
        longest = std::max(longest, p.in_size[s + 2] * p.up[s] + std::abs(p.pad0[s]) + p.fsize[s]);
        longest = std::max(longest, p.out_size[s + 2] * p.down[s] + std::abs(p.pad0[s]));
    }
    return std::max({max_offset(x), max_offset(y), p.total, longest}) >= kInt32Limit;
}

int64_t output_size(int64_t in, int up, int down, int pad0, int pad1, int64_t fsize, const char* axis) {
    TORCH_CHECK(up >= 1 && down >= 1, "upfirdn3d: up and down must be >= 1 along ", axis);
    const int64_t out = (in * up + pad0 + pad1 - fsize + down) / down;
    const bool valid = in * up + pad0 + pad1 - fsize >= 0;
    TORCH_CHECK(valid && out >= 1, "upfirdn3d: output size along ", axis, " would be <= 0");
    return out;
}

at::Tensor launch(Upfirdn3dParams& p, const at::Tensor& x, const at::Tensor& f,
                  const std::array<int64_t, 5>& out_size, bool full) {
    const c10::OptionalDeviceGuard device_guard(x.device());
    at::Tensor y = prepare(p, x, f, out_size);
    upfirdn3d_launch(p, x.scalar_type(), full, needs_int64(p, x, y));
    return y;
}

}  // namespace

// One 1D pass along tensor dim `dim` (2 = D, 3 = H, 4 = W); `f` holds the taps in correlation order.
at::Tensor upfirdn3d_axis(at::Tensor x, at::Tensor f, int64_t dim, int64_t up, int64_t down, int64_t pad0,
                          int64_t pad1, double gain) {
    check_inputs(x, f, 1);
    TORCH_CHECK(dim >= 2 && dim <= 4, "upfirdn3d: dim must be 2, 3 or 4, got ", dim);
    Upfirdn3dParams p = {};
    const int s = static_cast<int>(dim) - 2;
    for (int t = 0; t < 3; ++t) {
        p.up[t] = p.down[t] = p.fsize[t] = 1;
        p.pad0[t] = 0;
    }
    p.up[s] = static_cast<int>(up);
    p.down[s] = static_cast<int>(down);
    p.pad0[s] = static_cast<int>(pad0);
    p.fsize[s] = static_cast<int>(f.size(0));
    p.axis = static_cast<int>(dim);
    p.gain = gain;
    std::array<int64_t, 5> out_size = {x.size(0), x.size(1), x.size(2), x.size(3), x.size(4)};
    out_size[dim] = output_size(x.size(dim), p.up[s], p.down[s], p.pad0[s], static_cast<int>(pad1), f.size(0),
                                "the filtered axis");
    return launch(p, x, f, out_size, false);
}

// One pass with a [fz, fy, fx] filter; per-axis values in x, y, z order as the Python op takes them.
at::Tensor upfirdn3d_full(at::Tensor x, at::Tensor f, int64_t up_x, int64_t up_y, int64_t up_z,
                          int64_t down_x, int64_t down_y, int64_t down_z, int64_t pad_x0, int64_t pad_x1,
                          int64_t pad_y0, int64_t pad_y1, int64_t pad_z0, int64_t pad_z1, double gain) {
    check_inputs(x, f, 3);
    Upfirdn3dParams p = {};
    const int64_t up[3] = {up_z, up_y, up_x};
    const int64_t down[3] = {down_z, down_y, down_x};
    const int64_t pad0[3] = {pad_z0, pad_y0, pad_x0};
    const int64_t pad1[3] = {pad_z1, pad_y1, pad_x1};
    const char* names[3] = {"z", "y", "x"};
    std::array<int64_t, 5> out_size = {x.size(0), x.size(1), 0, 0, 0};
    for (int s = 0; s < 3; ++s) {
        p.up[s] = static_cast<int>(up[s]);
        p.down[s] = static_cast<int>(down[s]);
        p.pad0[s] = static_cast<int>(pad0[s]);
        p.fsize[s] = static_cast<int>(f.size(s));
        out_size[s + 2] = output_size(x.size(s + 2), p.up[s], p.down[s], p.pad0[s], static_cast<int>(pad1[s]),
                                      f.size(s), names[s]);
    }
    p.axis = -1;
    p.gain = gain;
    return launch(p, x, f, out_size, true);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("upfirdn3d_axis", &upfirdn3d_axis, "upfirdn along one axis of [N, C, D, H, W] (CUDA)");
    m.def("upfirdn3d_full", &upfirdn3d_full, "upfirdn with a [fz, fy, fx] filter on [N, C, D, H, W] (CUDA)");
}
