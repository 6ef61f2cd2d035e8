"""Writes multi-step LIF/PLIF reference cases computed by spikingjelly 2.0.0's `LIFNode` and
`ParametricLIFNode` (decay_input=False, hard reset to 0, detach_reset, ATan(alpha=5)): spikes,
v_seq, and the gradients of `Σ spikes·g_s + Σ v_seq·g_v` with respect to the input (and PLIF w),
in train and eval mode, for thresholds 1 and 1e9 and three values of tau.

Usage: lif_cases.py OUT.safetensors [--seed S]"""

import argparse

import torch
from safetensors.torch import save_file
from spikingjelly.activation_based import functional, neuron, surrogate


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    tensors, index = {}, 0
    for kind in ("lif", "plif"):
        for train in (True, False):
            for threshold in (1.0, 1e9):
                for tau in (1.0050000001000001, 1.5000000001, 2.0):
                    tensors.update(make_case(f"case{index}", kind, train, threshold, tau))
                    index += 1
    save_file({k: v.contiguous() for k, v in tensors.items()}, args.out)
    print(f"wrote {index} neuron cases to {args.out}")


def make_case(name, kind, train, threshold, tau):
    common = dict(decay_input=False, v_threshold=threshold, v_reset=0.0, surrogate_function=surrogate.ATan(alpha=5.0),
                  detach_reset=True, step_mode="m", store_v_seq=True)
    node = neuron.ParametricLIFNode(init_tau=tau, **common) if kind == "plif" else neuron.LIFNode(tau=tau, **common)
    node.train(train)
    x = (torch.randn(40, 3, 16) * 0.8 + 0.4).requires_grad_(True)
    spikes = node(x)
    v_seq = node.v_seq
    g_spikes, g_v = torch.randn_like(spikes), torch.randn_like(v_seq)
    ((spikes * g_spikes).sum() + (v_seq * g_v).sum()).backward()
    params = torch.tensor([1.0 if kind == "plif" else 0.0, 1.0 if train else 0.0, threshold, tau], dtype=torch.float64)
    case = {f"{name}.params": params, f"{name}.x": x.detach(), f"{name}.g_spikes": g_spikes, f"{name}.g_v": g_v,
            f"{name}.spikes": spikes.detach(), f"{name}.v_seq": v_seq.detach(), f"{name}.grad_x": x.grad}
    if kind == "plif":
        case[f"{name}.grad_w"] = node.w.grad.reshape(1)
    functional.reset_net(node)
    return case


if __name__ == "__main__":
    main()
