//! Whole-network parity against the reference assembled from dcls 0.1.1 and spikingjelly 2.0.0,
//! through the user-facing `snn-delays forward` and `snn-delays init` (tests/oracle/parity_network.py).

mod common;

use common::{run_oracle, run_oracle_failing, BIN};

/// The exact computation: direct convolution and the kernel's subnormal taps kept.
const EXACT: [&str; 4] = ["--set", "convolution=direct", "--set", "flush_subnormal_taps=false"];

/// The SHD preset, its 3-layer variant and the preset with the paper-era charge (LIF and PLIF):
/// init, train output/loss/gradients and eval output/loss must be bitwise equal on CPU, as
/// docs/method.md §2.1 reports for the reference, with the fused neuron kernel and with the
/// op-by-op one.
#[test]
fn fixed_configurations_are_bitwise_equal() {
    for backend in ["neuron_backend=fused", "neuron_backend=ops"] {
        let args = [&["--bin", BIN, "--random", "0", "--seed", "0", "--bitwise", "--set", backend][..], &EXACT].concat();
        println!("{}", run_oracle("parity_network.py", &args));
    }
}

/// Configurations and weights drawn from a fresh seed each run (printed, to reproduce), with
/// the direct convolution (the neuron backend, the subnormal flush and the kernel version drawn): |ours − reference| ≤
/// 1e-5·max|reference| + 1e-12 per tensor on outputs, loss and gradients. (The FFT convolution is held to the
/// direct one in `model::time_conv`; a float32 rounding there can move a spike across threshold.)
#[test]
fn random_unseen_configurations_agree() {
    let log = run_oracle("parity_network.py", &["--bin", BIN, "--random", "6", "--set", "convolution=direct"]);
    println!("{log}");
}

/// The default computation (FFT, flushed taps, fused neurons) against the reference network at
/// the full SHD, SSC and GSC presets and a PLIF, two-tap, spike-count variant, 100 steps × 8
/// samples, train (output, loss, every gradient) and eval, with the flip-aware criterion of
/// tests/oracle/default_path.py: currents within 1e-5, output and loss within 1e-5, gradients
/// within 3e-4 in relative norm and 3e-3 of their largest element wherever no spike flip can
/// have reached them, and every flipped spike next to the threshold. The figures seen are
/// printed.
#[test]
fn default_path_agrees_with_the_reference_at_full_presets() {
    println!("{}", run_oracle("default_path.py", &["--bin", BIN]));
}

/// The same criterion fails when the reference is given a wrong sign in the first layer's lags
/// or every kernel is moved by one step: it is not blind to the mistakes it is there to catch.
#[test]
fn default_path_comparison_catches_planted_mistakes() {
    for mistake in ["tap_sign", "shift"] {
        let log = run_oracle_failing("default_path.py", &["--bin", BIN, "--preset", "shd", "--plant", mistake]);
        assert!(log.contains("FAIL shd preset | train | layer 0 current"), "{mistake}:\n{log}");
        println!("{mistake}: {}", log.lines().last().unwrap_or_default());
    }
}

/// Random configurations that draw the convolution, the subnormal flush, the neuron backend and
/// the DCLS kernel version (gauss, v1, max) as well, under the same flip-aware criterion.
#[test]
fn random_configurations_of_every_computation_agree() {
    println!("{}", run_oracle("default_path.py", &["--bin", BIN, "--random", "6"]));
}
