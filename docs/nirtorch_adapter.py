"""Running an snn-delays NIR export in nirtorch 2.6: the node map it lacks.

nirtorch maps `Input`, `Output` and `Affine` by itself but has no module for `Delay`, `LIF` or
`LI`. This map adds them, written from NIR's equations with the graph's `dt`:
`Delay(d)` returns its input from round(d/dt) steps earlier (zero before the start); `LIF` and
`LI` step `v ← v + (dt/τ)·(v_leak − v + R·I)` by Euler, and `LIF` emits a spike where
`v ≥ v_threshold` and sets `v ← v_reset` there. nirtorch then runs the graph one step per call,
carrying the state:

    import nir, nirtorch, torch
    from nirtorch_adapter import node_map
    graph = nir.read("model.nir")
    module = nirtorch.nir_to_torch(graph, node_map(graph))
    state, readout = None, []
    for frame in frames:                                   # (T + tail_steps, n_inputs), the
        out, state = module(frame.unsqueeze(0), state)     # recording then tail_steps zeros
        readout.append(out)

The graph's metadata gives `dt`, `tail_steps` (the zero frames to append after a recording) and
the `scoring` rule that turns the readout into class scores (tests/deploy.rs runs this and
compares with `snn-delays infer --semantics nir`)."""

import nir
import numpy as np
import torch


class Delay(torch.nn.Module):
    """The input of `steps` calls ago (zeros until then); the state is the queue of inputs."""

    def __init__(self, steps):
        super().__init__()
        self.steps = steps

    def forward(self, x, state=None):
        queue = (state or []) + [x]
        out = queue[0] if len(queue) > self.steps else torch.zeros_like(x)
        return out, queue[-self.steps:] if self.steps else []


class Leaky(torch.nn.Module):
    """NIR's `LI` (no threshold) or `LIF`, one Euler step of `dt` per call; the state is `v`."""

    def __init__(self, node, dt):
        super().__init__()
        tensor = lambda a: torch.as_tensor(np.asarray(a, np.float64))
        self.rate, self.r, self.v_leak = dt / tensor(node.tau), tensor(node.r), tensor(node.v_leak)
        self.spiking = isinstance(node, nir.LIF)
        if self.spiking:
            self.v_threshold, self.v_reset = tensor(node.v_threshold), tensor(node.v_reset)

    def forward(self, x, state=None):
        v = torch.zeros_like(x, dtype=torch.float64) if state is None else state
        v = v + self.rate * (self.v_leak - v + self.r * x.double())
        if not self.spiking:
            return v, v
        spikes = (v - self.v_threshold >= 0).double()
        return spikes, torch.where(spikes > 0, self.v_reset, v)


def node_map(graph):
    """nirtorch's node map for `graph`: `Delay`, `LIF` and `LI` with the graph's `dt`, and
    `Affine` in float64."""
    dt = float(graph.metadata["dt"])
    affine = lambda node: Affine(node)
    return {
        nir.Delay: lambda node: Delay(int(round(float(np.ravel(node.delay)[0]) / dt))),
        nir.LIF: lambda node: Leaky(node, dt),
        nir.LI: lambda node: Leaky(node, dt),
        nir.Affine: affine,
    }


class Affine(torch.nn.Module):
    def __init__(self, node):
        super().__init__()
        self.weight = torch.as_tensor(np.asarray(node.weight, np.float64))
        self.bias = torch.as_tensor(np.asarray(node.bias, np.float64))

    def forward(self, x):
        return x.double() @ self.weight.T + self.bias
