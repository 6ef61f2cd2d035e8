// The fused neuron's CUDA kernels (fused_lif.cu) compiled for the host, with one launcher per
// kernel taking the grid and the kernel's own arguments. Built by build.rs; the Rust tests run
// them against the CPU kernel, and tests/kernel_asan.rs runs them under AddressSanitizer.
#include "cuda_on_host.h"
#include "fused_lif.cu"

extern "C" {

void snn_host_lif_forward(unsigned blocks, unsigned block, const float* x, float* spikes, float* membrane,
                          float* charged, int mode, float a, const float* rate, float threshold, long long steps,
                          long long neurons) {
    snn_grid(blocks, block, [&] { lif_forward(x, spikes, membrane, charged, mode, a, rate, threshold, steps, neurons); });
}

void snn_host_lif_backward(unsigned blocks, unsigned block, const float* charged, const float* grad_spikes,
                           const float* grad_membrane, float* grad_input, float* terms, int mode, float a,
                           const float* rate, float threshold, float z_scale, float half_alpha, long long steps,
                           long long neurons) {
    snn_grid(blocks, block, [&] {
        lif_backward(charged, grad_spikes, grad_membrane, grad_input, terms, mode, a, rate, threshold, z_scale,
                     half_alpha, steps, neurons);
    });
}

void snn_host_rate_fold(unsigned blocks, unsigned block, const float* per_step, float* out, int negate, long long steps) {
    snn_grid(blocks, block, [&] { rate_fold(per_step, out, negate, steps); });
}

}  // extern "C"
