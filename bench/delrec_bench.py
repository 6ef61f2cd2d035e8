"""Speed of the recurrent-delay layers (DelRec): a training step of ours against DelRec's
computation in PyTorch (bench/reference_delrec_step.py, written from the spec), same machine,
threads, weights and batch, each side in its own process: one warm-up, then the median of the
timed repeats; ratio = ours / reference (lower is better). `default` is ours with the fused layer
(`recurrent.buffer=fused`), `presynaptic` its autograd form, `exact` the original's postsynaptic
buffer. Also the libtorch ops one step of ours dispatches.

Rows: `delrec-ssc` (3 recurrent layers of 256, T 250, σ 10, as at epoch 0) and `delrec-shd`
(LIF layer then a recurrent layer of 256, T 100), batch given by --batch-ssc / --batch-shd.
Random spike counts (Bernoulli(0.05)), the weights of `snn-delays init`.

Usage: delrec_bench.py --bin target/release/snn-delays [--threads 2] [--repeats 3]"""

import argparse
import json
import os
import sys
import tempfile

import torch
from safetensors.torch import save_file

from command import run

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS = (("delrec-ssc", "ssc", 250, 140, 35), ("delrec-shd", "shd", 100, 140, 20))
BUFFERS = ("fused", "presynaptic", "postsynaptic")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-ssc", type=int, default=16)
    parser.add_argument("--batch-shd", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for preset, arch, steps, inputs, classes in ROWS:
            batch_size = args.batch_ssc if arch == "ssc" else args.batch_shd
            weights, batch = os.path.join(folder, f"{arch}-w.safetensors"), os.path.join(folder, f"{arch}-b.safetensors")
            run([args.bin, "init", "--preset", preset, "--out", weights])
            x = (torch.rand(steps, batch_size, inputs) < 0.05).float()
            save_file({"x": x, "y": torch.randint(0, classes, (batch_size,))}, batch)
            common = ["--weights", weights, "--batch", batch, "--threads", str(args.threads), "--repeats", str(args.repeats)]
            reference = last_json(run([sys.executable, os.path.join(HERE, "reference_delrec_step.py"), "--arch", arch] + common))
            ours = {buffer: last_json(run([args.bin, "bench", "--preset", preset, "--json", "--set", f"recurrent.buffer={buffer}"] + common))
                    for buffer in BUFFERS}
            rows.append({"preset": preset, "batch": batch_size, "steps": steps, "reference": reference["median_seconds"],
                         **{buffer: ours[buffer]["median_seconds"] for buffer in BUFFERS},
                         **{f"{buffer}_ops": ours[buffer]["per_step"]["ops"] for buffer in BUFFERS},
                         **{f"{buffer}_rss_mib": ours[buffer]["peak_rss_mib"] for buffer in BUFFERS}})
    print(f"\n{args.threads} threads, training step, median of {args.repeats}; seconds (ratio to the reference), ops per step")
    print("| row | reference | ours, fused (default) | ours, presynaptic | ours, postsynaptic (exact) |")
    print("|---|---|---|---|---|")
    for row in rows:
        ref = row["reference"]
        cells = " | ".join(f"{row[b]:.3f} s ({row[b] / ref:.2f}), {row[b + '_ops']} ops" for b in BUFFERS)
        print(f"| {row['preset']}, batch {row['batch']}, T {row['steps']} | {ref:.3f} s | {cells} |")
    with open(os.path.join(HERE, "delrec_results.json"), "w") as f:
        json.dump(rows, f, indent=1)


def last_json(text):
    return json.loads(text.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
