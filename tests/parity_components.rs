//! Parity of the building blocks against the real packages, run at test time:
//! DCLS kernel construction and convolution against dcls 0.1.1's `Dcls1d` (bitwise), and the
//! multi-step LIF/PLIF against spikingjelly 2.0.0 (bitwise), with the op-by-op and the fused
//! neuron backends, and the recurrent-delay layer against a ring-buffer oracle built from the spec.

mod common;

use common::{agreement, cases, run_oracle, scratch};
use snn_delays::config::{ChargeFormula, KernelVersion, NeuronBackend, RecurrentBuffer};
use snn_delays::model::dcls::{construct_kernel, flush_subnormals};
use snn_delays::model::neuron::step::{Reset, StepLif, Surrogate, Triangle};
use snn_delays::model::neuron::{ATan, Leak, MultiStepLif, Readout};
use snn_delays::model::recurrent::RecurrentDelays;
use snn_delays::model::time_conv::{correlate, Convolution};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// The case's `(B, C_in, T)` input through our layer's time convolution (the direct form,
/// unpadded, as the case's `conv1d`), back in the case's layout.
fn our_convolution(x: &Tensor, kernel: &Tensor) -> Tensor {
    correlate(&x.permute([2, 0, 1]), kernel, [0, 0], Convolution::Direct).permute([1, 2, 0])
}

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
        let out = our_convolution(&case["x"], &kernel);
        assert_bitwise(&format!("{what} output"), &out, &case["out"]);
        (out * &case["upstream"]).sum(Kind::Float).backward();
        assert_bitwise(&format!("{what} weight gradient"), &weight.grad(), &case["grad_weight"]);
        assert_bitwise(&format!("{what} position gradient"), &positions.grad(), &case["grad_positions"]);
    }
}

/// With `flush_subnormal_taps`: the kernel differs from dcls's only where dcls's value is
/// subnormal (and ours is 0); the convolution output and both gradients agree within
/// 1e-6·max(1, |reference|). Some cases must have subnormal taps, or this tests nothing.
#[test]
fn flushed_kernels_agree_with_the_dcls_package() {
    let path = scratch("dcls-flush").join("cases.safetensors");
    run_oracle("dcls_cases.py", &[path.to_str().unwrap()]);
    let tiny = f32::MIN_POSITIVE as f64;
    let mut flushed_cases = 0;
    for (index, case) in cases(&path).iter().enumerate() {
        let version = [KernelVersion::Gauss, KernelVersion::Max, KernelVersion::V1][param(case, 0) as usize];
        let size = param(case, 1) as i64;
        let weight = case["weight"].copy().set_requires_grad(true);
        let positions = case["positions"].copy().set_requires_grad(true);
        let kernel = flush_subnormals(&construct_kernel(&weight, &positions, &case["sigma"], size, version));
        let reference = &case["kernel"];
        let subnormal = reference.abs().lt(tiny).logical_and(&reference.ne(0.0));
        flushed_cases += i32::from(subnormal.any().int64_value(&[]) == 1);
        let expected = reference.where_scalarother(&subnormal.logical_not(), 0.0);
        assert_bitwise(&format!("case {index} flushed kernel"), &kernel, &expected);
        let out = our_convolution(&case["x"], &kernel);
        (&out * &case["upstream"]).sum(Kind::Float).backward();
        for (what, ours, theirs) in [
            ("output", &out, &case["out"]),
            ("weight gradient", &weight.grad(), &case["grad_weight"]),
            ("position gradient", &positions.grad(), &case["grad_positions"]),
        ] {
            let a = agreement(ours, theirs, 1e-6);
            assert!(a.within, "case {index} {what}: max |diff| {:e}", a.max_abs_diff);
        }
    }
    assert!(flushed_cases > 0, "no case had subnormal taps");
    println!("{flushed_cases} of the cases had subnormal taps, flushed within tolerance");
}

#[test]
fn lif_and_plif_equal_spikingjelly_with_both_backends() {
    let path = scratch("lif").join("cases.safetensors");
    run_oracle("lif_cases.py", &[path.to_str().unwrap()]);
    let all = cases(&path);
    assert_eq!(all.len(), 24);
    for (index, case) in all.iter().enumerate() {
        for backend in [NeuronBackend::Ops, NeuronBackend::Fused] {
            check_neuron_case(index, case, backend);
        }
    }
}

fn check_neuron_case(index: usize, case: &BTreeMap<String, Tensor>, backend: NeuronBackend) {
    let (plif, train, threshold, tau) = (param(case, 0) == 1.0, param(case, 1) == 1.0, param(case, 2), param(case, 3));
    let what = format!("case {index} ({backend:?}, plif={plif}, train={train}, threshold={threshold}, tau={tau})");
    let w = Tensor::from(-(tau - 1.0).ln() as f32).set_requires_grad(true);
    let leak = if plif { Leak::Learned { w: w.shallow_clone() } } else { Leak::Fixed { tau } };
    let layer = MultiStepLif {
        leak,
        v_threshold: threshold,
        surrogate: ATan { alpha: 5.0 },
        charge_formula: ChargeFormula::Spikingjelly2,
        backend,
    };
    let x = case["x"].copy().set_requires_grad(true);
    let out = layer.forward(&x, train, Readout::BOTH).unwrap();
    let (spikes, membrane) = (out.spikes.unwrap(), out.membrane.unwrap());
    assert_bitwise(&format!("{what} spikes"), &spikes, &case["spikes"]);
    assert_bitwise(&format!("{what} v_seq"), &membrane, &case["v_seq"]);
    let objective = (&spikes * &case["g_spikes"]).sum(Kind::Float) + (&membrane * &case["g_v"]).sum(Kind::Float);
    objective.backward();
    if let Some(segment) = &out.segment {
        segment.backward().unwrap();
    }
    assert_bitwise(&format!("{what} input gradient"), &x.grad(), &case["grad_x"]);
    if plif {
        assert_bitwise(&format!("{what} w gradient"), &w.grad().reshape([1]), &case["grad_w"]);
    }
}

/// The recurrent-delay layer against `delrec_cases.py`, a PyTorch ring buffer of postsynaptic
/// currents written from the spec: the postsynaptic buffer bitwise (kernel, spikes, membrane and
/// the gradients of W, d, p and x), the presynaptic buffer (the default) with the same spikes and
/// the rest within 1e-5 in relative norm.
#[test]
fn recurrent_delays_equal_the_ring_buffer_oracle() {
    let path = scratch("delrec").join("cases.safetensors");
    run_oracle("delrec_cases.py", &[path.to_str().unwrap()]);
    let all = cases(&path);
    assert_eq!(all.len(), 12);
    let mut largest = 0.0f64;
    for (index, case) in all.iter().enumerate() {
        let exact = run_recurrent_case(case, RecurrentBuffer::Postsynaptic);
        let what = format!("case {index} (preset {}, sigma {}, train {})", param(case, 0), param(case, 1), param(case, 2));
        for (field, tensor) in &exact {
            assert_bitwise(&format!("{what} {field}"), tensor, &case[field.as_str()]);
        }
        let fast = run_recurrent_case(case, RecurrentBuffer::Presynaptic);
        assert_bitwise(&format!("{what} presynaptic spikes"), &fast["spikes"], &case["spikes"]);
        for (field, tensor) in &fast {
            let reference = &case[field.as_str()];
            let relative = (tensor - reference).norm().double_value(&[]) / reference.norm().double_value(&[]).max(1e-30);
            assert!(relative <= 1e-5, "{what} presynaptic {field}: relative difference {relative:e}");
            largest = largest.max(relative);
        }
    }
    println!("presynaptic buffer: largest relative difference {largest:e}");
}

/// Our layer on one case: the kernel, outputs and gradients under the oracle's field names.
fn run_recurrent_case(case: &BTreeMap<String, Tensor>, buffer: RecurrentBuffer) -> BTreeMap<String, Tensor> {
    let (shd, sigma, train) = (param(case, 0) == 1.0, param(case, 1), param(case, 2) == 1.0);
    let neuron = if shd {
        StepLif {
            tau: 1.05,
            threshold: 1.0,
            reset: Reset::Hard,
            detach_reset: true,
            surrogate: Surrogate::ATan(ATan { alpha: 5.0 }),
        }
    } else {
        StepLif {
            tau: 2.0,
            threshold: 1.0,
            reset: Reset::Soft,
            detach_reset: false,
            surrogate: Surrogate::Triangle(Triangle { gamma: 1.0 }),
        }
    };
    let layer = RecurrentDelays {
        weight: case["w"].copy().set_requires_grad(true),
        delays: case["d"].copy().set_requires_grad(true),
        spread: case.get("p").map(|p| p.copy().set_requires_grad(true)),
        neuron,
        buffer,
    };
    let x = case["x"].copy().set_requires_grad(true);
    let kernel = layer.kernel(&layer.delays, sigma);
    let out = layer.forward(&x, &kernel, train, train.then_some(&case["mask"]));
    let objective = (&out.spikes * &case["g_spikes"]).sum(Kind::Float) + (&out.membrane * &case["g_v"]).sum(Kind::Float);
    objective.backward();
    let mut fields = BTreeMap::from([
        ("kernel".to_string(), kernel.detach()),
        ("spikes".to_string(), out.spikes.detach()),
        ("v_seq".to_string(), out.membrane.detach()),
        ("grad_x".to_string(), x.grad()),
        ("grad_w".to_string(), layer.weight.grad()),
        ("grad_d".to_string(), layer.delays.grad()),
    ]);
    if let Some(spread) = &layer.spread {
        fields.insert("grad_p".to_string(), spread.grad());
    }
    fields
}
