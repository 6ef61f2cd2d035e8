//! Parity of the building blocks against the real packages, run at test time:
//! DCLS kernel construction and convolution against dcls 0.1.1's `Dcls1d` (bitwise), and the
//! multi-step LIF/PLIF against spikingjelly 2.0.0 (bitwise).

mod common;

use common::{agreement, cases, run_oracle, scratch};
use snn_delays::config::{ChargeFormula, KernelVersion};
use snn_delays::model::dcls::construct_kernel;
use snn_delays::model::neuron::{ATan, Leak, MultiStepLif};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// Asserts bitwise equality, printing the largest difference when it fails.
fn assert_bitwise(what: &str, ours: &Tensor, reference: &Tensor) {
    let a = agreement(ours, reference, 0.0);
    assert!(a.bitwise, "{what}: not bitwise equal to the reference (max |diff| {:e})", a.max_abs_diff);
}

fn param(case: &BTreeMap<String, Tensor>, i: i64) -> f64 {
    case["params"].double_value(&[i])
}

#[test]
fn dcls_kernel_output_and_gradients_equal_the_dcls_package() {
    let path = scratch("dcls").join("cases.safetensors");
    run_oracle("dcls_cases.py", &[path.to_str().unwrap()]);
    let all = cases(&path);
    assert_eq!(all.len(), 54);
    for (index, case) in all.iter().enumerate() {
        let version = [KernelVersion::Gauss, KernelVersion::Max, KernelVersion::V1][param(case, 0) as usize];
        let size = param(case, 1) as i64;
        let what = format!("case {index} ({version:?}, K={size}, kc={}, sigma={})", param(case, 2), param(case, 3));
        let weight = case["weight"].copy().set_requires_grad(true);
        let positions = case["positions"].copy().set_requires_grad(true);
        let kernel = construct_kernel(&weight, &positions, &case["sigma"], size, version);
        assert_bitwise(&format!("{what} kernel"), &kernel, &case["kernel"]);
        let out = case["x"].conv1d(&kernel, None::<Tensor>, [1], [0], [1], 1);
        assert_bitwise(&format!("{what} output"), &out, &case["out"]);
        (out * &case["upstream"]).sum(Kind::Float).backward();
        assert_bitwise(&format!("{what} weight gradient"), &weight.grad(), &case["grad_weight"]);
        assert_bitwise(&format!("{what} position gradient"), &positions.grad(), &case["grad_positions"]);
    }
}

#[test]
fn lif_and_plif_equal_spikingjelly() {
    let path = scratch("lif").join("cases.safetensors");
    run_oracle("lif_cases.py", &[path.to_str().unwrap()]);
    let all = cases(&path);
    assert_eq!(all.len(), 24);
    for (index, case) in all.iter().enumerate() {
        let (plif, train, threshold, tau) = (param(case, 0) == 1.0, param(case, 1) == 1.0, param(case, 2), param(case, 3));
        let what = format!("case {index} (plif={plif}, train={train}, threshold={threshold}, tau={tau})");
        let w = Tensor::from(-(tau - 1.0).ln() as f32).set_requires_grad(true);
        let leak = if plif { Leak::Learned { w: w.shallow_clone() } } else { Leak::Fixed { tau } };
        let layer = MultiStepLif {
            leak,
            v_threshold: threshold,
            surrogate: ATan { alpha: 5.0 },
            charge_formula: ChargeFormula::Spikingjelly2,
        };
        let x = case["x"].copy().set_requires_grad(true);
        let out = layer.forward(&x, train);
        assert_bitwise(&format!("{what} spikes"), &out.spikes, &case["spikes"]);
        assert_bitwise(&format!("{what} v_seq"), &out.membrane, &case["v_seq"]);
        let objective = (&out.spikes * &case["g_spikes"]).sum(Kind::Float) + (&out.membrane * &case["g_v"]).sum(Kind::Float);
        objective.backward();
        assert_bitwise(&format!("{what} input gradient"), &x.grad(), &case["grad_x"]);
        if plif {
            assert_bitwise(&format!("{what} w gradient"), &w.grad().reshape([1]), &case["grad_w"]);
        }
    }
}
