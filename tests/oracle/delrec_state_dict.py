"""Checks a state dict written by `snn-delays export --format state-dict` for a recurrent-delay
model against DelRec's module layout, built here from the spec with PyTorch stand-ins: an
`nn.Sequential` named `layers` holding, per block, `nn.Linear`, `nn.BatchNorm1d` (`shd`), the
dropout on the current (`ssc`), the recurrent layer (`recurrent_weights (N, N)`,
`recurrent_delays (N)` and, for `ssc`, `p_spread (N)`) or a plain LIF (the first `shd` block), a
spike recorder and the dropout on the spikes (`shd`); then the readout `nn.Linear` and, for `shd`,
its LIF. Dropouts, LIFs and recorders hold no state. `load_state_dict(strict=True)` must accept
the file, every value must be finite, and the trainable count must be the spec's formula.

Usage: delrec_state_dict.py --file F --architecture ssc|shd --inputs I --hidden N --outputs C"""

import argparse

import torch
from safetensors.torch import load_file

from harness import finish


class Stateless(torch.nn.Module):
    """A dropout, a LIF or a spike recorder: no parameters, no buffers."""


class RecurrentDelays(torch.nn.Module):
    def __init__(self, n, spread):
        super().__init__()
        self.recurrent_weights = torch.nn.Parameter(torch.zeros(n, n))
        self.recurrent_delays = torch.nn.Parameter(torch.zeros(n))
        if spread:
            self.p_spread = torch.nn.Parameter(torch.zeros(n))


class Network(torch.nn.Module):
    def __init__(self, architecture, inputs, hidden, outputs):
        super().__init__()
        layers = []
        if architecture == "ssc":
            for block in range(3):
                width = inputs if block == 0 else hidden
                layers += [torch.nn.Linear(width, hidden), Stateless(), RecurrentDelays(hidden, True), Stateless()]
            layers.append(torch.nn.Linear(hidden, outputs))
        else:
            layers += [torch.nn.Linear(inputs, hidden), torch.nn.BatchNorm1d(hidden), Stateless(), Stateless(), Stateless()]
            layers += [torch.nn.Linear(hidden, hidden), torch.nn.BatchNorm1d(hidden), RecurrentDelays(hidden, False),
                       Stateless(), Stateless()]
            layers += [torch.nn.Linear(hidden, outputs), Stateless()]
        self.layers = torch.nn.Sequential(*layers)


def expected_parameters(architecture, i, n, c):
    if architecture == "ssc":
        return (i * n + n) + 2 * (n * n + n) + 3 * (n * n + 2 * n) + (n * c + c)
    return (i * n + n) + 2 * n + (n * n + n) + 2 * n + (n * n + n) + (n * c + c)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", required=True)
    parser.add_argument("--architecture", choices=["ssc", "shd"], required=True)
    for name in ("inputs", "hidden", "outputs"):
        parser.add_argument(f"--{name}", type=int, required=True)
    args = parser.parse_args()
    state = load_file(args.file)
    network = Network(args.architecture, args.inputs, args.hidden, args.outputs)
    failures = []
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        failures.append(f"load_state_dict(strict=True) refuses the file: {error}")
    for key, value in state.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            failures.append(f"{key} holds values that are not finite")
        if value.is_floating_point() and value.dtype != torch.float32:
            failures.append(f"{key} is {value.dtype}, not float32")
    trainable = sum(p.numel() for p in network.parameters())
    expected = expected_parameters(args.architecture, args.inputs, args.hidden, args.outputs)
    if trainable != expected:
        failures.append(f"{trainable} trainable values, the spec counts {expected}")
    print(f"{args.architecture}: {len(state)} keys loaded strictly into DelRec's layout; {trainable} trainable values")
    finish("DelRec state dict", len(state) + 2, failures)


if __name__ == "__main__":
    main()
