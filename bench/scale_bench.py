"""Data-parallel scaling (`make bench`): the same training run in 1 process and in 2 processes
(`snn-delays launch --nproc 2`, Gloo on loopback) on this machine's cores, in the same run.

The generated delay task of `make run` (2000 train and 500 test samples, `data/synth`), with
per-sample dropout masks (which a multi-process run needs), in two sizes: `make run`'s network
(64 hidden neurons, batch 64) and the SHD preset's (256 hidden neurons, batch 256). The single
process uses every core; each of the 2 ranks gets half of them (launch's default). Figures are
per epoch (training and evaluation), the first epoch excluded as warm-up, medians.

On a machine with 2 cores the two processes share the same cores as the one process, so the
ratio measures the overhead of splitting (gradient and BatchNorm all-reduces, every rank making
the whole batch) rather than a speed-up; on N GPUs each rank has its own device.

Writes bench/scale_results.json and prints a Markdown table.
Usage: scale_bench.py --bin target/release/snn-delays [--data data/synth] [--epochs 3]"""

import argparse
import json
import os
import statistics
import tempfile

from command import run

HERE = os.path.dirname(os.path.abspath(__file__))
SIZES = {
    "make run (64 hidden, batch 64)": ["--set", "n_hidden_neurons=64", "--set", "batch_size=64"],
    "SHD preset (256 hidden, batch 256)": [],
}


def epoch_seconds(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return statistics.median(r["seconds"] for r in records[1:]), records[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--data", default="data/synth")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(HERE, "scale_results.json"))
    args = parser.parse_args()
    if not os.path.exists(os.path.join(args.data, "shd_train.h5")):
        run([args.bin, "synth", "--out", args.data])
    cores = os.cpu_count()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name, settings in SIZES.items():
            train = ["train", "--preset", "shd", "--data", args.data, "--epochs", args.epochs, "--quiet",
                     "--device", "cpu", "--set", "dropout_masks=per_sample", *settings]
            one, two = os.path.join(work, f"{len(rows)}-one"), os.path.join(work, f"{len(rows)}-two")
            run([args.bin, *train, "--run-dir", one, "--threads", cores])
            run([args.bin, "launch", "--nproc", 2, "--", *train, "--run-dir", two])
            (t1, last1), (t2, last2) = epoch_seconds(one), epoch_seconds(two)
            samples = 2000 + 500
            rows.append({
                "size": name,
                "one_process_s": t1,
                "two_processes_s": t2,
                "one_process_samples_per_s": samples / t1,
                "two_processes_samples_per_s": samples / t2,
                "per_process_samples_per_s": samples / t2 / 2,
                "speedup": t1 / t2,
                "valid_acc_one": last1["valid_acc"],
                "valid_acc_two": last2["valid_acc"],
            })
    with open(args.out, "w") as f:
        json.dump({"cores": cores, "epochs": args.epochs, "rows": rows}, f, indent=2)
    print(f"\nData-parallel scaling on {cores} CPU cores (epoch = 2000 train + 500 eval samples; median of epochs 2..{args.epochs})\n")
    print("| network | 1 process s/epoch | 2 processes s/epoch | samples/s, 1 process | samples/s, 2 processes (per process) | 2 vs 1 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['one_process_s']:.2f} | {r['two_processes_s']:.2f} | {r['one_process_samples_per_s']:.0f} "
              f"| {r['two_processes_samples_per_s']:.0f} ({r['per_process_samples_per_s']:.0f}) | {r['speedup']:.2f}x |")


if __name__ == "__main__":
    main()
