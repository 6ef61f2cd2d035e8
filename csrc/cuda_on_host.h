// CUDA's kernel vocabulary on the host, for compiling csrc/fused_lif.cu with an ordinary C++
// compiler in the tests: kernels become plain functions run once per (block, thread) of a grid by
// the launchers in fused_lif_host.cpp, and the round-to-nearest intrinsics become plain float32
// operations. Compile with -ffp-contract=off (no fused multiply-adds) and without fast-math, so
// that each operation rounds as the intrinsic does on the GPU and as the Rust CPU kernel does.
#pragma once

struct snn_dim3 {
    unsigned x, y, z;
};

// The running thread's coordinates, set by the grid loop before each call.
static thread_local snn_dim3 blockIdx, threadIdx, blockDim;

#define __global__
#define __device__
#define __forceinline__ inline

static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }

// Runs `thread()` once per thread of a one-dimensional grid of `blocks` blocks of `block` threads.
template <typename F>
void snn_grid(unsigned blocks, unsigned block, F&& thread) {
    blockDim = snn_dim3{block, 1, 1};
    for (unsigned b = 0; b < blocks; ++b) {
        for (unsigned t = 0; t < block; ++t) {
            blockIdx = snn_dim3{b, 0, 0};
            threadIdx = snn_dim3{t, 0, 0};
            thread();
        }
    }
}
