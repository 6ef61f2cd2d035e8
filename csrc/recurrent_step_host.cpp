// The recurrent layer's CUDA step kernels (recurrent_step.cu) compiled for the host, with one
// launcher per kernel taking the grid and the kernel's arguments as the C struct the Rust tests
// lay out (`#[repr(C)]` ForwardArgs and BackwardArgs in src/model/recurrent/cuda_step.rs).
#include <cstdint>

#include "cuda_on_host.h"
#include "recurrent_step.cu"

struct SnnForwardStepArgs {
    uint64_t x, recurrent, mask, membrane, ring, taps, spikes, charged, arrived;
    int32_t divide;
    float a, threshold;
    int32_t hard;
    int64_t slot, slots, count, neurons;
};

struct SnnBackwardStepArgs {
    uint64_t scatter;
    int64_t scatter_slot;
    uint64_t ring, taps, grad_spikes, charged, spikes, slopes, mask, grad_v, grad_input, grad_masked;
    int32_t hard, detach;
    float threshold, decay;
    int64_t slot, slots, count, neurons;
};

static float* as_floats(uint64_t address) { return reinterpret_cast<float*>(address); }

extern "C" {

void snn_host_recurrent_forward_step(unsigned blocks, unsigned block, const SnnForwardStepArgs* a) {
    snn_grid(blocks, block, [&] {
        recurrent_forward_step(as_floats(a->x), as_floats(a->recurrent), as_floats(a->mask), as_floats(a->membrane),
                               as_floats(a->ring), as_floats(a->taps), as_floats(a->spikes), as_floats(a->charged),
                               as_floats(a->arrived), a->divide, a->a, a->threshold, a->hard, a->slot, a->slots,
                               a->count, a->neurons);
    });
}

void snn_host_recurrent_backward_step(unsigned blocks, unsigned block, const SnnBackwardStepArgs* a) {
    snn_grid(blocks, block, [&] {
        recurrent_backward_step(as_floats(a->scatter), a->scatter_slot, as_floats(a->ring), as_floats(a->taps),
                                as_floats(a->grad_spikes), as_floats(a->charged), as_floats(a->spikes),
                                as_floats(a->slopes), as_floats(a->mask), as_floats(a->grad_v),
                                as_floats(a->grad_input), as_floats(a->grad_masked), a->hard, a->detach, a->threshold,
                                a->decay, a->slot, a->slots, a->count, a->neurons);
    });
}

}  // extern "C"
