"""Evaluation parity: `snn-delays eval` of a state dict saved by the reference network, against
the reference's own evaluation of it (docs/method.md §4.7) on an SHD-layout folder.

The weights are the reference's seeded initialisation randomised away from it (positions off
the grid, sigma, BatchNorm statistics), so a loader that ignored the file's values would fail.
The reference evaluation applies the eval transform (integer delays), runs the batches in file
order, zero-padded at the end to each batch's longest sample (§5.4), and takes the unweighted
mean of the per-batch losses and accuracies (§3): ours reports these as `loss_batch_mean` and
`accuracy_batch_mean`. Our main `loss` and `accuracy` weigh each batch by its samples; they are
checked against the same per-batch reference values weighted so. The frames are those of
`snn-delays data export`, which frames_parity.py holds to spikingjelly.

Criterion: the same accuracies, and the losses within 1e-6 of the reference's (relative). With
the exact settings (`--set convolution=direct --set flush_subnormal_taps=false`) every output is
bitwise equal (parity_network.py), so only the float64 means over batches may round differently.

Usage: eval_parity.py --bin target/release/snn-delays --data DIR [--seed S] [--set K=V ...]"""

import argparse
import json
import os
import tempfile

import torch
from safetensors.torch import load_file, save_file

from harness import finish, fresh_seed, print_reproduce, run
from reference import ReferenceSnn, class_scores, randomise, reference_config, reference_loss

LOSS_TOLERANCE = 1e-6


def reference_eval(net, cfg, frames):
    """Per-batch loss, accuracy and size in file order, as the reference's eval loop computes them."""
    count, size = int(frames["labels"].numel()), cfg["batch_size"]
    net.to_eval_form()
    net.eval()
    losses, accuracies, sizes = [], [], []
    with torch.no_grad():
        for start in range(0, count, size):
            indices = range(start, min(start + size, count))
            x = torch.nn.utils.rnn.pad_sequence([frames[f"x.{i}"] for i in indices]).float()
            y = frames["labels"][start:start + len(indices)].long()
            net.reset_state()
            out = net(x)
            losses.append(float(reference_loss(out, y, cfg)))
            predicted = torch.max(class_scores(out, cfg["loss"]), 1)[1]
            accuracies.append(float((predicted == y).double().mean()))
            sizes.append(len(indices))
    weighted = lambda values: sum(v * n for v, n in zip(values, sizes)) / sum(sizes)
    return {"loss_batch_mean": sum(losses) / len(losses), "accuracy_batch_mean": sum(accuracies) / len(accuracies),
            "loss": weighted(losses), "accuracy": weighted(accuracies), "samples": sum(sizes)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    seed = fresh_seed("eval parity", args.seed)
    set_args = [a for s in args.set for a in ("--set", s)]
    cfg = reference_config(json.loads(run([args.bin, "config", "--preset", "shd", *set_args])))
    with tempfile.TemporaryDirectory() as workdir:
        config_path, weights_path, frames_path = (os.path.join(workdir, name) for name in
                                                  ("config.json", "weights.safetensors", "frames.safetensors"))
        with open(config_path, "w") as f:
            json.dump(cfg, f)
        net = ReferenceSnn(cfg)
        net.init_as_reference()
        randomise(net, cfg, torch.Generator().manual_seed(seed))
        save_file({k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}, weights_path)
        run([args.bin, "data", "export", "--dataset", "shd", "--config", config_path, "--data", args.data,
             "--split", "test", "--out", frames_path])
        reference = reference_eval(net, cfg, load_file(frames_path))
        ours = json.loads(run([args.bin, "eval", "--config", config_path, "--checkpoint", weights_path,
                               "--data", args.data, "--split", "test", "--json", "--device", "cpu"]))
    failures = []
    for key, value in reference.items():
        print(f"{key}: ours {ours.get(key)!r}, reference {value!r}")
        exact = key in ("accuracy", "accuracy_batch_mean", "samples")
        if ours.get(key) is None or (ours[key] != value if exact else abs(ours[key] - value) > LOSS_TOLERANCE * abs(value)):
            failures.append(f"{key}: ours {ours.get(key)}, reference {value}")
    if failures:
        print_reproduce(seed)
    finish("eval parity", len(reference), failures)


if __name__ == "__main__":
    main()
