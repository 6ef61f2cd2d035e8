"""Speed: ours against the PyTorch reference in the same run, on the same machine, threads, data
and weights (`make bench`). Every row runs each side in its own process, one warm-up then at
least three timed repeats, and reports the median; ratio = ours / reference (lower is better).

Rows (issue 7's table):
- training step, SHD preset (2x256, batch 256, T 100), sigma at its initial value (12);
- the same with sigma at its final value (0.23): the kernel's far taps are subnormal;
- training step, 2x64 hidden, batch 64 (op-bound);
- training step, SSC preset (3x512, batch 128, T 100);
- evaluation pass with integer delays, SHD preset, 4 batches of 256;
- whole epoch, loading included: 1024 generated SHD-size samples (`snn-delays synth`), one
  process each: open, frame, init, train 1 epoch, evaluate on the test file;
- peak resident memory of that whole-epoch process.

Ours runs with its defaults (fused neurons, FFT convolution, flushed subnormal taps); the
`exact` column times ours with `neuron_backend=ops convolution=direct flush_subnormal_taps=false`
(the bitwise path). Batches are random spike counts (5 bins of Bernoulli(0.05) per input), the
weights `snn-delays init` of each configuration, shared by both sides through files.

Writes bench/results.json and prints a Markdown table. Usage:
speed_bench.py --bin target/release/snn-delays [--threads 1 2] [--repeats 3] [--rows ...]"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
EXACT = ["neuron_backend=ops", "convolution=direct", "flush_subnormal_taps=false"]
WRAPPER = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); "
           "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
           "s = time.perf_counter() - t; sys.stderr.write(p.stderr); sys.stdout.write(p.stdout); "
           "print(json.dumps({'rc': p.returncode, 'wall': s, 'rss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))")

STEP_ROWS = {
    "shd_step_sigma_init": ("SHD preset (2x256, batch 256, T 100): training step, sigma initial", "shd", [], 256, None, False),
    "shd_step_sigma_final": ("the same, sigma final (0.23)", "shd", [], 256, 0.23, False),
    "small_step": ("2x64 hidden, batch 64: training step", "shd", ["n_hidden_neurons=64", "batch_size=64"], 64, None, False),
    "ssc_step": ("SSC preset (3x512, batch 128, T 100): training step", "ssc", [], 128, None, False),
    "eval_pass": ("evaluation pass, integer delays (SHD preset, 4 x 256)", "shd", [], 256, None, True),
}


def run(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def last_json(text):
    return json.loads(text.strip().splitlines()[-1])


def prepare(args, work, preset, sets, batch):
    name = f"{preset}-" + "-".join(sets).replace("=", "") + f"-b{batch}"
    paths = {k: os.path.join(work, f"{name}.{k}") for k in ("json", "weights", "batch")}
    if not os.path.exists(paths["json"]):
        cfg = json.loads(run([args.bin, "config", "--preset", preset, *[a for s in sets for a in ("--set", s)]]))
        with open(paths["json"], "w") as f:
            json.dump(cfg, f)
        run([args.bin, "init", "--config", paths["json"], "--out", paths["weights"]])
        gen = torch.Generator().manual_seed(0)
        d = cfg["derived"]
        x = (torch.rand(args.steps, batch, d["n_inputs"], 5, generator=gen) < 0.05).sum(-1).float()
        y = torch.randint(0, d["n_outputs"], (batch,), generator=gen)
        save_file({"x": x, "y": y}, paths["batch"])
    return paths


def step_times(args, paths, sigma, evaluate, threads, side):
    common = ["--weights", paths["weights"], "--batch", paths["batch"], "--repeats", str(args.repeats), "--threads", str(threads)]
    common += ["--sigma", str(sigma)] if sigma is not None else []
    common += ["--eval"] if evaluate else []
    if side == "reference":
        cmd = [sys.executable, os.path.join(HERE, "reference_step.py"), "--config", paths["json"], *common]
    else:
        sets = [a for s in (EXACT if side == "exact" else []) for a in ("--set", s)]
        cmd = [args.bin, "bench", "--json", "--config", paths["json"], *sets, "--device", "cpu", *common]
    result = last_json(run(cmd))
    return statistics.median(result["seconds"]), result["peak_rss_mib"]


def epoch_times(args, work, threads, side):
    data = os.path.join(work, "epoch-data")
    if not os.path.exists(os.path.join(data, "shd_train.h5")):
        run([args.bin, "synth", "--out", data, "--train", "1024", "--test", "256", "--classes", "20",
             "--noise-rate", "11000", "--seed", "0"])
    config = os.path.join(work, "epoch.json")
    with open(config, "w") as f:
        f.write(run([args.bin, "config", "--preset", "shd"]))
    # the file's `derived` matches its 150 epochs; `--epochs 1` then overrides both
    walls, peaks = [], []
    for repeat in range(args.repeats):
        if side == "reference":
            cmd = [sys.executable, os.path.join(HERE, "reference_epoch.py"), "--config", config, "--data", data,
                   "--threads", str(threads)]
        else:
            run_dir = os.path.join(work, f"run-{side}-{threads}-{repeat}")
            sets = [a for s in (EXACT if side == "exact" else []) for a in ("--set", s)]
            cmd = [args.bin, "train", "--config", config, *sets, "--data", data, "--epochs", "1", "--device", "cpu",
                   "--threads", str(threads), "--run-dir", run_dir, "--quiet"]
        measured = last_json(run([sys.executable, "-c", WRAPPER, *cmd]))
        if measured["rc"] != 0:
            sys.exit(f"{' '.join(cmd)} failed")
        walls.append(measured["wall"])
        peaks.append(measured["rss"])
    return statistics.median(walls), max(peaks)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rows", nargs="+", default=[*STEP_ROWS, "epoch"])
    parser.add_argument("--out", default=os.path.join(HERE, "results.json"))
    args = parser.parse_args()
    if args.repeats < 3:
        sys.exit("--repeats must be at least 3 (medians of at least three runs)")
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "cpu": cpu_name(), "repeats": args.repeats, "rows": []}
    with tempfile.TemporaryDirectory() as work:
        for threads in args.threads:
            for key in args.rows:
                sides = ("reference", "ours", "exact")
                if key == "epoch":
                    label = "whole epoch, loading included (1024 SHD-size samples)"
                    measured = {side: epoch_times(args, work, threads, side) for side in sides}
                else:
                    label, preset, sets, batch, sigma, evaluate = STEP_ROWS[key]
                    paths = prepare(args, work, preset, sets, batch)
                    measured = {side: step_times(args, paths, sigma, evaluate, threads, side) for side in sides}
                row = {"row": key, "label": label, "threads": threads,
                       **{f"{side}_s": measured[side][0] for side in sides},
                       **{f"{side}_peak_mib": measured[side][1] for side in sides}}
                row["ratio"] = row["ours_s"] / row["reference_s"]
                row["exact_ratio"] = row["exact_s"] / row["reference_s"]
                results["rows"].append(row)
                print(f"{threads} thread(s) {key}: ours {row['ours_s']:.3f} s, reference {row['reference_s']:.3f} s, "
                      f"ratio {row['ratio']:.2f}", file=sys.stderr)
                if key == "epoch":
                    results["rows"].append({"row": "peak_memory", "label": "peak resident memory, whole epoch (MiB)",
                                            "threads": threads, "ours": row["ours_peak_mib"],
                                            "reference": row["reference_peak_mib"], "exact": row["exact_peak_mib"],
                                            "ratio": row["ours_peak_mib"] / row["reference_peak_mib"],
                                            "exact_ratio": row["exact_peak_mib"] / row["reference_peak_mib"]})
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=2)
    os.replace(tmp, args.out)
    print_table(results)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def print_table(results):
    print(f"CPU: {results['cpu']}, {os.cpu_count()} cores; medians of {results['repeats']} runs; "
          "ratio = ours / reference (lower is faster)")
    print("| row | threads | reference | ours (default) | ratio | ours (exact path) | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in results["rows"]:
        if r["row"] == "peak_memory":
            print(f"| {r['label']} | {r['threads']} | {r['reference']:.0f} MiB | {r['ours']:.0f} MiB | {r['ratio']:.2f} | "
                  f"{r['exact']:.0f} MiB | {r['exact_ratio']:.2f} |")
        else:
            print(f"| {r['label']} | {r['threads']} | {r['reference_s']:.3f} s | {r['ours_s']:.3f} s | {r['ratio']:.2f} | "
                  f"{r['exact_s']:.3f} s | {r['exact_ratio']:.2f} |")


if __name__ == "__main__":
    main()
