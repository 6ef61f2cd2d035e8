// One time step of the fused recurrent-delay layer (docs/method.md "Recurrent delays"), forward
// and backward, one thread per (sample, neuron) `i = b·N + j`; the N×N products between steps stay
// libtorch's. Each thread owns its neuron's ring row `ring[i, 0..L)`: presynaptic neuron j's
// spikes (forward) and the gradients of its arrived values (backward) only ever go there.
// NVRTC compiles this file at run time for CUDA; the tests compile it for the host through
// csrc/cuda_on_host.h. Every operation is a round-to-nearest intrinsic, in the order of the
// libtorch ops of src/model/recurrent/fused.rs, so each thread computes their float32 values.

extern "C" {

// The charge: `(v - v/a) + x` (a hard-reset neuron in evaluation, a = τ) or `v*a + x`
// (a = 1 - 1/τ).
__device__ __forceinline__ float step_charge(int divide, float a, float v, float x) {
    if (divide) return __fadd_rn(__fsub_rn(v, __fdiv_rn(v, a)), x);
    return __fadd_rn(__fmul_rn(v, a), x);
}

// Step t, after libtorch's `recurrent = z(t)·Wᵀ`: the current `x + μ⊙recurrent`, the charge,
// the spike `[h - θ ≥ 0]` and the reset (hard `(1 - s)·h + s·0`, soft `h - s·θ`); the spike
// sent to the next `L - 1` slots through the taps `K[j, 1..L)`; then slot t+1 taken out of the
// ring into `arrived` (z(t+1)) and emptied. `mask` may be null.
__global__ void recurrent_forward_step(const float* x, const float* recurrent, const float* mask, float* v, float* ring,
                                       const float* taps, float* spikes, float* charged, float* arrived, int divide,
                                       float a, float threshold, int hard, long long slot, long long slots,
                                       long long count, long long neurons) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    long long j = i % neurons;
    float r = mask ? __fmul_rn(recurrent[i], mask[i]) : recurrent[i];
    float h = step_charge(divide, a, v[i], __fadd_rn(x[i], r));
    float s = __fsub_rn(h, threshold) >= 0.0f ? 1.0f : 0.0f;
    v[i] = hard ? __fadd_rn(__fmul_rn(__fadd_rn(-s, 1.0f), h), __fmul_rn(s, 0.0f)) : __fsub_rn(h, __fmul_rn(s, threshold));
    spikes[i] = s;
    charged[i] = h;
    float* row = ring + i * slots;
    for (long long k = 1; k < slots; ++k) {
        long long at = (slot + k) % slots;
        row[at] = __fadd_rn(row[at], __fmul_rn(s, taps[j * slots + k]));
    }
    long long next = (slot + 1) % slots;
    arrived[i] = row[next];
    row[next] = 0.0f;
}

// Step t of the backward. First the gradient of z(t+1), `scatter` (null at the last step), is
// spread through the flipped taps over the slots that follow `scatter_slot` = (t+1) mod L:
// value m (tap L-1-m) to slot scatter_slot+1+m. Then slot t is taken and emptied:
// `g_s = ∂L/∂s(t) + taken`, less `θ·g_v` (soft) or `h·g_v` (hard) unless the reset is detached;
// `g_h = g_v·∂v/∂h + g_s·slope(t)` (∂v/∂h 1 soft, 1 - s hard); `grad_masked = μ⊙g_h` for
// libtorch's `g_z = grad_masked·W`; and `g_v ← g_h·decay`.
__global__ void recurrent_backward_step(const float* scatter, long long scatter_slot, float* ring, const float* taps,
                                        const float* grad_spikes, const float* charged, const float* spikes,
                                        const float* slopes, const float* mask, float* grad_v, float* grad_input,
                                        float* grad_masked, int hard, int detach, float threshold, float decay,
                                        long long slot, long long slots, long long count, long long neurons) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    long long j = i % neurons;
    float* row = ring + i * slots;
    if (scatter) {
        for (long long m = 0; m + 1 < slots; ++m) {
            long long at = (scatter_slot + 1 + m) % slots;
            row[at] = __fadd_rn(row[at], __fmul_rn(scatter[i], taps[j * slots + slots - 1 - m]));
        }
    }
    float taken = row[slot];
    row[slot] = 0.0f;
    float gv = grad_v[i], h = charged[i], s = spikes[i];
    float gs = __fadd_rn(grad_spikes[i], taken);
    if (!detach) gs = __fsub_rn(gs, hard ? __fmul_rn(gv, h) : __fmul_rn(gv, threshold));
    float through = hard ? __fmul_rn(gv, __fadd_rn(-s, 1.0f)) : gv;
    float gh = __fadd_rn(through, __fmul_rn(gs, slopes[i]));
    grad_input[i] = gh;
    grad_masked[i] = mask ? __fmul_rn(gh, mask[i]) : gh;
    grad_v[i] = __fmul_rn(gh, decay);
}

}  // extern "C"
