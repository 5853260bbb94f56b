// SPDX-License-Identifier: Apache-2.0
//
// Python binding of bias_act: checks every input, fills the parameter block and calls the launcher.
// Optional tensors are passed as empty tensors (numel 0).
//
// The CPU tests compile this file with BIAS_ACT_HOST_LOOP and a host launcher that runs the same per-element
// code in a plain loop, so that the kernel's arithmetic and this binding are checked on machines without a GPU.

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/DeviceGuard.h>
#include <torch/csrc/utils/pybind.h>

#include "bias_act.h"

#ifdef BIAS_ACT_HOST_LOOP
#define BIAS_ACT_DEVICE_OK(t) (t).is_cpu()
#define BIAS_ACT_DEVICE_NAME "the CPU (host-loop build)"
#else
#define BIAS_ACT_DEVICE_OK(t) (t).is_cuda()
#define BIAS_ACT_DEVICE_NAME "a CUDA device"
#endif

namespace {

bool present(const at::Tensor& t)
{
    return t.defined() && t.numel() > 0;
}

// An optional element-wise operand must match x in device, dtype, sizes and strides (the kernel indexes memory).
void check_operand(const at::Tensor& t, const at::Tensor& x, const char* name, bool required)
{
    TORCH_CHECK(!required || present(t), "bias_act: ", name, " is required for this activation and grad order");
    if (!present(t))
        return;
    TORCH_CHECK(t.device() == x.device(), "bias_act: ", name, " must be on the same device as x");
    TORCH_CHECK(t.scalar_type() == x.scalar_type(), "bias_act: ", name, " must have the same dtype as x");
    TORCH_CHECK(t.sizes() == x.sizes(), "bias_act: ", name, " must have the same shape as x");
    TORCH_CHECK(t.strides() == x.strides(), "bias_act: ", name, " must have the same strides as x");
}

void check_bias(const at::Tensor& b, const at::Tensor& x, int64_t dim)
{
    if (!present(b))
        return;
    TORCH_CHECK(b.device() == x.device(), "bias_act: b must be on the same device as x");
    TORCH_CHECK(b.scalar_type() == x.scalar_type(), "bias_act: b must have the same dtype as x");
    TORCH_CHECK(b.dim() == 1 && b.is_contiguous(), "bias_act: b must be a contiguous 1D tensor");
    TORCH_CHECK(b.numel() == x.size(dim), "bias_act: b must have as many elements as x has along dim");
}

const void* data_or_null(const at::Tensor& t)
{
    return present(t) ? t.data_ptr() : nullptr;
}

}  // namespace

// grad 0: forward; grad 1: first derivative; grad 2: second-derivative term (see bias_act.h).
at::Tensor bias_act(const at::Tensor& x, const at::Tensor& b, const at::Tensor& xref, const at::Tensor& yref,
                    const at::Tensor& dy, int64_t grad, int64_t act, double alpha, double gain, double clamp,
                    int64_t dim)
{
    TORCH_CHECK(x.defined(), "bias_act: x must be a tensor");
    TORCH_CHECK(BIAS_ACT_DEVICE_OK(x), "bias_act: x must reside on ", BIAS_ACT_DEVICE_NAME);
    TORCH_CHECK(at::isFloatingType(x.scalar_type()), "bias_act: x must be float16, bfloat16, float32 or float64");
    TORCH_CHECK(dim >= 0 && dim < x.dim(), "bias_act: dim must lie in [0, x.dim())");
    TORCH_CHECK(grad >= 0 && grad <= 2, "bias_act: grad must be 0, 1 or 2");
    TORCH_CHECK(act >= kBiasActLinear && act <= kBiasActSwish, "bias_act: unknown activation code");
    if (x.numel() == 0)
        return at::empty_like(x);
    TORCH_CHECK(x.is_non_overlapping_and_dense(), "bias_act: x must be non-overlapping and dense");

    const int ref = bias_act_ref_of(static_cast<int>(act));
    check_bias(b, x, dim);
    check_operand(xref, x, "xref", grad > 0 && ref == kBiasActRefX);
    check_operand(yref, x, "yref", grad > 0 && (ref == kBiasActRefY || clamp >= 0));
    check_operand(dy, x, "dy", grad == 2);

    const c10::OptionalDeviceGuard device_guard(x.device());
    at::Tensor y = at::empty_like(x);  // Same strides as x, since x is dense.
    TORCH_CHECK(y.strides() == x.strides(), "bias_act: could not allocate the output with the strides of x");

    bias_act_params p;
    p.x = x.data_ptr();
    p.b = data_or_null(b);
    p.xref = data_or_null(xref);
    p.yref = data_or_null(yref);
    p.dy = data_or_null(dy);
    p.y = y.data_ptr();
    p.numel = x.numel();
    p.stride_dim = x.size(dim) > 1 ? x.stride(dim) : 1;  // A size-1 dimension may carry any stride, even 0.
    p.size_dim = x.size(dim);
    p.act = static_cast<int>(act);
    p.grad = static_cast<int>(grad);
    p.alpha = alpha;
    p.gain = gain;
    p.clamp = clamp;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "bias_act",
                                    [&] { bias_act_launch<scalar_t>(p); });
    return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("bias_act", &bias_act, "Fused bias + activation + gain + clamp, and its derivatives");
}
