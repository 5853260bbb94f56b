// SPDX-License-Identifier: Apache-2.0
//
// Parameter block and per-element math of the fused bias + activation + gain + clamp op (bias_act).
//
// The math is plain host/device C++ so that the same code runs in the CUDA kernel (bias_act.cu) and in a host
// loop that the CPU tests compile to check the kernel's arithmetic without a GPU. The header needs no torch
// headers; the storage types (float, double, c10::Half, c10::BFloat16) come from whoever instantiates it.

#pragma once

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define BIAS_ACT_HD __host__ __device__ __forceinline__
#else
#define BIAS_ACT_HD inline
#endif

// Activation codes; they must equal `cuda_idx` of activation_funcs in bias_act.py.
enum BiasActKind : int {
    kBiasActLinear = 1,
    kBiasActRelu = 2,
    kBiasActLrelu = 3,
    kBiasActTanh = 4,
    kBiasActSigmoid = 5,
    kBiasActElu = 6,
    kBiasActSelu = 7,
    kBiasActSoftplus = 8,
    kBiasActSwish = 9,
};

// Which saved tensor the derivatives are computed from ('ref' in activation_funcs).
enum BiasActRef : int { kBiasActRefNone = 0, kBiasActRefX = 1, kBiasActRefY = 2 };

// What the kernel writes to `y`, with z = xref + b, t = yref / gain and mask = 0 where |yref| reached the clamp:
//   grad 0: y = clamp(gain * act(x + b))                      (forward)
//   grad 1: y = x * gain * act'(z) * mask                     (first derivative; x holds dL/dy)
//   grad 2: y = x * dy * gain * act''(z) * mask   (ref x)     (second-derivative term; x holds d(dL/dx))
//           y = x * dy * h'(t) * mask             (ref y)     where h(t) = act'(act^-1(t))
struct bias_act_params {
    const void* x;       // [numel] main input: the op's input (grad 0), dL/dy (grad 1) or d(dL/dx) (grad 2)
    const void* b;       // [size_dim] bias, or nullptr
    const void* xref;    // [numel] the forward input (before the bias); grad 1/2 of ref-x activations
    const void* yref;    // [numel] the forward output; grad 1/2 of ref-y activations or when clamping
    const void* dy;      // [numel] dL/dy of the first backward; grad 2 only
    void* y;             // [numel] output; every tensor shares the strides of x
    int64_t numel;       // Number of elements (= span in memory: all tensors are non-overlapping and dense).
    int64_t stride_dim;  // Memory stride of the bias dimension.
    int64_t size_dim;    // Length of the bias dimension.
    int act;             // BiasActKind.
    int grad;            // 0, 1 or 2 (see above).
    double alpha;        // Slope of lrelu for negative inputs.
    double gain;         // Output scale.
    double clamp;        // Output limit; negative means no clamping.
};

// Launch the kernel for storage type `scalar_t` on the current CUDA stream (bias_act.cu).
template <class scalar_t>
void bias_act_launch(const bias_act_params& p);

//----------------------------------------------------------------------------
// Scalar helpers with float and double overloads, so that float math stays in single precision on the device.

BIAS_ACT_HD float ba_exp(float v) { return expf(v); }
BIAS_ACT_HD double ba_exp(double v) { return exp(v); }
BIAS_ACT_HD float ba_expm1(float v) { return expm1f(v); }
BIAS_ACT_HD double ba_expm1(double v) { return expm1(v); }
BIAS_ACT_HD float ba_log1p(float v) { return log1pf(v); }
BIAS_ACT_HD double ba_log1p(double v) { return log1p(v); }
BIAS_ACT_HD double ba_tanh(double v) { return tanh(v); }
BIAS_ACT_HD float ba_tanh(float v)
{
    // Not tanhf: --use_fast_math turns it into tanh.approx.f32 (relative error ~5e-4). expm1f stays accurate.
    if (fabsf(v) > 10.0f)
        return copysignf(1.0f, v);  // tanh(10) rounds to 1 in float; avoids inf / inf below.
    const float e = expm1f(2.0f * v);
    return e / (e + 2.0f);
}
BIAS_ACT_HD float ba_abs(float v) { return fabsf(v); }
BIAS_ACT_HD double ba_abs(double v) { return fabs(v); }

// Constants of SELU (Klambauer et al. 2017), as torch.nn.functional.selu uses them.
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSeluScale = 1.0507009873554804934193349852946;

// Inputs above this are returned unchanged by softplus, as torch.nn.functional.softplus does (threshold=20).
constexpr double kSoftplusThreshold = 20.0;

BIAS_ACT_HD int bias_act_ref_of(int act)
{
    if (act == kBiasActLinear)
        return kBiasActRefNone;
    return act == kBiasActSwish ? kBiasActRefX : kBiasActRefY;
}

template <class T>
BIAS_ACT_HD T ba_sigmoid(T z)
{
    return T(1) / (T(1) + ba_exp(-z));
}

//----------------------------------------------------------------------------
// The activations, their first derivative from z or from t = act(z), and their second derivative.

template <class T>
BIAS_ACT_HD T bias_act_value(int act, T z, T alpha)
{
    switch (act) {
    case kBiasActRelu: return z > T(0) ? z : T(0);
    case kBiasActLrelu: return z > T(0) ? z : z * alpha;
    case kBiasActTanh: return ba_tanh(z);
    case kBiasActSigmoid: return ba_sigmoid(z);
    case kBiasActElu: return z > T(0) ? z : ba_expm1(z);
    case kBiasActSelu: return z > T(0) ? T(kSeluScale) * z : T(kSeluScale * kSeluAlpha) * ba_expm1(z);
    case kBiasActSoftplus: return z > T(kSoftplusThreshold) ? z : ba_log1p(ba_exp(z));
    case kBiasActSwish: return z * ba_sigmoid(z);
    default: return z;
    }
}

// act'(z) written as a function of t = act(z), for the ref-y activations (relu .. softplus).
template <class T>
BIAS_ACT_HD T bias_act_grad_from_y(int act, T t, T alpha)
{
    switch (act) {
    case kBiasActRelu: return t > T(0) ? T(1) : T(0);
    case kBiasActLrelu: return t > T(0) ? T(1) : alpha;
    case kBiasActTanh: return T(1) - t * t;
    case kBiasActSigmoid: return t * (T(1) - t);
    case kBiasActElu: return t > T(0) ? T(1) : t + T(1);
    case kBiasActSelu: return t > T(0) ? T(kSeluScale) : t + T(kSeluScale * kSeluAlpha);
    case kBiasActSoftplus: return -ba_expm1(-t);  // sigmoid(z) = 1 - exp(-softplus(z)).
    default: return T(1);
    }
}

// h'(t), where h(t) = act'(act^-1(t)) is the function above; h'(t) * act'(z) = act''(z) by the chain rule.
template <class T>
BIAS_ACT_HD T bias_act_grad2_from_y(int act, T t)
{
    switch (act) {
    case kBiasActTanh: return T(-2) * t;
    case kBiasActSigmoid: return T(1) - T(2) * t;
    case kBiasActElu: return t > T(0) ? T(0) : T(1);
    case kBiasActSelu: return t > T(0) ? T(0) : T(1);
    case kBiasActSoftplus: return ba_exp(-t);
    default: return T(0);  // Piecewise linear: relu, lrelu.
    }
}

// act'(z) and act''(z) for the ref-x activation (swish); anything else is treated as linear.
template <class T>
BIAS_ACT_HD T bias_act_grad_from_x(int act, T z)
{
    if (act != kBiasActSwish)
        return T(1);
    const T s = ba_sigmoid(z);
    return s * (T(1) + z * (T(1) - s));
}

template <class T>
BIAS_ACT_HD T bias_act_grad2_from_x(int act, T z)
{
    if (act != kBiasActSwish)
        return T(0);
    const T s = ba_sigmoid(z);
    return s * (T(1) - s) * (T(2) + z * (T(1) - T(2) * s));
}

//----------------------------------------------------------------------------
// One element of the op. `i` is the element's offset in memory, shared by all tensors (they have equal strides),
// so the bias channel follows from the stride of the bias dimension for any memory format.

template <class scalar_t, class T>
BIAS_ACT_HD T bias_act_load(const void* ptr, int64_t i)
{
    return static_cast<T>(static_cast<const scalar_t*>(ptr)[i]);
}

template <class T>
BIAS_ACT_HD T bias_act_forward(const bias_act_params& p, T x, T b)
{
    T y = bias_act_value<T>(p.act, x + b, static_cast<T>(p.alpha)) * static_cast<T>(p.gain);
    if (p.clamp >= 0) {
        const T c = static_cast<T>(p.clamp);
        y = y > c ? c : (y < -c ? -c : y);  // Written with comparisons so that NaN passes through like torch.clamp.
    }
    return y;
}

template <class scalar_t, class T, class index_t>
BIAS_ACT_HD T bias_act_backward(const bias_act_params& p, index_t i, T x, T b)
{
    const T gain = static_cast<T>(p.gain);
    if (gain == T(0))
        return T(0);
    if (p.clamp >= 0) {
        // Compare with the limit as stored: a clamped output holds exactly the clamp rounded to scalar_t.
        const T limit = static_cast<T>(static_cast<scalar_t>(static_cast<T>(p.clamp)));
        if (ba_abs(bias_act_load<scalar_t, T>(p.yref, i)) >= limit)
            return T(0);
    }
    const int ref = bias_act_ref_of(p.act);
    if (ref == kBiasActRefNone)
        return p.grad == 1 ? x * gain : T(0);
    if (ref == kBiasActRefX) {
        const T z = bias_act_load<scalar_t, T>(p.xref, i) + b;
        if (p.grad == 1)
            return x * gain * bias_act_grad_from_x<T>(p.act, z);
        return x * bias_act_load<scalar_t, T>(p.dy, i) * gain * bias_act_grad2_from_x<T>(p.act, z);
    }
    const T t = bias_act_load<scalar_t, T>(p.yref, i) / gain;
    if (p.grad == 1)
        return x * gain * bias_act_grad_from_y<T>(p.act, t, static_cast<T>(p.alpha));
    return x * bias_act_load<scalar_t, T>(p.dy, i) * bias_act_grad2_from_y<T>(p.act, t);
}

template <class scalar_t, class T, class index_t>
BIAS_ACT_HD void bias_act_element(const bias_act_params& p, index_t i)
{
    const T x = bias_act_load<scalar_t, T>(p.x, i);
    T b = T(0);
    if (p.b != nullptr && (p.grad == 0 || bias_act_ref_of(p.act) == kBiasActRefX)) {
        const index_t channel = (i / static_cast<index_t>(p.stride_dim)) % static_cast<index_t>(p.size_dim);
        b = bias_act_load<scalar_t, T>(p.b, channel);
    }
    const T y = p.grad == 0 ? bias_act_forward<T>(p, x, b)
                            : bias_act_backward<scalar_t, T, index_t>(p, i, x, b);
    static_cast<scalar_t*>(p.y)[i] = static_cast<scalar_t>(y);
}
