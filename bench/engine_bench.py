"""Deployment speed (`make bench`): the pure-Rust integer-delay engine (`snn-delays bench --eval
--engine`) against the tch evaluation path on the same weights and batches, in the same run.

SHD preset (2x256, K 25), the seeded initial weights of `snn-delays init`, a batch of 256
random spike-count samples (5 bins of Bernoulli(0.05) per input, T 100), an evaluation pass of
4 batches, medians of 3 runs after a warm-up, with 1 and 2 threads. The tch side runs with its
default FFT convolution and with the direct dense convolution (`convolution=direct`, the
reference's). Also: the engine's streaming latency per frame (one sample, frame by frame), and
the `delays` file's size against the checkpoint's.

Writes bench/engine_results.json and prints a Markdown table.
Usage: engine_bench.py --bin target/release/snn-delays [--threads 1 2]"""

import argparse
import json
import os
import statistics
import sys
import tempfile

import torch
from safetensors.torch import save_file

from command import run

HERE = os.path.dirname(os.path.abspath(__file__))


def timing(cmd):
    return json.loads(run(cmd).strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default=os.path.join(HERE, "engine_results.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        config, weights, batch, model = (os.path.join(work, n) for n in ("c.json", "w.safetensors", "b.safetensors", "m.safetensors"))
        with open(config, "w") as f:
            f.write(run([args.bin, "config", "--preset", "shd"]))
        run([args.bin, "init", "--config", config, "--out", weights])
        gen = torch.Generator().manual_seed(0)
        x = (torch.rand(100, 256, 140, 5, generator=gen) < 0.05).sum(-1).float()
        save_file({"x": x, "y": torch.randint(0, 20, (256,), generator=gen)}, batch)
        run([args.bin, "export", "--checkpoint", weights, "--config", config, "--format", "delays", "--out", model])
        sizes = {"checkpoint_kib": os.path.getsize(weights) / 1024, "delays_kib": os.path.getsize(model) / 1024}
        for threads in args.threads:
            base = [args.bin, "bench", "--json", "--config", config, "--weights", weights, "--batch", batch, "--eval",
                    "--threads", threads, "--device", "cpu"]
            fft = timing(base)
            direct = timing(base + ["--set", "convolution=direct"])
            engine = timing(base + ["--engine"])
            row = {"threads": threads, "tch_fft_s": statistics.median(fft["seconds"]),
                   "tch_direct_s": statistics.median(direct["seconds"]), "engine_s": statistics.median(engine["seconds"]),
                   "stream_us_per_frame": 1e6 * engine["stream_seconds_per_frame"]}
            row["speedup_vs_fft"] = row["tch_fft_s"] / row["engine_s"]
            row["speedup_vs_direct"] = row["tch_direct_s"] / row["engine_s"]
            rows.append(row)
            print(f"{threads} thread(s): engine {row['engine_s']:.3f} s, tch {row['tch_fft_s']:.3f} s (FFT) "
                  f"{row['tch_direct_s']:.3f} s (direct)", file=sys.stderr)
    results = {"rows": rows, **sizes}
    with open(args.out + ".tmp", "w") as f:
        json.dump(results, f, indent=2)
    os.replace(args.out + ".tmp", args.out)
    print("evaluation pass, SHD preset, 4 x 256 samples; medians of 3 runs; speed-up = tch / engine")
    print("| threads | tch, FFT convolution | tch, direct convolution | engine | speed-up vs FFT | vs direct | streaming, per frame |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['threads']} | {r['tch_fft_s']:.3f} s | {r['tch_direct_s']:.3f} s | {r['engine_s']:.3f} s | "
              f"{r['speedup_vs_fft']:.1f}x | {r['speedup_vs_direct']:.1f}x | {r['stream_us_per_frame']:.0f} us "
              f"({1e6 / r['stream_us_per_frame']:.0f} frames/s) |")
    print(f"model file: delays {sizes['delays_kib']:.0f} KiB, checkpoint {sizes['checkpoint_kib']:.0f} KiB")


if __name__ == "__main__":
    main()
