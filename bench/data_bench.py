"""Data benchmark: samples per second from an SHD-layout HDF5 file to padded batches of 256.

- ours: `snn-delays data bench` (open and read the file, integrate on the grid, bin, shuffle,
  pad), all of the train split, using every core;
- reference: h5py reads each sample, spikingjelly 2.0.0's `_integrate_events_by_fixed_duration`
  (10 ms), binning by 5 (`reshape(T, 140, 5).sum(-1)`), and `pad_sequence_collate` per batch, in
  one process (the reference's DataLoader spreads this over worker processes; count that when
  reading the ratio on a machine with more cores).

The file is generated once by `snn-delays synth` at the SHD train size (8156 samples, about
7,000 spikes each) into data/bench-shd. Both run in this one invocation; the ratio is printed.

Usage: data_bench.py --bin target/release/snn-delays [--samples 8156]"""

import argparse
import json
import os
import subprocess
import sys
import time

import h5py
import numpy as np
import torch
from spikingjelly.datasets.shd import _integrate_events_by_fixed_duration
from spikingjelly.datasets.utils import pad_sequence_collate


def reference(path, batch_size, seed=0):
    start = time.perf_counter()
    with h5py.File(path, "r") as f:
        times, units, labels = f["spikes/times"], f["spikes/units"], f["labels"][:]
        order = np.random.default_rng(seed).permutation(len(labels))
        count = 0
        for b in range(0, len(order), batch_size):
            items = []
            for i in order[b:b + batch_size]:
                frames = _integrate_events_by_fixed_duration({"t": times[i], "x": units[i]}, 10, 700)
                items.append((frames.reshape(frames.shape[0], 140, 5).sum(-1), int(labels[i])))
            x, y, lengths = pad_sequence_collate(items)
            count += len(y)
    return count, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--samples", type=int, default=8156)
    parser.add_argument("--data", default="data/bench-shd")
    args = parser.parse_args()
    path = os.path.join(args.data, "shd_train.h5")
    if not os.path.exists(path):
        subprocess.run([args.bin, "synth", "--out", args.data, "--train", str(args.samples), "--test", "100",
                        "--classes", "20", "--noise-rate", "11000", "--seed", "0"], check=True)
    done = subprocess.run([args.bin, "data", "bench", "--dataset", "shd", "--data", args.data], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(done.stderr)
    ours = json.loads(done.stdout.strip().splitlines()[-1])
    count, seconds = reference(path, 256)
    ref_rate = count / seconds
    with h5py.File(path, "r") as f:
        spikes = sum(len(u) for u in f["spikes/units"][:]) / len(f["labels"])
    print(f"data: {count} samples, {spikes:.0f} spikes per sample, batch 256, grid 10 ms, 5 bins, {os.cpu_count()} cores")
    print(f"  reference (h5py + spikingjelly 2.0.0 + pad_sequence_collate, 1 process): {ref_rate:10.1f} samples/s ({seconds:.2f} s)")
    print(f"  ours (snn-delays data bench, {ours['threads']} threads):                    {ours['samples_per_second']:10.1f} samples/s ({ours['seconds']:.2f} s)")
    print(f"  ratio ours/reference: {ours['samples_per_second'] / ref_rate:.1f}x")


if __name__ == "__main__":
    main()
