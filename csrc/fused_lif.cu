// The fused multi-step LIF/PLIF neuron (docs/method.md, "Fused neurons"): the CPU kernel's forward
// and backward (src/model/neuron/cpu_kernel.rs), one thread per neuron looping over time.
// NVRTC compiles this file at run time for CUDA; the tests compile the same file for the host
// through csrc/cuda_on_host.h. Every operation is a round-to-nearest intrinsic (`__fadd_rn`, ...),
// so nothing is contracted into a fused multiply-add and each thread computes the CPU kernel's
// float32 values exactly.
//
// Charge modes: 0 (v - v/a) + x; 1 v*a + x; 2 (v - v*a) + x; 3 v*a + x (PLIF, a = 1 - r).
// With `rate` set (PLIF while training on the device), the parameter is read there instead of
// from `a`: a = r for mode 2, a = 1 - r for mode 3, so the host never reads the rate.

extern "C" {

__device__ __forceinline__ float leak_parameter(int mode, float a, const float* rate) {
    if (rate == 0) return a;
    return mode == 3 ? __fsub_rn(1.0f, *rate) : *rate;
}

__device__ __forceinline__ float charge(int mode, float a, float v, float x) {
    if (mode == 0) return __fadd_rn(__fsub_rn(v, __fdiv_rn(v, a)), x);
    if (mode == 2) return __fadd_rn(__fsub_rn(v, __fmul_rn(v, a)), x);
    return __fadd_rn(__fmul_rn(v, a), x);
}

__device__ __forceinline__ float carry(int mode, float a, float gm, float gn) {
    if (mode == 0) return __fadd_rn(__fadd_rn(gm, gn), __fdiv_rn(-gn, a));
    if (mode == 2) return __fadd_rn(__fadd_rn(gm, gn), __fmul_rn(-gn, a));
    return __fadd_rn(gm, __fmul_rn(gn, a));
}

__device__ __forceinline__ float fired(float h, float threshold) { return h >= threshold ? 1.0f : 0.0f; }

__global__ void lif_forward(const float* x, float* spikes, float* membrane, float* charged, int mode, float a,
                            const float* rate, float threshold, long long steps, long long neurons) {
    long long n = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= neurons) return;
    a = leak_parameter(mode, a, rate);
    float v = 0.0f;
    for (long long t = 0; t < steps; ++t) {
        long long i = t * neurons + n;
        float h = charge(mode, a, v, x[i]);
        float f = fired(h, threshold);
        v = __fmul_rn(h, __fsub_rn(1.0f, f));
        if (spikes) spikes[i] = f;
        if (membrane) membrane[i] = v;
        if (charged) charged[i] = h;
    }
}

// `terms` (PLIF only) gets each step's per-neuron term of the rate's gradient: g_h * v_{t-1}, negated
// for mode 2, as the CPU kernel writes them.
__global__ void lif_backward(const float* charged, const float* grad_spikes, const float* grad_membrane,
                             float* grad_input, float* terms, int mode, float a, const float* rate, float threshold,
                             float z_scale, float half_alpha, long long steps, long long neurons) {
    long long n = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= neurons) return;
    a = leak_parameter(mode, a, rate);
    float grad_next = 0.0f;
    for (long long t = steps - 1; t >= 0; --t) {
        long long i = t * neurons + n;
        float h = charged[i];
        float gm = grad_membrane ? grad_membrane[i] : 0.0f;
        float gv = (t + 1 == steps) ? gm : carry(mode, a, gm, grad_next);
        float gh = __fmul_rn(gv, __fsub_rn(1.0f, fired(h, threshold)));
        if (grad_spikes) {
            float z = __fmul_rn(__fsub_rn(h, threshold), z_scale);
            float slope = __fmul_rn(__fdiv_rn(1.0f, __fadd_rn(__fmul_rn(z, z), 1.0f)), half_alpha);
            gh = __fadd_rn(gh, __fmul_rn(grad_spikes[i], slope));
        }
        grad_input[i] = gh;
        if (terms) {
            float previous = 0.0f;
            if (t > 0) {
                float hp = charged[i - neurons];
                previous = __fmul_rn(hp, __fsub_rn(1.0f, fired(hp, threshold)));
            }
            terms[i] = mode == 2 ? __fmul_rn(-gh, previous) : __fmul_rn(gh, previous);
        }
        grad_next = gh;
    }
}

// The rate's gradient from the per-step sums of `terms`, added from the last step back to the
// first (as autograd accumulates a broadcast scalar's gradient), each negated when `negate` is set
// (mode 3 differentiates 1 - r). One thread.
__global__ void rate_fold(const float* per_step, float* out, int negate, long long steps) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    float sum = 0.0f;
    for (long long t = steps - 1; t >= 0; --t) {
        float term = negate ? -per_step[t] : per_step[t];
        sum = t == steps - 1 ? term : __fadd_rn(sum, term);
    }
    *out = sum;
}

}  // extern "C"
