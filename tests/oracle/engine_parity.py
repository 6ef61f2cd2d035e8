"""The integer-delay engine (`snn-delays infer`, batch and streaming) against the reference's own
evaluation, computed here from the same checkpoint: the reference network built from dcls 0.1.1
and spikingjelly 2.0.0, its eval transform (positions rounded, sigma 0, dcls's `max` kernel: one
tap per synapse at an integer delay; docs/method.md §4.7), run on the frames of
`snn-delays data export`, each sample on its own (its own length, as `infer` computes).

Each case is a reference `state_dict` (the seeded initialisation randomised away from it:
positions off the grid, BatchNorm statistics, PLIF rates), exported with
`snn-delays export --format delays` and run by `snn-delays infer`:

- batch mode: every sample's prediction equals the reference's, and its class scores are within
  SCORE_TOLERANCE of the sample's largest |reference score|;
- streaming (`--stream --limit`): the decision printed as each frame arrives equals the
  reference's decision from the outputs of the steps so far (the output of step t depends on
  frames up to t), at every frame where the reference's best class leads the next by more than
  SCORE_TOLERANCE of the largest score; and the final decision equals it.

Each state dict is also exported as NIR (and netx, for one tap) and checked by export_check.py.

Cases: LIF and PLIF, 1 and 2 taps, `sum` and `spike_count` losses, each with the exact and the
default convolution settings in the configuration (the engine computes the same either way).

Usage: engine_parity.py --bin target/release/snn-delays --data DIR [--seed S] [--stream-samples N]"""

import argparse
import json
import os
import re
import tempfile

import torch
from safetensors.torch import load_file, save_file

from export_check import check_netx, check_nir, expected_layers
from harness import finish, fresh_seed, print_reproduce, run
from reference import ReferenceSnn, class_scores, randomise, reference_config

SCORE_TOLERANCE = 1e-5
EXACT = ["convolution=direct", "flush_subnormal_taps=false"]
CASES = [("LIF, 1 tap, sum, exact", ["neuron=lif", "kernel_count=1", "loss=sum", *EXACT]),
         ("LIF, 1 tap, sum, default", ["neuron=lif", "kernel_count=1", "loss=sum"]),
         ("PLIF, 2 taps, sum, default", ["neuron=plif", "kernel_count=2", "loss=sum"]),
         ("PLIF, 2 taps, spike_count, exact", ["neuron=plif", "kernel_count=2", "loss=spike_count", *EXACT]),
         ("LIF, 2 taps, spike_count, default", ["neuron=lif", "kernel_count=2", "loss=spike_count"]),
         ("PLIF, 1 tap, sum, exact", ["neuron=plif", "kernel_count=1", "loss=sum", *EXACT])]
OUTPUT_GAIN = 6.0  # for spike_count, so that the output neurons (threshold 2) fire and scores differ
SHAPE = ["n_hidden_neurons=48", "batch_size=16", "max_delay_ms=150"]


def reference_outputs(net, cfg, frames):
    """The eval-form network's output for each sample, each run on its own (as `infer` runs
    them: a sample's prediction never depends on the others' lengths)."""
    net.to_eval_form()
    net.eval()
    return [single_output(net, frames[f"x.{i}"]) for i in range(int(frames["labels"].numel()))]


def single_output(net, frame):
    with torch.no_grad():
        net.reset_state()
        return net(frame.unsqueeze(1).float())[:, 0]


def stream_decisions(text):
    """{sample: [(steps, class), ...]} from `infer --stream` lines, and {sample: final class}."""
    changes, final = {}, {}
    for line in text.splitlines():
        if m := re.fullmatch(r"sample (\d+), (\d+) ms: class (\d+)", line):
            changes.setdefault(int(m[1]), []).append((int(m[2]), int(m[3])))
        elif m := re.fullmatch(r"sample (\d+): decided class (\d+) after (\d+) steps \(label \d+\)", line):
            final[int(m[1])] = int(m[2])
    return changes, final


def check_stream(name, cfg, net, frames, text, failures):
    """Per frame: ours (the last change printed at or before it) against the reference's decision
    from the output rows so far, where the reference's lead is clear. Returns frames checked."""
    changes, final = stream_decisions(text)
    step_ms, checked = cfg["time_step_ms"], 0
    for sample in sorted(final):
        out = single_output(net, frames[f"x.{sample}"])
        steps = frames[f"x.{sample}"].shape[0]
        events = {round(ms / step_ms): c for ms, c in changes.get(sample, [])}
        ours = None
        for n in range(1, steps + 1):
            ours = events.get(n, ours)
            scores = class_scores(out[:n].unsqueeze(1), cfg["loss"])[0]
            top = scores.topk(2).values
            if float(top[0] - top[1]) <= SCORE_TOLERANCE * float(scores.abs().max()):
                continue
            checked += 1
            if ours != int(scores.argmax()):
                failures.append(f"{name} | stream sample {sample}, frame {n}: ours class {ours}, "
                                f"reference {int(scores.argmax())} (scores {scores.tolist()})")
                break
        whole = int(class_scores(out.unsqueeze(1), cfg["loss"]).argmax(1)[0])
        if final[sample] != whole:
            failures.append(f"{name} | stream sample {sample}: decided {final[sample]}, reference {whole}")
    return checked


def check_exports(args, cfg, paths, workdir, failures):
    """The same state dict exported as NIR (and as netx, which holds one delay per synapse, for
    one tap) and read back by export_check.py's checks."""
    formats = ["nir", "netx"] if cfg["kernel_count"] == 1 else ["nir"]
    out = {f: os.path.join(workdir, f"model.{f}") for f in formats}
    for f in formats:
        run([args.bin, "export", "--config", paths["config.json"], "--checkpoint", paths["weights.safetensors"],
             "--format", f, "--out", out[f]])
    _, layers = expected_layers(paths["config.json"], paths["weights.safetensors"])
    check_nir(out["nir"], cfg, layers, failures)
    if "netx" in out:
        check_netx(out["netx"], layers, failures)


def check_case(args, name, sets, workdir, gen, failures, figures):
    set_args = [a for s in SHAPE + sets for a in ("--set", s)]
    cfg = reference_config(json.loads(run([args.bin, "config", "--preset", "shd", *set_args])))
    paths = {k: os.path.join(workdir, f"{k}") for k in ("config.json", "weights.safetensors", "frames.safetensors",
                                                          "model.safetensors")}
    with open(paths["config.json"], "w") as f:
        json.dump(cfg, f)
    net = ReferenceSnn(cfg)
    net.init_as_reference()
    randomise(net, cfg, gen)
    if cfg["loss"] == "spike_count":
        with torch.no_grad():
            net.model[-2].weight.mul_(OUTPUT_GAIN)
    save_file({k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}, paths["weights.safetensors"])
    run([args.bin, "export", "--config", paths["config.json"], "--checkpoint", paths["weights.safetensors"],
         "--format", "delays", "--out", paths["model.safetensors"]])
    check_exports(args, cfg, paths, workdir, failures)
    run([args.bin, "data", "export", "--dataset", "shd", "--config", paths["config.json"], "--data", args.data,
         "--split", "test", "--out", paths["frames.safetensors"]])
    frames = load_file(paths["frames.safetensors"])
    outputs = reference_outputs(net, cfg, frames)
    ours = json.loads(run([args.bin, "infer", "--model", paths["model.safetensors"], "--data", args.data,
                           "--json", "--scores"]))
    if len(ours["scores"]) != len(outputs):
        failures.append(f"{name}: ours {len(ours['scores'])} samples, reference {len(outputs)}")
        return 1
    worst = 0.0
    for sample, (out, scores, predicted) in enumerate(zip(outputs, ours["scores"], ours["predictions"])):
        reference = class_scores(out.unsqueeze(1), cfg["loss"])
        reference_scores, expected = reference[0].double(), int(torch.max(reference, 1)[1][0])
        scale = float(reference_scores.abs().max()) or 1.0
        diff = float((torch.tensor(scores, dtype=torch.float64) - reference_scores).abs().max()) / scale
        worst = max(worst, diff)
        if diff > SCORE_TOLERANCE:
            failures.append(f"{name} | sample {sample}: scores differ by {diff:.2e} of the largest")
        if predicted != expected:
            failures.append(f"{name} | sample {sample}: ours class {predicted}, reference {expected}")
    streamed = run([args.bin, "infer", "--model", paths["model.safetensors"], "--data", args.data, "--stream",
                    "--limit", str(args.stream_samples)])
    checked = check_stream(name, cfg, net, frames, streamed, failures)
    figures.append(f"{name}: {len(outputs)} samples, scores within {worst:.1e} of the largest, "
                   f"{checked} streamed decisions checked")
    return 2 * len(outputs) + checked


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--stream-samples", type=int, default=6)
    args = parser.parse_args()
    seed = fresh_seed("engine parity", args.seed)
    gen = torch.Generator().manual_seed(seed)
    failures, figures = [], []
    with tempfile.TemporaryDirectory() as workdir:
        checks = sum(check_case(args, name, sets, workdir, gen, failures, figures) for name, sets in CASES)
    print("\n".join(figures))
    if failures:
        print_reproduce(seed)
    finish("engine parity", checks, failures)


if __name__ == "__main__":
    main()
