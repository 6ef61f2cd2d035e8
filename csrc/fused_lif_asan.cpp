// Runs the fused neuron's kernels, compiled for the host (fused_lif_host.cpp), over every charge
// mode, the rate read from memory or passed as a constant, every combination of outputs written
// and gradients given, several sequence lengths and grids whose last block is ragged, on buffers of
// exactly the size the kernels may touch: built with -fsanitize=address by tests/kernel_asan.rs, any
// read or write outside them, or through a null output pointer, stops the run with a report.
// -DPLANT_OVERFLOW tells the kernels there is one more neuron than the buffers hold, so that the test
// can show the sanitizer catches it.
#include "fused_lif_host.cpp"

#include <cstdio>
#include <memory>
#include <vector>

namespace {

unsigned state = 12345;

float next_value() {
    state = state * 1664525u + 1013904223u;
    return static_cast<float>((state >> 8) % 2000) / 1000.0f - 0.6f;
}

// A heap buffer of exactly `n` floats, filled with values around the threshold; null when unwanted.
std::unique_ptr<float[]> buffer(bool wanted, long long n) {
    if (!wanted) {
        return nullptr;
    }
    std::unique_ptr<float[]> data(new float[n]);
    for (long long i = 0; i < n; ++i) {
        data[i] = next_value();
    }
    return data;
}

void run_case(int mode, bool rate_in_memory, unsigned outputs, unsigned gradients, long long steps, long long neurons) {
    const unsigned block = 256;
    unsigned blocks = static_cast<unsigned>((neurons + block - 1) / block);
    long long told = neurons;
#ifdef PLANT_OVERFLOW
    told = neurons + 1;
    blocks = static_cast<unsigned>((told + block - 1) / block);
#endif
    long long n = steps * neurons;
    auto x = buffer(true, n);
    auto spikes = buffer(outputs & 1, n), membrane = buffer(outputs & 2, n), charged = buffer(true, n);
    std::unique_ptr<float[]> rate(rate_in_memory ? new float[1]{0.4f} : nullptr);
    float a = mode == 0 ? 1.5f : 0.6f;
    snn_host_lif_forward(blocks, block, x.get(), spikes.get(), membrane.get(), charged.get(), mode, a, rate.get(), 1.0f,
                         steps, told);
    auto grad_spikes = buffer(gradients & 1, n), grad_membrane = buffer(gradients & 2, n);
    auto grad_input = buffer(true, n);
    bool learns = mode >= 2;
    auto terms = buffer(learns, n);
    snn_host_lif_backward(blocks, block, charged.get(), grad_spikes.get(), grad_membrane.get(), grad_input.get(),
                          terms.get(), mode, a, rate.get(), 1.0f, 7.853982f, 2.5f, steps, told);
    if (learns) {
        auto per_step = buffer(true, steps);
        std::unique_ptr<float[]> out(new float[1]);
        snn_host_rate_fold(1, 1, per_step.get(), out.get(), mode == 3, steps);
    }
}

}  // namespace

int main() {
    int cases = 0;
    for (int mode = 0; mode < 4; ++mode) {
        for (bool rate_in_memory : {false, true}) {
            if (rate_in_memory && mode < 2) {
                continue;
            }
            for (unsigned outputs = 0; outputs < 4; ++outputs) {
                for (unsigned gradients = 1; gradients < 4; ++gradients) {
                    for (long long steps : {1LL, 9LL}) {
                        for (long long neurons : {1LL, 255LL, 257LL, 600LL}) {
                            run_case(mode, rate_in_memory, outputs, gradients, steps, neurons);
                            ++cases;
                        }
                    }
                }
            }
        }
    }
    std::printf("%d cases ran\n", cases);
    return 0;
}
