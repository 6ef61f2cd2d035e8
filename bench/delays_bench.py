"""Delays against no delays on generated tasks (`snn-delays synth`), same network width, epochs,
seed and data within each table. Prints a Markdown table per task of the best test accuracy
(SHD protocol: test doubles as validation) and the final-epoch test accuracy.

- `default` (the data of `make run`; burst onsets within 160 ms): learned feedforward DCLS delays
  (`snn_delays`), fixed random delays (`snn_delays_lr0`) and none (`snn`), 12 epochs.
- `long` (`synth --max-offset-ms 500 --duration-ms 900`: classes differ only in onsets up to
  500 ms apart, twice the feedforward preset's 250 ms delay window): recurrent delays (the
  `delrec-ssc` network on the SHD layout), recurrence without delays
  (`recurrent.learn_delays=false`), feedforward DCLS delays (the `shd` preset) and none, 20
  epochs, every one-cycle schedule peaking at 5e-3.

Usage: delays_bench.py --bin target/release/snn-delays [--tasks default long] [--epochs 12] [--long-epochs 20]"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

WIDTH = ["--set", "n_hidden_neurons=64", "--set", "batch_size=64"]
SHD_LAYOUT = ["--set", "dataset=shd", "--set", "validation=test", "--set", "integration=grid", "--set", "time_step_ms=10"]
RECURRENT = ["--preset", "delrec-ssc", *SHD_LAYOUT, "--set", "lr_w=5e-3"]
LONG_MODELS = (("recurrent delays", RECURRENT),
               ("recurrence without delays", [*RECURRENT, "--set", "recurrent.learn_delays=false"]),
               ("feedforward DCLS delays (250 ms)", ["--preset", "shd"]),
               ("no delays", ["--preset", "shd", "--set", "model_type=snn"]))
DEFAULT_MODELS = tuple((f"`{model}`", ["--preset", "shd", "--set", f"model_type={model}"])
                       for model in ("snn_delays", "snn_delays_lr0", "snn"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--tasks", nargs="+", choices=("default", "long"), default=["default", "long"])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--long-epochs", type=int, default=20)
    parser.add_argument("--data", default="data/synth")
    parser.add_argument("--long-data", default="data/synth-long")
    args = parser.parse_args()
    tasks = {"default": (args.data, [], DEFAULT_MODELS, args.epochs, []),
             "long": (args.long_data, ["--max-offset-ms", "500", "--duration-ms", "900"], LONG_MODELS, args.long_epochs,
                      ["--set", "n_outputs=10"])}
    for task in args.tasks:
        data, synth, models, epochs, extra = tasks[task]
        if not os.path.exists(os.path.join(data, "shd_train.h5")):
            subprocess.run([args.bin, "synth", "--out", data, *synth], check=True)
        rows = [train(args.bin, data, name, [*flags, *WIDTH, *extra], epochs) for name, flags in models]
        print(f"\n{task} generated task, {epochs} epochs, 64 hidden neurons, batch 64, seed 0, {os.cpu_count()} cores")
        print("| model | trainable parameters | best test acc | final test acc | training time |")
        print("|---|---|---|---|---|")
        for name, params, best, final, seconds in rows:
            print(f"| {name} | {params:,} | {100 * best:.2f}% | {100 * final:.2f}% | {seconds:.0f} s |")


def train(binary, data, name, flags, epochs):
    with tempfile.TemporaryDirectory() as run_dir:
        done = subprocess.run([binary, "train", *flags, "--data", data, "--epochs", str(epochs), "--run-dir", run_dir, "--quiet"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(done.stdout + done.stderr)
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
    print(f"{name}: best {100 * summary['best_valid_acc']:.2f}%", file=sys.stderr)
    return name, summary["params"], summary["best_valid_acc"], summary["final"]["valid_acc"], summary["seconds"]


if __name__ == "__main__":
    main()
