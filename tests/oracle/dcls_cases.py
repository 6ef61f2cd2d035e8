"""Writes DCLS-1d reference cases computed by dcls 0.1.1's `Dcls1d`: kernel, conv output and the
gradients with respect to weights and positions, for versions gauss/max/v1, K in {5, 25, 31},
kernel_count in {1, 2} and sigma in {0, 0.23, 5, 12}.

Usage: dcls_cases.py OUT.safetensors [--seed S]"""

import torch
from DCLS.construct.modules import Dcls1d
from harness import case_file_args, save_cases

VERSIONS = {"gauss": 0, "max": 1, "v1": 2}


def main():
    args = case_file_args()
    cases = [make_case(version, size, count, sigma) for version in VERSIONS for size in (5, 25, 31) for count in (1, 2)
             for sigma in ((0.0, 0.23, 5.0, 12.0) if version != "v1" else (0.0,))]
    save_cases(args.out, cases, "DCLS")


def make_case(version, size, count, sigma):
    c_in, c_out, batch = 3, 4, 2
    layer = Dcls1d(c_in, c_out, kernel_count=count, dilated_kernel_size=size, bias=False, version=version)
    limit = size // 2
    with torch.no_grad():
        layer.weight.uniform_(-1, 1)
        layer.P.uniform_(-limit, limit)
        layer.P.view(-1)[:3] = torch.tensor([0.0, float(-limit), 0.5])  # on taps and half-way
        if layer.SIG is not None:
            layer.SIG.fill_(sigma)
    sig = layer.SIG if layer.SIG is not None else torch.zeros_like(layer.P)
    kernel = layer.DCK(layer.weight, layer.P, layer.SIG)
    x = torch.randn(batch, c_in, size + 7)
    out = layer(x)
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()
    params = torch.tensor([VERSIONS[version], size, count, sigma], dtype=torch.float64)
    return {"params": params, "weight": layer.weight.detach(), "positions": layer.P.detach(), "sigma": sig.detach(), "x": x,
            "upstream": upstream, "kernel": kernel.detach(), "out": out.detach(), "grad_weight": layer.weight.grad,
            "grad_positions": layer.P.grad}


if __name__ == "__main__":
    main()
