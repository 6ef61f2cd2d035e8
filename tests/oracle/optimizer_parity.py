"""Optimizer parity: `snn-delays replay` against a Python training loop on the reference network
(dcls 0.1.1 + spikingjelly 2.0.0) with `torch.optim.Adam` (weights wd 1e-5, PLIF w wd 1e-5,
BatchNorm wd 0; positions their own Adam), OneCycleLR and CosineAnnealingLR stepped per epoch,
positions clamped after every step and sigma decayed at the end of each epoch (docs/method.md §4).
Same initialisation (seed 0), same batches, injected dropout masks; SHD-shaped network, with our
default fused neurons and flushed subnormal taps, and the direct convolution (the FFT one agrees to
float32 rounding, which a threshold can turn into a different spike over 24 steps).

Criterion: every per-step loss bitwise equal, and every final parameter within 16 float32 ulps
of the reference, counted at the tensor's largest |value| (a missing weight-decay term shows as
hundreds). Why parameters are
not bitwise: PyTorch adds the weight decay as one fused multiply-add (`grad.add(param,
alpha=wd)` runs `fmadd` in its vectorized CPU kernel) and tch exposes no fused op, so gradients
differ in the last bit, and Adam carries that through the following steps. The update itself,
and everything else, is written op for op as PyTorch computes it; positions (no weight decay)
and the schedules are bitwise (see schedule_parity.py). The test prints the largest differences.

Usage: optimizer_parity.py --bin target/release/snn-delays [--neuron lif|plif]"""

import argparse
import json
import os
import tempfile
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from harness import finish, run
from reference import ReferenceSnn, paper_optimizers, paper_step, reference_config

warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)`")
ULPS = 16
EPOCHS_RUN, BATCHES, STEPS, BATCH = 3, 2, 24, 8


def python_loop(cfg, batches):
    d = cfg["derived"]
    net = ReferenceSnn(cfg)
    net.init_as_reference()
    initial = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    opt_w, opt_pos = paper_optimizers(net, cfg)
    sched_w = torch.optim.lr_scheduler.OneCycleLR(opt_w, max_lr=d["max_lr_w"], total_steps=cfg["epochs"])
    sched_pos = torch.optim.lr_scheduler.CosineAnnealingLR(opt_pos, T_max=d["t_max_pos"])
    losses = []
    for epoch, epoch_batches in enumerate(batches):
        net.train()
        for x, y, masks in epoch_batches:
            net.reset_state()
            net.set_dropout_masks(masks)
            losses.append(paper_step(net, cfg, x, y, opt_w, opt_pos).item())
        sched_w.step()
        sched_pos.step()
        sigmas = [m.SIG for m in net.model if hasattr(m, "SIG") and m.SIG is not None]
        if epoch < d["final_sigma_epoch"] and float(sigmas[-1].reshape(-1)[0]) > 0.23:
            with torch.no_grad():
                for sig in sigmas:
                    sig *= d["sigma_decay"]
    return initial, losses, net.state_dict()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--neuron", default="lif")
    args = parser.parse_args()
    sets = ["epochs=8", f"neuron={args.neuron}", f"batch_size={BATCH}", "convolution=direct"]
    cfg = reference_config(json.loads(run([args.bin, "config", "--preset", "shd", *[a for s in sets for a in ("--set", s)]])))
    d = cfg["derived"]
    gen = torch.Generator().manual_seed(1)
    batches, tensors = [], {}
    for e in range(EPOCHS_RUN):
        epoch_batches = []
        for b in range(BATCHES):
            x = torch.randint(0, 3, (STEPS, BATCH, d["n_inputs"]), generator=gen).float() * (torch.rand(STEPS, BATCH, d["n_inputs"], generator=gen) < 0.3)
            y = torch.randint(0, d["n_outputs"], (BATCH,), generator=gen)
            masks = [F.dropout(torch.ones(BATCH, cfg["n_hidden_neurons"]), cfg["dropout_p"], training=True) for _ in range(cfg["n_hidden_layers"])]
            epoch_batches.append((x, y, masks))
            tensors.update({f"e{e}.b{b}.x": x, f"e{e}.b{b}.y": y, **{f"e{e}.b{b}.mask.{l}": m for l, m in enumerate(masks)}})
        batches.append(epoch_batches)
    initial, losses, final = python_loop(cfg, batches)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {name: os.path.join(tmp, f"{name}.safetensors") for name in ("config", "weights", "batches", "out")}
        with open(paths["config"], "w") as f:
            json.dump(cfg, f)
        save_file(initial, paths["weights"])
        save_file(tensors, paths["batches"])
        run([args.bin, "replay", "--config", paths["config"], "--weights", paths["weights"], "--batches", paths["batches"], "--out", paths["out"],
             "--device", "cpu"])
        ours = load_file(paths["out"])
    failures, worst = [], {}
    loss_diff = (ours["losses"] - torch.tensor(losses, dtype=torch.float64)).abs()
    worst["losses (abs)"] = float(loss_diff.max())
    if (loss_diff != 0).any():
        failures.append(f"losses are not bitwise equal: ours {ours['losses'].tolist()} vs {losses}")
    for key, value in final.items():
        if not value.is_floating_point():
            if not torch.equal(ours[key], value):
                failures.append(f"{key}: {ours[key].tolist()} vs {value.tolist()}")
            continue
        ulps = float32_ulps(ours[key], value)
        worst[key] = float(ulps.max()) if ulps.numel() else 0.0
        if worst[key] > ULPS:
            failures.append(f"{key}: {worst[key]:.0f} float32 ulps apart (at most {ULPS})")
    top = sorted(worst.items(), key=lambda kv: -kv[1])[:4]
    print(f"{len(losses)} steps over {EPOCHS_RUN} epochs ({args.neuron}); losses bitwise: {worst['losses (abs)'] == 0}; "
          "largest parameter differences in ulps: " + ", ".join(f"{k} {v:.0f}" for k, v in top if k != "losses (abs)"))
    finish("optimizer parity", len(final) + 1, failures)


def float32_ulps(ours, reference):
    """|ours − reference| in units of the float32 spacing at the tensor's largest |value|."""
    scale = float(reference.abs().max()) if reference.numel() else 0.0
    spacing = float(np.spacing(np.float32(max(scale, 1e-30))))
    return (ours.double() - reference.double()).abs() / spacing


if __name__ == "__main__":
    main()
