"""Schedule parity: `snn-delays schedule` against PyTorch's own schedulers, for every epoch of
the three presets and the non-delay models. lr_w and beta1 come from OneCycleLR (cycle_momentum)
on an Adam with the reference's three parameter groups; lr_pos from CosineAnnealingLR on the
positions' Adam; sigma from a float32 tensor multiplied in place at the end of each epoch while
epoch < final_epoch and the output sigma > 0.23 (docs/method.md §4.6). Every value must be
bitwise equal (JSON round-trips floats exactly).

Usage: schedule_parity.py --bin target/release/snn-delays"""

import argparse
import json

import warnings

import torch

from harness import finish, run
from reference import reference_config

warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\(\)`")

CASES = [("shd", []), ("ssc", []), ("gsc", []), ("shd", ["model_type=snn_delays_lr0"]), ("shd", ["model_type=snn"]),
         ("ssc", ["epochs=7"]), ("shd", ["scheduler_w=cosine_a", "scheduler_pos=none"])]


def reference(cfg):
    d, epochs = cfg["derived"], cfg["epochs"]
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(4)]
    opt_w = torch.optim.Adam([{"params": [params[0]], "weight_decay": 1e-5}, {"params": [params[1]], "weight_decay": 1e-5},
                              {"params": [params[2]], "weight_decay": 0}], lr=cfg["lr_w"])
    if cfg["scheduler_w"] == "one_cycle":
        sched_w = torch.optim.lr_scheduler.OneCycleLR(opt_w, max_lr=d["max_lr_w"], total_steps=epochs)
    elif cfg["scheduler_w"] == "cosine_a":
        sched_w = torch.optim.lr_scheduler.CosineAnnealingLR(opt_w, T_max=epochs)
    else:
        sched_w = None
    opt_pos = torch.optim.Adam([params[3]], lr=d["lr_pos"], weight_decay=0)
    sched_pos = torch.optim.lr_scheduler.CosineAnnealingLR(opt_pos, T_max=d["t_max_pos"]) if d["scheduler_pos"] == "cosine_a" else None
    sigma = torch.full((1,), float(d["sigma_init"]), dtype=torch.float32)
    rows = []
    for epoch in range(epochs):
        rows.append({"epoch": epoch, "lr_w": opt_w.param_groups[0]["lr"], "beta1": opt_w.param_groups[0]["betas"][0],
                     "lr_pos": opt_pos.param_groups[0]["lr"] if d["learns_positions"] else d["lr_pos"],
                     "sigma": float(sigma[0])})
        for sched in (sched_w, sched_pos):
            if sched is not None:
                sched.step()
        if epoch < d["final_sigma_epoch"] and float(sigma[0]) > 0.23:
            sigma *= d["sigma_decay"]
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    args = parser.parse_args()
    failures, checked = [], 0
    for preset, sets in CASES:
        set_args = [a for s in sets for a in ("--set", s)]
        cfg = reference_config(json.loads(run([args.bin, "config", "--preset", preset, *set_args])))
        ours = json.loads(run([args.bin, "schedule", "--preset", preset, *set_args]))
        for mine, theirs in zip(ours, reference(cfg), strict=True):
            for key in ("lr_w", "beta1", "lr_pos", "sigma"):
                checked += 1
                if mine[key] != theirs[key]:
                    failures.append(f"{preset} {sets} epoch {mine['epoch']} {key}: ours {mine[key]!r}, PyTorch {theirs[key]!r}")
    finish("schedule parity", checked, failures)


if __name__ == "__main__":
    main()
