"""Reads the `netx` and `nir` exports of a run's `last.safetensors` back with h5py and the `nir`
package (`nir.read`, with its type check) and checks them against the checkpoint, from the
reference's eval transform computed here (docs/method.md §4.7, "Deployment"):
delay = K//2 − round_half_even(P) clamped to [0, K−1]; eval weight = W·fl32(1/(1 + 1e-7));
BatchNorm folded as scale = γ/sqrt(var + 1e-5), shift = β − μ·scale; τ in steps from the config.

netx: shapes, every delay, every weight and bias within half a quantisation step (2^−(e+1), e
the stored `weightExponent`), the CUBA decay and threshold. NIR: the graph's edges and delays
reproduce every synapse's delay, and the branch weights every folded weight (within 1e-6 of
the largest), the neurons' τ, R and threshold.

Usage: export_check.py --run RUN_DIR --netx FILE --nir FILE"""

import argparse
import json
import os
from collections import defaultdict

import h5py
import nir
import numpy as np
from safetensors.numpy import load_file

from harness import finish


def expected_layers(run):
    """Per layer: delays and folded weights (out, in), shift (out), τ in steps, threshold."""
    cfg = json.load(open(os.path.join(run, "config.json")))
    state = load_file(os.path.join(run, "last.safetensors"))
    k = cfg["derived"]["kernel_size"]
    scale_x = np.float32(1) / (np.float32(1) + np.float32(1e-7))
    layers, index = [], 0
    n_layers = cfg["n_hidden_layers"] + 1
    for layer in range(n_layers):
        hidden = layer < cfg["n_hidden_layers"]
        w = state[f"model.{index}.weight"][..., 0]
        p = state[f"model.{index}.P"][0, ..., 0]
        delays = (k // 2 - np.clip(np.round(p), -(k // 2), k // 2)).astype(int)
        weights = (w * scale_x).astype(np.float32)
        scale = np.ones(w.shape[0], np.float32)
        shift = np.zeros(w.shape[0], np.float32)
        if hidden:
            g, b = state[f"model.{index + 1}.weight"], state[f"model.{index + 1}.bias"]
            m, v = state[f"model.{index + 1}.running_mean"], state[f"model.{index + 1}.running_var"]
            scale = (np.float32(1) / np.sqrt(v + np.float32(1e-5))) * g
            shift = b - m * scale
        threshold = cfg["v_threshold"] if hidden else cfg["derived"]["output_v_threshold"]
        layers.append({"delays": delays, "weights": weights * scale[:, None], "shift": shift,
                       "tau": cfg["derived"]["tau_steps"], "threshold": threshold})
        index += 4 if hidden else 2
    return cfg, layers


def check_netx(path, layers, failures):
    with h5py.File(path, "r") as f:
        for l, want in enumerate(layers):
            g = f[f"layer/{l}"]
            if g["type"][()].decode("ascii") != "dense":
                failures.append(f"netx layer {l}: type {g['type'][()]}")
            e = int(g["weightExponent"][()])
            weight, delay, bias = g["weight"][()], g["delay"][()], g["bias"][()]
            if weight.shape != want["weights"].shape or int(g["outFeatures"][()]) != weight.shape[0]:
                failures.append(f"netx layer {l}: weight shape {weight.shape}")
                continue
            if not np.array_equal(delay, want["delays"]):
                failures.append(f"netx layer {l}: {np.sum(delay != want['delays'])} delays differ")
            half = 0.5 / 2 ** e + 1e-6
            if np.abs(weight / 2 ** e - want["weights"]).max() > half or np.abs(bias / 2 ** e - want["shift"]).max() > half:
                failures.append(f"netx layer {l}: weights or bias off by more than half a step 2^-{e + 1}")
            n = g["neuron"]
            if n["type"][()].decode("ascii") != "CUBA" or int(n["iDecay"][()]) != 4096:
                failures.append(f"netx layer {l}: neuron {n['type'][()]}")
            if int(n["vDecay"][()]) != round(4096 / want["tau"]):
                failures.append(f"netx layer {l}: vDecay {n['vDecay'][()]} for tau {want['tau']}")
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
        delays = np.full(want["weights"].shape, -1)
        weights = np.zeros(want["weights"].shape)
        bias = np.zeros(want["weights"].shape[0])
        for affine in incoming[neuron]:
            node = graph.nodes[affine]
            source = incoming[affine][0]
            d = 0
            if isinstance(graph.nodes[source], nir.Delay):
                d = int(round(graph.nodes[source].delay[0] / dt))
                source = incoming[source][0]
            if source != previous:
                failures.append(f"nir layer {l}: {affine} is fed by {source}, not {previous}")
            mask = node.weight != 0
            if np.any(delays[mask] >= 0):
                failures.append(f"nir layer {l}: a synapse appears in two branches")
            delays[mask] = d
            weights += node.weight
            bias += node.bias
        nonzero = want["weights"] != 0
        if not np.array_equal(delays[nonzero], want["delays"][nonzero]):
            failures.append(f"nir layer {l}: {np.sum(delays[nonzero] != want['delays'][nonzero])} synapse delays differ")
        scale = np.abs(want["weights"]).max()
        if np.abs(weights - want["weights"]).max() > 1e-6 * scale or np.abs(bias - want["shift"]).max() > 1e-6 * scale:
            failures.append(f"nir layer {l}: weights or bias differ")
        node = graph.nodes[neuron]
        if not np.allclose(node.tau, want["tau"] * dt) or not np.allclose(node.r, want["tau"]):
            failures.append(f"nir layer {l}: tau {node.tau[0]} r {node.r[0]}")
        last = l + 1 == len(layers)
        if last and cfg["loss"] != "spike_count":
            if not isinstance(node, nir.LI):
                failures.append(f"nir output layer is {type(node).__name__}, expected LI")
        elif not isinstance(node, nir.LIF) or not np.allclose(node.v_threshold, want["threshold"]):
            failures.append(f"nir layer {l}: {type(node).__name__} threshold")
        previous = neuron
    if incoming["output"] != [previous]:
        failures.append(f"nir output fed by {incoming['output']}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", required=True)
    parser.add_argument("--netx", required=True)
    parser.add_argument("--nir", required=True)
    args = parser.parse_args()
    cfg, layers = expected_layers(args.run)
    failures = []
    check_netx(args.netx, layers, failures)
    check_nir(args.nir, cfg, layers, failures)
    synapses = sum(l["delays"].size for l in layers)
    print(f"{len(layers)} layers, {synapses} synapses checked in netx and nir")
    finish("export check", 2 * len(layers), failures)


if __name__ == "__main__":
    main()
