//! Whole-network parity against the reference assembled from dcls 0.1.1 and spikingjelly 2.0.0,
//! through the user-facing `snn-delays forward` and `snn-delays init` (tests/oracle/parity_network.py).

mod common;

use common::{run_oracle, BIN};

/// The SHD preset and its 3-layer variant: init, train output/loss/gradients and eval
/// output/loss must be bitwise equal on CPU, as semantics.md §2.1 reports for the reference.
#[test]
fn shd_preset_and_three_layer_variant_are_bitwise_equal() {
    let log = run_oracle("parity_network.py", &["--bin", BIN, "--random", "0", "--seed", "0", "--bitwise"]);
    println!("{log}");
}

/// Configurations and weights drawn from a fresh seed each run (printed, to reproduce):
/// max |ours − reference| ≤ 1e-5·max(1, |reference|) on outputs, loss and gradients.
#[test]
fn random_unseen_configurations_agree() {
    let log = run_oracle("parity_network.py", &["--bin", BIN, "--random", "6"]);
    println!("{log}");
}
