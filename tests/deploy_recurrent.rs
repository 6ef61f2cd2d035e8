//! Deployment of recurrent-delay networks: the pure-Rust engine against the tch eval with
//! integer delays, sample by sample, for both DelRec architectures; `infer` (batch and stream)
//! against `eval --per-sample`; the `delays` file read back; the state dict under DelRec's keys
//! loaded strictly into DelRec's module layout and evaluated back; the NIR export (recurrent delays as
//! a `Delay` node on the recurrent edge) executed by the independent interpreter
//! (tests/oracle/nir_interpreter.py); netx refused.

mod common;

use common::{run_oracle, scratch, small_dataset, snn, snn_json, text, SSC_NETWORK_ON_SHD_DATA};
use snn_delays::config::ConfigSource;
use snn_delays::data::{DataSplits, Split};
use snn_delays::infer::{prediction, Engine, RecurrentModel};
use snn_delays::model::recurrent::eval_form::RecurrentEvalNetwork;
use snn_delays::model::recurrent::network::{RecurrentNetwork, RecurrentShape};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// The settings that run a preset on the generated SHD-layout data: 32 neurons per layer and a
/// higher learning rate, so that a short run fires in every layer.
fn preset_settings(preset: &str) -> Vec<&'static str> {
    let mut settings =
        vec!["--set", "n_hidden_neurons=32", "--set", "batch_size=16", "--set", "n_outputs=4", "--set", "lr_w=5e-3"];
    if preset == "delrec-ssc" {
        settings.extend(SSC_NETWORK_ON_SHD_DATA);
    }
    settings
}

/// A 4-epoch run of `preset` on `data`; its directory.
fn trained(dir: &Path, data: &Path, preset: &str) -> PathBuf {
    let run = dir.join(preset);
    let args = ["train", "--preset", preset, "--data", data.to_str().unwrap(), "--run-dir", run.to_str().unwrap(), "--quiet"];
    let output = snn(&[&args[..], &["--epochs", "4"], &preset_settings(preset)].concat());
    assert!(output.status.success(), "{preset}: {}", text(&output));
    run
}

fn network_of(run: &Path) -> (RecurrentNetwork, snn_delays::config::Config) {
    let config = ConfigSource { file: Some(&run.join("config.json")), ..Default::default() }.load().unwrap();
    let network = RecurrentNetwork::new(&RecurrentShape::of(&config).unwrap(), config.seed as i64, Device::Cpu);
    let checkpoint = run.join("last.safetensors");
    let tensors = snn_delays::checkpoint::read_tensors(&checkpoint).unwrap().into_iter().collect();
    snn_delays::checkpoint::load_model_part(&network.vs, &checkpoint, &tensors).unwrap();
    (network, config)
}

/// Per sample, on its own steps: the engine's readout within 1e-5 of the largest of the tch
/// eval's (integer delays, σ = 0), the same predictions; zeroing the recurrent weights changes
/// the readout of at least a quarter of the samples (the recurrence is exercised); the `delays` file reads back as written; `infer`
/// batch and `--stream` give the same scores bit for bit and `eval --per-sample`'s accuracy;
/// `export --format state-dict` loads strictly into DelRec's module layout
/// (tests/oracle/delrec_state_dict.py) and `eval` of it gives the checkpoint's loss and accuracy;
/// a state dict missing a key or with a wrong shape is refused with DelRec's key named.
#[test]
fn the_engine_runs_recurrent_delays_as_the_tch_eval_per_sample() {
    let dir = scratch("deploy-recurrent");
    let data = small_dataset(
        &dir,
        &["--classes", "4", "--train", "64", "--test", "24", "--seed", "5", "--min-length-ms", "250", "--noise-rate", "20000"],
    );
    for preset in ["delrec-shd", "delrec-ssc"] {
        let run = trained(&dir, &data, preset);
        let (network, config) = network_of(&run);
        let form = RecurrentEvalNetwork::of(&network, config.time_step_ms);
        assert!(form.blocks.iter().filter_map(|b| b.recurrence.as_ref()).all(|r| r.max_delay() >= 1), "{preset}: delays");
        let model = RecurrentModel::new(form.clone());
        let mut silent = form.clone();
        silent.blocks.iter_mut().filter_map(|b| b.recurrence.as_mut()).for_each(|r| r.weights.fill(0.0));
        let silent = RecurrentModel::new(silent);
        let subset = DataSplits::subset(&config, &data, Split::Test).unwrap();
        let kernels = network.kernels(0.0, true);
        let (mut worst, mut changed) = (0f64, 0);
        for frames in subset.source.frames(&subset.indices).unwrap() {
            let x = Tensor::from_slice(&frames.values).reshape([frames.steps as i64, 1, form.n_inputs() as i64]);
            let reference = tch::no_grad(|| network.forward(&x, &kernels, false, None)).unwrap().output.select(1, 0);
            let readout = model.run(&frames.values, frames.steps).unwrap();
            let ours = Tensor::from_slice(&readout).reshape([-1, form.n_outputs() as i64]);
            let scale = reference.abs().max().double_value(&[]).max(1e-12);
            worst = worst.max((&ours - &reference).abs().max().double_value(&[]) / scale);
            let theirs = network.class_scores(&reference.unsqueeze(1)).argmax(1, false).int64_value(&[0]);
            assert_eq!(prediction(&model.scores(&readout)) as i64, theirs, "{preset}: a prediction differs");
            changed += usize::from(silent.run(&frames.values, frames.steps).unwrap() != readout);
        }
        println!(
            "{preset}: {} samples, max |engine − tch| {worst:.2e} of the largest output; {changed} change without recurrence",
            subset.indices.len()
        );
        assert!(worst <= 1e-5, "{preset}: the engine differs from the tch eval by {worst:.2e}");
        assert!(changed * 4 >= subset.indices.len(), "{preset}: only {changed} samples use the recurrence");

        let (checkpoint, model_file) = (run.join("last.safetensors"), run.join("model.safetensors"));
        let (checkpoint, model_file, data) = (checkpoint.to_str().unwrap(), model_file.to_str().unwrap(), data.to_str().unwrap());
        let export = snn(&["export", "--checkpoint", checkpoint, "--format", "delays", "--out", model_file]);
        assert!(export.status.success(), "{}", text(&export));
        match snn_delays::export::delays::read_any(Path::new(model_file)).unwrap() {
            snn_delays::export::delays::Deployed::Recurrent(read) => assert_eq!(read, form, "{preset}: the file reads back"),
            snn_delays::export::delays::Deployed::Feedforward(_) => panic!("{preset}: read back as feed-forward"),
        }
        let batch = snn_json(&["infer", "--model", model_file, "--data", data, "--json", "--scores"]);
        let streamed = snn_json(&["infer", "--model", model_file, "--data", data, "--stream", "--json", "--scores"]);
        assert_eq!(batch["scores"], streamed["scores"], "{preset}: batch and stream scores differ");
        let eval = snn_json(&["eval", "--checkpoint", checkpoint, "--data", data, "--json", "--per-sample"]);
        assert_eq!(batch["accuracy"], eval["accuracy"], "{preset}: infer differs from eval --per-sample");
        println!("{preset}: infer {} = eval --per-sample {}", batch["accuracy"], eval["accuracy"]);

        let state_dict = run.join("delrec.safetensors");
        let state_dict = state_dict.to_str().unwrap();
        let export = snn(&["export", "--checkpoint", checkpoint, "--format", "state-dict", "--out", state_dict]);
        assert!(export.status.success(), "{}", text(&export));
        let architecture = &preset["delrec-".len()..];
        let args = ["--file", state_dict, "--architecture", architecture, "--inputs", "140", "--hidden", "32", "--outputs", "4"];
        println!("{}", run_oracle("delrec_state_dict.py", &args));
        let imported = snn_json(&["eval", "--checkpoint", state_dict, "--data", data, "--json", "--per-sample"]);
        assert_eq!(imported["accuracy"], eval["accuracy"], "{preset}: the DelRec state dict evaluates as the checkpoint");
        assert_eq!(imported["loss"], eval["loss"]);
        let mut tensors = snn_delays::checkpoint::read_tensors(Path::new(state_dict)).unwrap();
        let dropped = tensors.remove(2).0;
        tensors[0].1 = tensors[0].1.narrow(0, 0, 3);
        let broken = run.join("broken.safetensors");
        snn_delays::checkpoint::write_tensors(&broken, &tensors).unwrap();
        let refused = snn(&["eval", "--checkpoint", broken.to_str().unwrap(), "--data", data]);
        let message = text(&refused);
        assert!(!refused.status.success() && message.contains(&format!("missing key `{dropped}`")), "{message}");
        assert!(message.contains(&format!("key `{}` has shape [3", tensors[0].0)), "{message}");
    }
}

/// The NIR export of both architectures, read by the `nir` package and executed by the
/// interpreter written from NIR's equations, matches `infer` (scores within 1e-4 of the largest,
/// the same clear predictions); the graph holds a `Delay` on each recurrent edge. netx refuses a
/// recurrent network by name and leaves no file.
#[test]
fn nir_carries_recurrent_delays_on_the_recurrent_edge() {
    let dir = scratch("deploy-recurrent-nir");
    let data = small_dataset(&dir, &["--classes", "4", "--train", "64", "--test", "24", "--seed", "7", "--noise-rate", "20000"]);
    for preset in ["delrec-shd", "delrec-ssc"] {
        let run = trained(&dir, &data, preset);
        let checkpoint = run.join("last.safetensors");
        let (nir_file, model, frames, ours) =
            (run.join("model.nir"), run.join("model.safetensors"), run.join("frames.safetensors"), run.join("ours.json"));
        for (format, out) in [("nir", &nir_file), ("delays", &model)] {
            let export = snn(&[
                "export",
                "--checkpoint",
                checkpoint.to_str().unwrap(),
                "--format",
                format,
                "--out",
                out.to_str().unwrap(),
            ]);
            assert!(export.status.success(), "{}", text(&export));
        }
        let data_s = data.to_str().unwrap();
        let inferred = snn(&["infer", "--model", model.to_str().unwrap(), "--data", data_s, "--json", "--scores"]);
        assert!(inferred.status.success(), "{}", text(&inferred));
        std::fs::write(&ours, &inferred.stdout).unwrap();
        let config = run.join("config.json");
        let args = ["data", "export", "--dataset", "shd", "--config", config.to_str().unwrap(), "--data", data_s];
        let export = snn(&[&args[..], &["--split", "test", "--out", frames.to_str().unwrap()]].concat());
        assert!(export.status.success(), "{}", text(&export));
        let args = ["--nir", nir_file.to_str().unwrap(), "--frames", frames.to_str().unwrap(), "--ours", ours.to_str().unwrap()];
        let report = run_oracle("nir_interpreter.py", &args);
        println!("{preset}: {report}");
        let expected = if preset == "delrec-shd" { "1 cycle edges, 1 Delay nodes" } else { "6 cycle edges, 3 Delay nodes" };
        assert!(
            report.contains(expected),
            "{preset}: expected {expected} (a Delay on each recurrent edge, a reset loop per soft-reset block)"
        );

        let netx = run.join("model.netx");
        let refused =
            snn(&["export", "--checkpoint", checkpoint.to_str().unwrap(), "--format", "netx", "--out", netx.to_str().unwrap()]);
        assert!(!refused.status.success() && text(&refused).contains("netx has no recurrent layer"), "{}", text(&refused));
        assert!(!netx.exists(), "no partial file");
    }
}
