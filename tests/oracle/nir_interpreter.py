"""A NIR graph interpreter written from NIR's equations (nir 1.0.8's node definitions), with no
code of ours: it executes an exported `.nir` file on the frames of `snn-delays data export` and
compares with `snn-delays infer --semantics nir --json --scores`.

Execution, step by step with the graph's `dt` (from its metadata), in float64: `Input` gives
the frame; `Delay(d)` gives each channel its input from round(d_c/dt) steps earlier (zero
before the start); `Affine` gives `W·x + b`; `Threshold` gives `[x > θ]`; inputs reaching a
node are summed; `LIF` integrates
`τ·dv/dt = (v_leak − v) + R·I` by Euler, `v ← v + (dt/τ)·(v_leak − v + R·I)`, emits a spike
where `v − v_threshold ≥ 0` and sets `v ← v_reset` there; `LI` integrates the same without
spiking and outputs `v`; `Output` is what reaches it. Nodes are computed in depth-first order
from the input; a node reads the values its sources produced at the same step, except along an
edge that closes a cycle (into a node computed earlier in the step), which carries the previous
step's value (the metadata's `cycles` rule), so a loop takes one step. Each recording is followed by the
metadata's `tail_steps` zero frames; the class scores follow the metadata's `scoring` rule.

Criterion: the same prediction for every sample whose interpreted best class leads the next by
more than MARGIN of the largest score (float64 against the engine's float32 may move a
membrane across the threshold where it is that close), and every class score within
SCORE_TOLERANCE of the sample's largest; at least 95% of the samples must be compared.

`--executor nirtorch` runs the graph in nirtorch 2.6 instead, with the node map of
docs/nirtorch_adapter.py (the modules nirtorch lacks), under the same criterion.

Usage: nir_interpreter.py --nir FILE --frames FRAMES.safetensors --ours INFER.json [--executor E]"""

import argparse
import json
from collections import defaultdict

import nir
import numpy as np
from safetensors.numpy import load_file

from harness import finish

MARGIN = 1e-4
SCORE_TOLERANCE = 1e-4


def step_order(graph):
    """The nodes in depth-first order from the inputs (reverse postorder) and each node's
    sources; an edge into a node on the search's path closes a cycle, and its source's value is
    read from the previous step (the metadata's `cycles` rule)."""
    outgoing, incoming = defaultdict(list), defaultdict(list)
    for a, b in graph.edges:
        outgoing[a].append(b)
        incoming[b].append(a)
    done, postorder = set(), []

    def visit(name):
        done.add(name)
        for target in outgoing[name]:
            if target not in done:
                visit(target)
        postorder.append(name)

    for name in graph.nodes:
        if isinstance(graph.nodes[name], nir.Input) and name not in done:
            visit(name)
    order = postorder[::-1]
    missing = set(graph.nodes) - set(order)
    if missing:
        raise SystemExit(f"nodes {sorted(missing)} cannot be reached from the input")
    return order, incoming


def output_size(node):
    if isinstance(node, nir.Affine):
        return node.weight.shape[0]
    raise SystemExit(f"a cycle closes through {type(node).__name__}; only Affine nodes are expected there")


def run(graph, frames, dt):
    """The value reaching the `Output` node at every step, `(T, n_outputs)`."""
    names, incoming = step_order(graph)
    position = {name: i for i, name in enumerate(names)}
    weights = {n: graph.nodes[n].weight.astype(np.float64) for n in names if isinstance(graph.nodes[n], nir.Affine)}
    delays = {n: np.rint(np.ravel(graph.nodes[n].delay).astype(np.float64) / dt).astype(int)
              for n in names if isinstance(graph.nodes[n], nir.Delay)}
    membranes, history, readout = {}, defaultdict(list), []
    previous = {}
    for t, frame in enumerate(frames):
        values = {}

        def source(s, target):
            if position[s] < position[target]:
                return values[s]
            return previous.get(s, np.zeros(output_size(graph.nodes[s])))

        for name in names:
            node = graph.nodes[name]
            total = sum(source(s, name) for s in incoming[name]) if incoming[name] else None
            if isinstance(node, nir.Input):
                values[name] = frame.astype(np.float64)
            elif isinstance(node, nir.Delay):
                history[name].append(total)
                d = delays[name]
                d = np.broadcast_to(d, total.shape)
                values[name] = np.array([history[name][t - d[c]][c] if t >= d[c] else 0.0 for c in range(total.shape[0])])
            elif isinstance(node, nir.Affine):
                values[name] = weights[name] @ total + node.bias
            elif isinstance(node, nir.Threshold):
                values[name] = (total - node.threshold > 0).astype(np.float64)
            elif isinstance(node, (nir.LIF, nir.LI)):
                v = membranes.get(name, np.zeros_like(total))
                v = v + dt / node.tau * (node.v_leak - v + node.r * total)
                if isinstance(node, nir.LIF):
                    spikes = (v - node.v_threshold >= 0).astype(np.float64)
                    v = np.where(spikes > 0, node.v_reset, v)
                    values[name] = spikes
                else:
                    values[name] = v
                membranes[name] = v
            elif isinstance(node, nir.Output):
                values[name] = total
                readout.append(total)
            else:
                raise SystemExit(f"node {name}: {type(node).__name__} is not interpreted here")
        previous = values
    return np.array(readout)


def run_nirtorch(graph, frames, dt):
    """The same readout from nirtorch 2.6 with the node map of docs/nirtorch_adapter.py."""
    import os
    import sys

    import nirtorch
    import torch

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "docs"))
    from nirtorch_adapter import node_map

    module = nirtorch.nir_to_torch(graph, node_map(graph))
    state, readout = None, []
    with torch.no_grad():
        for frame in frames:
            out, state = module(torch.as_tensor(frame, dtype=torch.float64).unsqueeze(0), state)
            readout.append(out[0].double().numpy())
    return np.array(readout)


def class_scores(readout, scoring):
    if "softmax" in scoring:
        e = np.exp(readout - readout.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).sum(axis=0)
    if "mean" in scoring:
        return readout.mean(axis=0)
    if "max" in scoring:
        return readout.max(axis=0)
    if "number of output spikes" in scoring or "sum over steps of the readout" in scoring:
        return readout.sum(axis=0)
    raise SystemExit(f"unknown scoring rule {scoring!r}")


def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nir", required=True)
    parser.add_argument("--frames", required=True)
    parser.add_argument("--ours", required=True)
    parser.add_argument("--executor", choices=["interpreter", "nirtorch"], default="interpreter",
                        help="this file's interpreter, or nirtorch with docs/nirtorch_adapter.py")
    args = parser.parse_args()
    execute = run if args.executor == "interpreter" else run_nirtorch
    graph = nir.read(args.nir)
    meta = graph.metadata
    dt, tail, scoring = float(meta["dt"]), int(meta["tail_steps"]), text(meta["scoring"])
    frames = load_file(args.frames)
    ours = json.load(open(args.ours))
    failures, compared, worst = [], 0, 0.0
    samples = len(ours["scores"])
    for i in range(samples):
        x = frames[f"x.{i}"]
        x = np.concatenate([x, np.zeros((tail, x.shape[1]), x.dtype)])
        scores = class_scores(execute(graph, x, dt), scoring)
        mine = np.array(ours["scores"][i], np.float64)
        scale = np.abs(scores).max() or 1.0
        worst = max(worst, float(np.abs(mine - scores).max() / scale))
        if np.abs(mine - scores).max() > SCORE_TOLERANCE * scale:
            failures.append(f"sample {i}: scores differ by {np.abs(mine - scores).max() / scale:.2e} of the largest")
        top = np.sort(scores)[::-1]
        if len(top) > 1 and top[0] - top[1] <= MARGIN * scale:
            continue
        compared += 1
        if int(np.argmax(scores)) != ours["predictions"][i]:
            failures.append(f"sample {i}: interpreter class {int(np.argmax(scores))}, engine {ours['predictions'][i]}")
    if compared < 0.95 * samples:
        failures.append(f"only {compared} of {samples} predictions were clear enough to compare")
    order, incoming = step_order(graph)
    position = {name: i for i, name in enumerate(order)}
    loops = sum(1 for a, b in graph.edges if position[a] >= position[b])
    delays = sum(1 for node in graph.nodes.values() if isinstance(node, nir.Delay))
    print(f"{args.executor}: {samples} samples, {compared} predictions compared; scores within {worst:.1e} of the largest "
          f"(dt {dt}, tail {tail} steps, {scoring}); {loops} cycle edges, {delays} Delay nodes")
    finish("NIR interpreter", samples, failures)


if __name__ == "__main__":
    main()
