"""Runs a `snn-delays export --format netx` file in Lava's CPU simulator through lava-dl's netx
loader (lava-dl 0.6.0, lava-nc 0.10.0; Python 3.10) and compares its decisions with the
engine's (`snn-delays infer --json --scores`, reference semantics).

netx builds a lava-nc `Dense` (or `DelayDense`, with the file's per-synapse delays) and a CUBA
`LIF` per layer. The recording is fed through a `RingBuffer` as graded spikes
(`input_message_bits` 8: the first layer takes spike counts), followed by zero frames; the
output layer's voltage is read by a `Monitor`. Lava adds one step per layer (a synapse's output
arrives on the next step), so the readout of engine step t is Lava's voltage at step t + L
(L layers); it is divided by the voltage scale `2^(6 + e)` of the output layer (e its
`weightExponent`) and scored as the `sum` loss scores (sum over steps of the softmax).

Loihi's fixed-point model (`fixed_pt`, the only one netx's processes have): 8-bit weight
mantissas, 24-bit current and voltage; each layer's voltage is `2^(6 + e)` times ours.

Usage (under Lava's Python): lava_netx_run.py --netx FILE --frames FRAMES.safetensors
       --ours INFER.json --tail STEPS [--limit N]"""

import argparse
import json

import h5py
import numpy as np
from safetensors.numpy import load_file


# Loihi's LIF shifts its synaptic input and threshold left by 6 bits.
VOLTAGE_SHIFT = 6


def run_sample(path, x, steps):
    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer
    from lava.proc.monitor.process import Monitor

    net = netx.hdf5.Network(net_config=path, input_message_bits=8)
    data = np.zeros((x.shape[1], steps))
    data[:, : x.shape[0]] = x.T
    source = RingBuffer(data=data)
    source.s_out.connect(net.inp)
    monitor = Monitor()
    monitor.probe(net.out_layer.neuron.v, steps)
    config = Loihi2SimCfg(select_tag="fixed_pt")
    net.run(condition=RunSteps(num_steps=steps), run_cfg=config)
    voltage = monitor.get_data()[net.out_layer.neuron.name]["v"]
    net.stop()
    return np.asarray(voltage)


def scores_of(readout):
    e = np.exp(readout - readout.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).sum(axis=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--netx", required=True)
    parser.add_argument("--frames", required=True)
    parser.add_argument("--ours", required=True)
    parser.add_argument("--tail", type=int, required=True, help="the network's tail: Σ_l (K_l − 1)//2 steps")
    parser.add_argument("--limit", type=int, default=20)
    args = parser.parse_args()
    with h5py.File(args.netx, "r") as f:
        layers = len(f["layer"])
        exponent = int(f[f"layer/{layers - 1}/weightExponent"][()])
    frames = load_file(args.frames)
    ours = json.load(open(args.ours))
    same, compared = 0, 0
    labels = frames["labels"]
    correct = 0
    for i in range(min(args.limit, len(ours["predictions"]))):
        x = frames[f"x.{i}"]
        voltage = run_sample(args.netx, x, x.shape[0] + args.tail + layers)
        readout = voltage[layers:] / 2.0 ** (VOLTAGE_SHIFT + exponent)
        prediction = int(np.argmax(scores_of(readout)))
        compared += 1
        same += prediction == ours["predictions"][i]
        correct += prediction == int(labels[i])
        print(f"sample {i}: lava {prediction}, engine {ours['predictions'][i]}, label {int(labels[i])}")
    print(f"lava netx (fixed point): {same} of {compared} decisions equal to the engine's; "
          f"accuracy {correct / compared:.3f}, the engine's on the same samples "
          f"{sum(p == int(l) for p, l in zip(ours['predictions'][:compared], labels)) / compared:.3f}")


if __name__ == "__main__":
    main()
