//! Whole-network parity of the recurrent-delay networks (`ssc` and `shd` architectures) against
//! tests/oracle/delrec_network_cases.py, PyTorch written from the spec with the original's
//! ring buffer: outputs, loss, every gradient and BatchNorm's running statistics, bitwise with
//! the postsynaptic buffer; the presynaptic buffer (the default) within 1e-5 in relative norm plus
//! 1e-6 absolute (a bias before BatchNorm has a gradient that cancels to rounding noise, ~1e-7).

mod common;

use common::{agreement, cases, run_oracle, scratch};
use snn_delays::config::RecurrentBuffer;
use snn_delays::model::recurrent::network::{Architecture, RecurrentNetwork, Widths};
use std::collections::BTreeMap;
use tch::{Device, Tensor};

const WIDTHS: Widths = Widths { inputs: 10, hidden: 12, outputs: 5 };

#[test]
fn recurrent_networks_equal_the_spec_oracle() {
    let path = scratch("delrec-network").join("cases.safetensors");
    run_oracle("delrec_network_cases.py", &[path.to_str().unwrap()]);
    let all = cases(&path);
    assert_eq!(all.len(), 8);
    let mut largest = 0.0f64;
    for (index, case) in all.iter().enumerate() {
        let what = format!("case {index} (architecture {}, train {}, sigma {})", param(case, 0), param(case, 1), param(case, 2));
        for (field, ours) in run_case(case, RecurrentBuffer::Postsynaptic) {
            let a = agreement(&ours, &case[field.as_str()], 0.0);
            assert!(a.bitwise, "{what} {field}: not bitwise equal (max |diff| {:e})", a.max_abs_diff);
        }
        for (field, ours) in run_case(case, RecurrentBuffer::Presynaptic) {
            let reference = &case[field.as_str()];
            let (difference, size) = ((&ours - reference).norm().double_value(&[]), reference.norm().double_value(&[]));
            assert!(difference <= 1e-5 * size + 1e-6, "{what} presynaptic {field}: |diff| {difference:e}, |reference| {size:e}");
            if size > 1e-3 {
                largest = largest.max(difference / size);
            }
        }
    }
    println!("presynaptic buffer: largest relative difference {largest:e} (tensors of norm > 1e-3)");
}

fn param(case: &BTreeMap<String, Tensor>, i: i64) -> f64 {
    case["params"].double_value(&[i])
}

/// Our network on one case, its results under the oracle's field names.
fn run_case(case: &BTreeMap<String, Tensor>, buffer: RecurrentBuffer) -> BTreeMap<String, Tensor> {
    let architecture = if param(case, 0) == 1.0 { Architecture::Shd } else { Architecture::Ssc };
    let (train, sigma) = (param(case, 1) == 1.0, param(case, 2));
    let network = RecurrentNetwork::new(architecture, WIDTHS, buffer, 0, Device::Cpu);
    let variables = network.vs.variables();
    let given: Vec<&String> = case.keys().filter(|k| k.starts_with("param.")).collect();
    assert_eq!(given.len(), variables.len(), "the oracle's parameters are the network's");
    tch::no_grad(|| {
        for (name, variable) in &variables {
            variable.shallow_clone().copy_(&case[&format!("param.{name}")]);
        }
    });
    let masks: Vec<Tensor> = (0..).map_while(|i| case.get(&format!("mask.{i}")).map(Tensor::shallow_clone)).collect();
    let kernels = network.kernels(sigma, !train);
    let out = network.forward(&case["x"], &kernels, train, train.then_some(&masks[..])).unwrap();
    let loss = network.loss(&out, &case["labels"]);
    let mut fields = BTreeMap::from([("out".to_string(), out.detach()), ("loss".to_string(), loss.detach().reshape([1]))]);
    if train {
        loss.backward();
        for (name, variable) in &variables {
            let field = if variable.requires_grad() { format!("grad.{name}") } else { format!("after.{name}") };
            if case.contains_key(&field) {
                fields.insert(field, if variable.requires_grad() { variable.grad() } else { variable.copy() });
            }
        }
        let expected = case.keys().filter(|k| k.starts_with("grad.") || k.starts_with("after.")).count();
        assert_eq!(fields.len(), expected + 2, "every gradient and running statistic is compared");
    }
    fields
}
