"""Writes short training runs of DelRec's two networks, computed with PyTorch as the original trains
(docs/method.md "Recurrent delays", training): the networks of delrec_network_cases.py; optimizer
groups weights (Linear and recurrent weights, wd 1e-5), BatchNorm (wd 0) and positions (delays and
spreads, wd 0); ssc: torch.optim.Adam for both, OneCycleLR for both; shd: torch.optim.AdamW for
both, OneCycleLR for the weights and CosineAnnealingLR for the positions; every schedule stepped
once per epoch. Epoch e sets sigma = 10 * (0.95 ** (100 / E)) ** e, trains on its batches (given
dropout masks; shd clamps the delays at 0 after every step), then evaluates after rounding the
delays in place and clamping them (the original's rounding), at the sigma in force.

Each case saves the initial parameters (`param.<name>`), the batches, the masks, every training
loss, every evaluation loss and the final parameters (`final.<name>`).

Usage: delrec_training_cases.py OUT.safetensors [--seed S]"""

import torch

from delrec_network_cases import BATCH, HIDDEN, INPUTS, OUTPUTS, STEPS, forward, loss_of, mask_rates, network_params
from harness import case_file_args, save_cases

EPOCHS, BATCHES = 4, 2


def main():
    args = case_file_args()
    save_cases(args.out, [make_case(arch) for arch in ("ssc", "shd")], "recurrent-training")


def optimizers(arch, params):
    positions = [v for k, v in params.items() if k.endswith(("recurrent_delays", "p_spread"))]
    norm = [v for k, v in params.items() if ".norm.weight" in k or ".norm.bias" in k]
    weights = [v for k, v in params.items() if v.requires_grad and not any(v is p for p in positions + norm)]
    kind = torch.optim.Adam if arch == "ssc" else torch.optim.AdamW
    lr_w = 1e-3 if arch == "ssc" else 5e-3
    groups = [{"params": weights, "weight_decay": 1e-5}] + ([{"params": norm, "weight_decay": 0.0}] if norm else [])
    opt_w = kind(groups, lr=lr_w)
    opt_pos = kind(positions, lr=5e-2, weight_decay=0.0)
    sched_w = torch.optim.lr_scheduler.OneCycleLR(opt_w, max_lr=lr_w, total_steps=EPOCHS)
    if arch == "ssc":
        sched_pos = torch.optim.lr_scheduler.OneCycleLR(opt_pos, max_lr=5e-2, total_steps=EPOCHS)
    else:
        sched_pos = torch.optim.lr_scheduler.CosineAnnealingLR(opt_pos, T_max=EPOCHS)
    return (opt_w, opt_pos), (sched_w, sched_pos), positions


def make_case(arch):
    params = network_params(arch)
    case = {"params": torch.tensor([0.0 if arch == "ssc" else 1.0], dtype=torch.float64)}
    case.update({f"param.{name}": value.clone() for name, value in params.items()})
    for name, value in params.items():
        if not name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            value.requires_grad_(True)
    opts, scheds, positions = optimizers(arch, params)
    train_losses, eval_losses = [], []
    x_eval = (torch.rand(STEPS, BATCH, INPUTS) < 0.3).float() * 2.0
    labels_eval = torch.randint(0, OUTPUTS, (BATCH,))
    case.update(x_eval=x_eval, labels_eval=labels_eval)
    for epoch in range(EPOCHS):
        sigma = 10.0 * (0.95 ** (100 / EPOCHS)) ** epoch
        for b in range(BATCHES):
            x = (torch.rand(STEPS, BATCH, INPUTS) < 0.3).float() * 2.0
            labels = torch.randint(0, OUTPUTS, (BATCH,))
            masks = [torch.bernoulli(torch.full((BATCH, HIDDEN), 1 - p)) / (1 - p) for p in mask_rates(arch)]
            case.update({f"x.{epoch}.{b}": x, f"labels.{epoch}.{b}": labels})
            case.update({f"mask.{epoch}.{b}.{i}": mask for i, mask in enumerate(masks)})
            loss = loss_of(arch, forward(arch, params, x, masks, True, sigma), labels)
            for opt in opts:
                opt.zero_grad()
            loss.backward()
            for opt in opts:
                opt.step()
            if arch == "shd":
                with torch.no_grad():
                    for d in positions:
                        d.clamp_(min=0)
            train_losses.append(loss.item())
        with torch.no_grad():
            for name, value in params.items():
                if name.endswith("recurrent_delays"):
                    value.round_().clamp_(min=0)
            eval_losses.append(loss_of(arch, forward(arch, params, x_eval, [], False, sigma), labels_eval).item())
        for sched in scheds:
            sched.step()
    case.update(train_losses=torch.tensor(train_losses, dtype=torch.float32),
                eval_losses=torch.tensor(eval_losses, dtype=torch.float32))
    case.update({f"final.{name}": value.detach().clone() for name, value in params.items()})
    return case


if __name__ == "__main__":
    main()
