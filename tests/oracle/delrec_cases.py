"""Writes recurrent-delay layer cases (DelRec's axonal layer), computed with PyTorch from the
formulas of docs/method.md "Recurrent delays" the way the original computes them: a ring buffer of
L slots of future postsynaptic currents, read at slot t mod L, then zeroed and filled with taps
1..L-1 of W @ (s(t) * K) by two slice adds. The LIF step charges h = v*(1 - 1/tau) + I; the SHD
constants use spikingjelly 2.0.0's ATan(alpha=5), the SSC ones a triangle surrogate.

Each case saves the input x, W, d, p (SSC), the dropout mask, the upstream weights of the spikes
and the membrane, the spikes, v_seq and the gradients of W, d, p and x, for both configurations at
sigma 10, 0.77 and 0.06, in training (a fixed mask) and evaluation.

Usage: delrec_cases.py OUT.safetensors [--seed S]"""

import math

import torch
from spikingjelly.activation_based import surrogate

from harness import case_file_args, save_cases

# (tau, reset to 0 (else soft), detach_reset, per-neuron spread, recurrent dropout)
PRESETS = {"ssc": (2.0, False, False, True, 0.3), "shd": (1.05, True, True, False, 0.2)}
SIGMAS = (10.0, 0.77, 0.06)


class Triangle(torch.autograd.Function):
    """Heaviside forward; backward grad * max(0, gamma - |x|) / gamma^2."""

    @staticmethod
    def forward(ctx, x, gamma):
        ctx.save_for_backward(x)
        ctx.gamma = gamma
        return (x >= 0).to(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        gamma = ctx.gamma
        return grad * ((gamma - x.abs()).clamp(min=0) / (gamma * gamma)), None


def main():
    args = case_file_args()
    cases = [make_case(preset, sigma, train) for preset in PRESETS for sigma in SIGMAS for train in (True, False)]
    save_cases(args.out, cases, "recurrent-delay")


def kernel(d, p, sigma):
    """The window length and the (N, L) triangle kernel centred 1 + d with width s."""
    s = 1 + 2 * sigma * torch.sigmoid(p) if p is not None else torch.full_like(d, 1 + sigma)
    length = max(math.ceil((d.max() + 1 + s.max()).item()) + 1, 2)
    taps = torch.arange(length, dtype=torch.float32)
    return torch.relu(s[:, None] - (taps[None, :] - (d + 1)[:, None]).abs()) / s[:, None].square()


def lif_step(v, current, preset, train, threshold=1.0):
    """spikingjelly 0.0.0.0.14's LIFNode step (DelRec's pin): in eval, a hard-reset neuron takes the
    TorchScript path, which charges v - (v - v_reset) / tau + x."""
    tau, hard, detach_reset, _, _ = PRESETS[preset]
    h = v - (v - 0.0) / tau + current if hard and not train else v * (1 - 1 / tau) + current
    spikes = surrogate.ATan(alpha=5.0)(h - threshold) if preset == "shd" else Triangle.apply(h - threshold, 1.0)
    resetting = spikes.detach() if detach_reset else spikes
    v = (1 - resetting) * h + resetting * 0.0 if hard else h - resetting * threshold
    return spikes, v


# The ring buffer checks what it delivered against the direct sum; a benchmark turns this off.
CHECK_ARRIVALS = True


def layer(x, w, k, train, mask, preset):
    steps, batch, n = x.shape
    length = k.shape[1]
    ring = torch.zeros(batch, n, length)
    v = torch.zeros(batch, n)
    spikes, membrane, arrived = [], [], []
    for t in range(steps):
        slot = t % length
        recurrent = ring[:, :, slot].clone()
        current = x[t] + recurrent * mask if train else x[t] + recurrent
        s, v = lif_step(v, current, preset, train)
        post = w @ (s.unsqueeze(-1) * k)
        ring = ring.clone()
        ring[:, :, slot] = 0
        ahead = length - 1 - slot
        ring[:, :, slot + 1:] += post[:, :, 1:1 + ahead]
        ring[:, :, :slot] += post[:, :, 1 + ahead:]
        spikes.append(s)
        membrane.append(v)
        arrived.append(recurrent)
    if CHECK_ARRIVALS:
        check_arrivals(torch.stack(spikes).detach(), torch.stack(arrived).detach(), w.detach(), k.detach())
    return torch.stack(spikes), torch.stack(membrane)


def check_arrivals(spikes, arrived, w, k):
    """The ring buffer delivered r(t) = sum_{k>=1} W @ (s(t-k) * K[:, k]), in float64."""
    spikes, w, k = spikes.double(), w.double(), k.double()
    for t in range(spikes.shape[0]):
        taps = range(1, min(t, k.shape[1] - 1) + 1)
        direct = sum(((spikes[t - tap] * k[:, tap]) @ w.T for tap in taps), torch.zeros_like(spikes[t]))
        assert torch.allclose(arrived[t].double(), direct, atol=1e-4), f"ring buffer at step {t}"


def delays(preset, n):
    """SSC: signed, some beyond -s (no clamp in training); SHD: non-negative."""
    if preset == "ssc":
        d = torch.randn(n) * 4
        d[0], d[1] = -2.5, -16.0
        return d
    return torch.rand(n) * 8


def make_case(preset, sigma, train):
    steps, batch, n = 30, 3, 12
    _, _, _, spread, dropout = PRESETS[preset]
    x = (torch.randn(steps, batch, n) * 0.8 + 0.5).requires_grad_(True)
    w = (torch.randn(n, n) * 0.6).requires_grad_(True)
    d = delays(preset, n).requires_grad_(True)
    p = (torch.randn(n) * 0.5).requires_grad_(True) if spread else None
    mask = torch.bernoulli(torch.full((batch, n), 1 - dropout)) / (1 - dropout)
    k = kernel(d, p, sigma)
    spikes, v_seq = layer(x, w, k, train, mask, preset)
    g_spikes, g_v = torch.randn_like(spikes), torch.randn_like(v_seq)
    ((spikes * g_spikes).sum() + (v_seq * g_v).sum()).backward()
    params = torch.tensor([0.0 if preset == "ssc" else 1.0, sigma, 1.0 if train else 0.0], dtype=torch.float64)
    case = {"params": params, "x": x.detach(), "w": w.detach(), "d": d.detach(), "mask": mask, "g_spikes": g_spikes,
            "g_v": g_v, "kernel": k.detach(), "spikes": spikes.detach(), "v_seq": v_seq.detach(), "grad_x": x.grad,
            "grad_w": w.grad, "grad_d": d.grad}
    if spread:
        case.update(p=p.detach(), grad_p=p.grad)
    return case


if __name__ == "__main__":
    main()
