"""Reads the `netx` and `nir` exports of a checkpoint back with h5py and the `nir` package
(`nir.read`, with its type check) and checks them against the checkpoint, with every expected
value computed here from the reference's formulas (`reference.derive` for K, τ and the output
threshold; docs/method.md §4.7, "Deployment"), never read from our `config.json`'s derived
section or from the file being checked:
delay = K//2 − round_half_even(P) clamped to [0, K−1], per tap; eval weight = W·fl32(1/(1 + 1e-7));
BatchNorm folded as scale = γ/sqrt(var + 1e-5), shift = β − μ·scale; the leak per step 1/τ
(LIF) or sigmoid(w) (PLIF, from the checkpoint's `w`); the netx weight exponent the largest
e ≤ 10 with max|folded weight|·2^e ≤ 254 (netx's 8-bit range).

netx (single-delay models): shapes, every delay, the stored exponent, every weight and bias
within half a quantisation step 2^−(e+1), the CUBA decays and threshold mantissa. NIR: summed
per delay, the branches' weights reproduce every tap's folded weight at its delay times
τ_s = 1/leak (within 1e-6 of the largest), the biases τ_s times the shift; the neurons' τ
(τ_s·dt), R = 1, threshold and kind; every tensor float32; `dt` in the graph's metadata.

Usage: export_check.py --config CONFIG.json --checkpoint FILE [--netx FILE] [--nir FILE]"""

import argparse
import json
from collections import defaultdict

import h5py
import nir
import numpy as np
from safetensors.numpy import load_file

from harness import finish
from reference import derive

MAX_EXPONENT = 10


def expected_layers(config, checkpoint):
    """Per layer: `taps`, {delay: folded weights (out, in)}; `shift` (out); the leak per step;
    the threshold; the netx exponent."""
    cfg = json.load(open(config))
    d = derive(cfg)
    state = load_file(checkpoint)
    k = d["kernel_size"]
    scale_x = np.float32(1) / (np.float32(1) + np.float32(1e-7))
    layers, index = [], 0
    for layer in range(cfg["n_hidden_layers"] + 1):
        hidden = layer < cfg["n_hidden_layers"]
        w, p = state[f"model.{index}.weight"], state[f"model.{index}.P"][0]
        scale = np.ones(w.shape[0], np.float32)
        shift = np.zeros(w.shape[0], np.float32)
        if hidden:
            g, b = state[f"model.{index + 1}.weight"], state[f"model.{index + 1}.bias"]
            m, v = state[f"model.{index + 1}.running_mean"], state[f"model.{index + 1}.running_var"]
            scale = (np.float32(1) / np.sqrt(v + np.float32(1e-5))) * g
            shift = b - m * scale
        taps = defaultdict(lambda: np.zeros(w.shape[:2], np.float64))
        for j in range(w.shape[2]):
            delays = (k // 2 - np.clip(np.round(p[..., j]), -(k // 2), k // 2)).astype(int)
            folded = (w[..., j] * scale_x).astype(np.float32) * scale[:, None]
            for delay in np.unique(delays):
                taps[int(delay)] += np.where(delays == delay, folded, 0)
        rate = state.get(f"model.{index + (2 if hidden else 1)}.w")
        leak = float(1 / (1 + np.exp(-np.float64(rate)))) if cfg["neuron"] == "plif" else 1 / d["tau_steps"]
        largest = max(np.abs(sum(taps.values())).max(), 0)
        exponent = next(e for e in range(MAX_EXPONENT, -1, -1) if largest * 2.0 ** e <= 254)
        layers.append({"taps": dict(taps), "shift": shift, "leak": leak, "exponent": exponent,
                       "threshold": cfg["v_threshold"] if hidden else d["output_v_threshold"]})
        index += 4 if hidden else 2
    return cfg, layers


def check_netx(path, layers, failures):
    with h5py.File(path, "r") as f:
        for l, want in enumerate(layers):
            g = f[f"layer/{l}"]
            if g["type"][()].decode("ascii") != "dense":
                failures.append(f"netx layer {l}: type {g['type'][()]}")
            e = int(g["weightExponent"][()])
            if e != want["exponent"]:
                failures.append(f"netx layer {l}: weight exponent {e}, expected {want['exponent']}")
            weight, delay, bias = g["weight"][()], g["delay"][()], g["bias"][()]
            folded = sum(want["taps"].values())
            if weight.shape != folded.shape or int(g["outFeatures"][()]) != weight.shape[0]:
                failures.append(f"netx layer {l}: weight shape {weight.shape}")
                continue
            delays = np.zeros(folded.shape, int)
            for d, w in want["taps"].items():
                delays[w != 0] = d
            nonzero = folded != 0
            if not np.array_equal(delay[nonzero], delays[nonzero]):
                failures.append(f"netx layer {l}: {np.sum(delay[nonzero] != delays[nonzero])} delays differ")
            half = 0.5 / 2 ** e + 1e-6
            if np.abs(weight / 2 ** e - folded).max() > half or np.abs(bias / 2 ** e - want["shift"]).max() > half:
                failures.append(f"netx layer {l}: weights or bias off by more than half a step 2^-{e + 1}")
            n = g["neuron"]
            if n["type"][()].decode("ascii") != "CUBA" or int(n["iDecay"][()]) != 4096:
                failures.append(f"netx layer {l}: neuron {n['type'][()]}")
            if int(n["vDecay"][()]) != round(4096 * want["leak"]):
                failures.append(f"netx layer {l}: vDecay {n['vDecay'][()]} for a leak of {want['leak']}")
            if int(n["vThMant"][()]) != min(round(want["threshold"] * 2 ** e), 2 ** 17 - 1):
                failures.append(f"netx layer {l}: vThMant {n['vThMant'][()]}")


def check_nir(path, cfg, layers, failures):
    graph = nir.read(path)
    dt = cfg["time_step_ms"] / 1000
    incoming = defaultdict(list)
    for a, b in graph.edges:
        incoming[b].append(a)
    previous = "input"
    for l, want in enumerate(layers):
        neuron = f"layer{l}.neuron"
        branches, bias = defaultdict(float), 0.0
        for affine in incoming[neuron]:
            node = graph.nodes[affine]
            source = incoming[affine][0]
            d = 0
            if isinstance(graph.nodes[source], nir.Delay):
                d = int(round(graph.nodes[source].delay[0] / dt))
                source = incoming[source][0]
            if source != previous:
                failures.append(f"nir layer {l}: {affine} is fed by {source}, not {previous}")
            branches[d] = branches[d] + node.weight
            bias = bias + node.bias
        steps = 1 / want["leak"]
        scale = steps * max(np.abs(w).max() for w in want["taps"].values())
        for d in set(branches) | set(want["taps"]):
            got, expected = branches.get(d, 0.0), steps * want["taps"].get(d, 0.0)
            if np.abs(np.asarray(got) - expected).max() > 1e-6 * scale:
                failures.append(f"nir layer {l}: the weights at delay {d} differ from tau_s times the folded weights")
        if np.abs(bias - steps * want["shift"]).max() > 1e-6 * scale:
            failures.append(f"nir layer {l}: bias differs from tau_s times the folded shift")
        node = graph.nodes[neuron]
        if not np.allclose(node.tau, steps * dt) or not np.all(node.r == 1):
            failures.append(f"nir layer {l}: tau {node.tau[0]} r {node.r[0]}, expected {steps * dt} and 1")
        last = l + 1 == len(layers)
        if last and cfg["loss"] != "spike_count":
            if not isinstance(node, nir.LI):
                failures.append(f"nir output layer is {type(node).__name__}, expected LI")
        elif not isinstance(node, nir.LIF) or not np.allclose(node.v_threshold, want["threshold"]):
            failures.append(f"nir layer {l}: {type(node).__name__} threshold")
        previous = neuron
    if incoming["output"] != [previous]:
        failures.append(f"nir output fed by {incoming['output']}")
    with h5py.File(path, "r") as f:
        kinds = {str(f["node/nodes"][n][k].dtype) for n in f["node/nodes"] for k in f["node/nodes"][n]
                 if k not in ("type", "shape")}
    if kinds != {"float32"}:
        failures.append(f"nir tensors are {sorted(kinds)}, expected float32 only")
    if not np.isclose(float(graph.metadata.get("dt", -1)), dt):
        failures.append(f"nir metadata dt {graph.metadata.get('dt')}, expected {dt}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--netx")
    parser.add_argument("--nir")
    args = parser.parse_args()
    cfg, layers = expected_layers(args.config, args.checkpoint)
    failures = []
    if args.netx:
        check_netx(args.netx, layers, failures)
    if args.nir:
        check_nir(args.nir, cfg, layers, failures)
    taps = sum(int((w != 0).sum()) for l in layers for w in l["taps"].values())
    formats = [name for name in ("netx", "nir") if getattr(args, name)]
    print(f"{len(layers)} layers, {taps} taps checked in {' and '.join(formats)}")
    finish("export check", len(formats) * len(layers), failures)


if __name__ == "__main__":
    main()
