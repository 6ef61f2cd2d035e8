"""Whole-network parity: `snn-delays forward` against the reference network built from dcls
0.1.1 and spikingjelly 2.0.0, on identical weights, inputs and dropout masks.

Each case takes a configuration from `snn-delays config`, builds the reference network,
randomises every weight, position, sigma and BatchNorm statistic, and compares in train mode
(output, loss, every gradient) and in eval mode after the eval transform (output, loss). The
seeded initialisation of `snn-delays init` is compared key by key with the reference's.

The fixed cases are the SHD preset, its 3-layer variant and the preset with the paper-era
charge (LIF and PLIF); the random ones draw a fresh configuration from --seed (a new seed each
run unless given).

Criterion: |ours − reference| ≤ 1e-5·max|reference| + 1e-12 for each tensor, everywhere. With --bitwise, every
comparison on CPU must also be bitwise equal (docs/method.md §2.1 reports bitwise parity).
`--set KEY=VALUE` (repeatable) applies to every case, e.g. the exact computation settings.

Usage: parity_network.py --bin target/release/snn-delays [--seed S] [--random N] [--bitwise] [--set K=V]"""

import argparse
import json
import os
import random
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file

from harness import fresh_seed, print_reproduce, run
from reference import ReferenceSnn, compare, randomise, reference_config, reference_loss, save_batch

FIXED = [("shd preset", "shd", []), ("shd, 3 hidden layers", "shd", ["n_hidden_layers=3"]),
         ("shd, paper-era charge", "shd", ["charge_formula=paper2023"]),
         ("shd, paper-era charge, PLIF", "shd", ["charge_formula=paper2023", "neuron=plif"])]


def random_case(rng):
    preset = rng.choice(["shd", "ssc", "gsc"])
    sets = [f"n_hidden_layers={rng.randint(1, 3)}", f"n_hidden_neurons={rng.choice([16, 24, 40])}",
            f"max_delay_ms={rng.choice([50, 120, 250, 300])}", f"init_tau_ms={rng.choice([10.05, 15, 25])}",
            f"dropout_p={rng.choice([0.0, 0.25, 0.4])}", f"loss={rng.choice(['sum', 'mean', 'max', 'spike_count'])}",
            f"neuron={rng.choice(['lif', 'plif'])}", f"charge_formula={rng.choice(['spikingjelly2', 'paper2023'])}",
            f"model_type={rng.choice(['snn_delays', 'snn_delays', 'snn_delays_lr0', 'snn'])}",
            f"dcls_version={rng.choice(['gauss', 'gauss', 'v1', 'max'])}", f"kernel_count={rng.choice([1, 1, 2])}",
            f"convolution={rng.choice(['fft', 'direct'])}",
            f"flush_subnormal_taps={rng.choice(['true', 'false'])}",
            f"neuron_backend={rng.choice(['fused', 'ops'])}", f"seed={rng.randint(0, 10_000)}"]
    return f"random {preset} " + " ".join(s for s in sets), preset, sets


def check_case(args, name, preset, sets, workdir, gen, report):
    config_path = os.path.join(workdir, "config.json")
    set_args = [a for s in sets + args.set for a in ("--set", s)]
    cfg = reference_config(json.loads(run([args.bin, "config", "--preset", preset, *set_args])))
    with open(config_path, "w") as f:
        json.dump(cfg, f)
    d = cfg["derived"]

    init_path = os.path.join(workdir, "init.safetensors")
    run([args.bin, "init", "--config", config_path, "--out", init_path])
    net = ReferenceSnn(cfg)
    net.init_as_reference()
    ours_init = load_file(init_path)
    for key, value in net.state_dict().items():
        compare(f"{name} | init {key}", ours_init[key], value, report)

    randomise(net, cfg, gen)
    weights = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    weights_path = os.path.join(workdir, "weights.safetensors")
    save_file(weights, weights_path)

    steps, batch = int(torch.randint(12, 40, (1,), generator=gen)), int(torch.randint(2, 6, (1,), generator=gen))
    x = torch.randint(0, 4, (steps, batch, d["n_inputs"]), generator=gen).float()
    x *= (torch.rand(x.shape, generator=gen) < 0.3)
    batch_path = os.path.join(workdir, "batch.safetensors")
    y, masks = save_batch(batch_path, x, cfg, gen)

    net.train()
    net.reset_state()
    net.set_dropout_masks(masks)
    out = net(x)
    loss = reference_loss(out, y, cfg)
    loss.backward()
    ours_path = os.path.join(workdir, "ours.safetensors")
    run([args.bin, "forward", "--config", config_path, "--weights", weights_path, "--input", batch_path,
         "--out", ours_path, "--grad", "--device", "cpu"])
    ours = load_file(ours_path)
    compare(f"{name} | train output", ours["output"], out, report)
    compare(f"{name} | train loss", ours["loss"], loss, report)
    for key, param in net.named_parameters():
        if param.requires_grad:
            grad = param.grad if param.grad is not None else torch.zeros_like(param)
            compare(f"{name} | grad {key}", ours[f"grad.{key}"], grad, report)

    net.load_state_dict(weights)
    net.reset_state()
    net.to_eval_form()
    net.eval()
    with torch.no_grad():
        out = net(x)
        loss = reference_loss(out, y, cfg)
    run([args.bin, "forward", "--config", config_path, "--weights", weights_path, "--input", batch_path,
         "--out", ours_path, "--eval", "--device", "cpu"])
    ours = load_file(ours_path)
    compare(f"{name} | eval output", ours["output"], out, report)
    compare(f"{name} | eval loss", ours["loss"], loss, report)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--random", type=int, default=6, help="number of random configurations")
    parser.add_argument("--bitwise", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    seed = fresh_seed(f"parity (settings {args.set})", args.seed)
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    cases = FIXED + [random_case(rng) for _ in range(args.random)]
    report = []
    with tempfile.TemporaryDirectory() as workdir:
        for name, preset, sets in cases:
            check_case(args, name, preset, sets, workdir, gen, report)
    failed = [r for r in report if not r[1] or (args.bitwise and not r[2])]
    if failed:
        print_reproduce(seed)
    bitwise = sum(r[2] for r in report)
    for name, ok, exact, diff, note in report:
        if not ok or not exact:
            print(f"{'FAIL' if (not ok or args.bitwise) else 'ok  '} {name}: max |diff| {diff:.3e} {note}")
    worst = max(r[3] for r in report)
    print(f"{len(report)} comparisons over {len(cases)} configurations: {bitwise} bitwise, "
          f"largest |ours - reference| {worst:.3e}")
    print(f"parity: {len(report) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
