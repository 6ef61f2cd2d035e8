"""Learned delays against fixed random delays and no delays, on the generated delay task
(`snn-delays synth`, the data of `make run`): the same network size, epochs, seed and data for
`snn_delays`, `snn_delays_lr0` and `snn`. Prints a Markdown table of the best test accuracy
(SHD protocol: test doubles as validation) and the final-epoch test accuracy.

Usage: delays_bench.py --bin target/release/snn-delays [--epochs 12]"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

SETTINGS = ["--set", "n_hidden_neurons=64", "--set", "batch_size=64"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--data", default="data/synth")
    args = parser.parse_args()
    if not os.path.exists(os.path.join(args.data, "shd_train.h5")):
        subprocess.run([args.bin, "synth", "--out", args.data], check=True)
    rows = []
    with tempfile.TemporaryDirectory() as runs:
        for model in ("snn_delays", "snn_delays_lr0", "snn"):
            run_dir = os.path.join(runs, model)
            done = subprocess.run([args.bin, "train", "--preset", "shd", "--data", args.data, "--epochs", str(args.epochs),
                                   "--set", f"model_type={model}", *SETTINGS, "--run-dir", run_dir, "--quiet"],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(done.stdout + done.stderr)
            with open(os.path.join(run_dir, "summary.json")) as f:
                summary = json.load(f)
            rows.append((model, summary["params"], summary["best_valid_acc"], summary["final"]["valid_acc"], summary["seconds"]))
            print(f"{model}: best {100 * rows[-1][2]:.2f}%", file=sys.stderr)
    print(f"generated delay task, {args.epochs} epochs, 2x64 hidden LIF, batch 64, seed 0, {os.cpu_count()} cores")
    print("| model | trainable parameters | best test acc | final test acc | training time |")
    print("|---|---|---|---|---|")
    for model, params, best, final, seconds in rows:
        print(f"| `{model}` | {params:,} | {100 * best:.2f}% | {100 * final:.2f}% | {seconds:.0f} s |")


if __name__ == "__main__":
    main()
