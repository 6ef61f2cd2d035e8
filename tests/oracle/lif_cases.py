"""Writes multi-step LIF/PLIF reference cases computed by spikingjelly 2.0.0's `LIFNode` and
`ParametricLIFNode` (decay_input=False, hard reset to 0, detach_reset, ATan(alpha=5)): spikes,
v_seq, and the gradients of `Σ spikes·g_s + Σ v_seq·g_v` with respect to the input (and PLIF w),
in train and eval mode, for thresholds 1 and 1e9 and three values of tau.

Usage: lif_cases.py OUT.safetensors [--seed S]"""

import torch
from spikingjelly.activation_based import functional, neuron, surrogate

from harness import case_file_args, save_cases


def main():
    args = case_file_args()
    cases = [make_case(kind, train, threshold, tau) for kind in ("lif", "plif") for train in (True, False)
             for threshold in (1.0, 1e9) for tau in (1.0050000001000001, 1.5000000001, 2.0)]
    save_cases(args.out, cases, "neuron")


def make_case(kind, train, threshold, tau):
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
    case = {"params": params, "x": x.detach(), "g_spikes": g_spikes, "g_v": g_v, "spikes": spikes.detach(),
            "v_seq": v_seq.detach(), "grad_x": x.grad}
    if kind == "plif":
        case["grad_w"] = node.w.grad.reshape(1)
    functional.reset_net(node)
    return case


if __name__ == "__main__":
    main()
