"""Writes whole-network cases for DelRec's two architectures, computed with PyTorch from the
formulas of docs/method.md "Recurrent delays" (the layer of delrec_cases.py, a ring buffer of
postsynaptic currents):

- ssc: 3 x [Linear -> dropout on the current -> recurrent-delay layer], Linear readout; loss
  cross-entropy of sum_t out(t) against class labels;
- shd: Linear -> BatchNorm over T*B -> LIF -> dropout, Linear -> BatchNorm -> recurrent-delay
  layer -> dropout, Linear -> LIF with threshold 1e8 whose membrane is the output; loss
  cross-entropy of sum_t softmax(v(t)) against one-hot targets.

Parameters are saved as `param.<name>` under the Rust network's variable names; training cases
(sigma 10 and 0.77, given masks) save the output, the loss, `grad.<name>` of every trainable
parameter and BatchNorm's updated running statistics; evaluation cases (delays rounded on a copy
and clamped at 0, sigma 0 and 0.06) the output and the loss.

Usage: delrec_network_cases.py OUT.safetensors [--seed S]"""

import torch
import torch.nn.functional as F

from delrec_cases import PRESETS, kernel, layer, lif_step
from harness import case_file_args, save_cases

STEPS, BATCH, INPUTS, HIDDEN, OUTPUTS = 20, 3, 10, 12, 5
PHASES = ((True, 10.0), (True, 0.77), (False, 0.0), (False, 0.06))


def main():
    args = case_file_args()
    cases = [make_case(arch, train, sigma) for arch in ("ssc", "shd") for train, sigma in PHASES]
    save_cases(args.out, cases, "recurrent-network")


def linear_params(name, inputs, outputs):
    return {f"{name}.weight": torch.randn(outputs, inputs) / inputs ** 0.5,
            f"{name}.bias": torch.randn(outputs) * 0.1}


def recurrent_params(name, arch):
    d = torch.rand(HIDDEN) * 6 if arch == "shd" else torch.randn(HIDDEN) * 4
    params = {f"{name}.recurrent_weights": torch.randn(HIDDEN, HIDDEN) * 0.4, f"{name}.recurrent_delays": d}
    if arch == "ssc":
        params[f"{name}.p_spread"] = torch.randn(HIDDEN) * 0.5
    return params


def norm_params(name):
    return {f"{name}.weight": 1 + 0.2 * torch.randn(HIDDEN), f"{name}.bias": 0.2 * torch.randn(HIDDEN) + 0.3,
            f"{name}.running_mean": 0.3 * torch.randn(HIDDEN), f"{name}.running_var": 0.5 + torch.rand(HIDDEN),
            f"{name}.num_batches_tracked": torch.tensor(3, dtype=torch.int64)}


def network_params(arch):
    params = {}
    if arch == "ssc":
        for l in range(3):
            params.update(linear_params(f"blocks.{l}.linear", INPUTS if l == 0 else HIDDEN, HIDDEN))
            params.update(recurrent_params(f"blocks.{l}.recurrent", arch))
    else:
        for l in range(2):
            params.update(linear_params(f"blocks.{l}.linear", INPUTS if l == 0 else HIDDEN, HIDDEN))
            params.update(norm_params(f"blocks.{l}.norm"))
        params.update(recurrent_params("blocks.1.recurrent", arch))
    params.update(linear_params("readout", HIDDEN, OUTPUTS))
    return params


def mask_rates(arch):
    """The dropout rates in the order a training pass draws them."""
    return [0.1, 0.3] * 3 if arch == "ssc" else [0.4, 0.2, 0.4]


def recurrent(h, params, name, arch, train, sigma, mask):
    d = params[f"{name}.recurrent_delays"]
    delays = d.detach().round().clamp(min=0) if not train else d
    k = kernel(delays, params.get(f"{name}.p_spread"), sigma)
    spikes, _ = layer(h, params[f"{name}.recurrent_weights"], k, train, mask, arch)
    return spikes


def plain_lif(h, train, threshold):
    v = torch.zeros_like(h[0])
    spikes, membrane = [], []
    for t in range(h.shape[0]):
        s, v = lif_step(v, h[t], "shd", train, threshold)
        spikes.append(s)
        membrane.append(v)
    return torch.stack(spikes), torch.stack(membrane)


def norm(h, params, name, train):
    """nn.BatchNorm1d over the T*B positions, counting its training batches."""
    steps, batch, channels = h.shape
    if train:
        params[f"{name}.num_batches_tracked"] += 1
    out = F.batch_norm(h.reshape(steps * batch, channels), params[f"{name}.running_mean"],
                       params[f"{name}.running_var"], params[f"{name}.weight"], params[f"{name}.bias"], train, 0.1, 1e-5)
    return out.reshape(steps, batch, channels)


def forward(arch, params, x, masks, train, sigma):
    masks = iter(masks)
    h = x
    if arch == "ssc":
        for l in range(3):
            h = F.linear(h, params[f"blocks.{l}.linear.weight"], params[f"blocks.{l}.linear.bias"])
            h = h * next(masks) if train else h
            h = recurrent(h, params, f"blocks.{l}.recurrent", arch, train, sigma, next(masks) if train else None)
        return F.linear(h, params["readout.weight"], params["readout.bias"])
    h = norm(F.linear(h, params["blocks.0.linear.weight"], params["blocks.0.linear.bias"]), params, "blocks.0.norm", train)
    h, _ = plain_lif(h, train, 1.0)
    h = h * next(masks) if train else h
    h = norm(F.linear(h, params["blocks.1.linear.weight"], params["blocks.1.linear.bias"]), params, "blocks.1.norm", train)
    h = recurrent(h, params, "blocks.1.recurrent", arch, train, sigma, next(masks) if train else None)
    h = h * next(masks) if train else h
    _, membrane = plain_lif(F.linear(h, params["readout.weight"], params["readout.bias"]), train, 1e8)
    return membrane


def loss_of(arch, out, labels):
    if arch == "ssc":
        return F.cross_entropy(out.sum(0), labels)
    return F.cross_entropy(F.softmax(out, 2).sum(0), F.one_hot(labels, OUTPUTS).float())


def trainable(name):
    return not name.endswith(("running_mean", "running_var", "num_batches_tracked"))


def make_case(arch, train, sigma):
    params = network_params(arch)
    saved = {f"param.{name}": value.clone() for name, value in params.items()}
    for name, value in params.items():
        if trainable(name):
            value.requires_grad_(True)
    x = (torch.rand(STEPS, BATCH, INPUTS) < 0.3).float() * 2.0
    labels = torch.randint(0, OUTPUTS, (BATCH,))
    masks = [torch.bernoulli(torch.full((BATCH, HIDDEN), 1 - p)) / (1 - p) for p in mask_rates(arch)]
    out = forward(arch, params, x, masks, train, sigma)
    loss = loss_of(arch, out, labels)
    case = {"params": torch.tensor([0.0 if arch == "ssc" else 1.0, 1.0 if train else 0.0, sigma], dtype=torch.float64),
            "x": x, "labels": labels, "out": out.detach(), "loss": loss.detach().reshape(1), **saved}
    if train:
        case.update({f"mask.{i}": mask for i, mask in enumerate(masks)})
        loss.backward()
        case.update({f"grad.{name}": value.grad for name, value in params.items() if trainable(name)})
        case.update({f"after.{name}": value for name, value in params.items() if "running" in name})
    return case


if __name__ == "__main__":
    main()
