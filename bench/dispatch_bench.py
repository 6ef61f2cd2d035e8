"""Dispatched ops and host reads (`make bench`): what one training step and one evaluation batch
send to libtorch, ours (`snn-delays bench --json`, its RecordFunction observer) against the
reference (bench/reference_step.py --count-ops, PyTorch's profiler on the same events), at the SHD
and SSC presets, on the CPU. On a GPU each dispatched op is about one kernel launch and each host
read a stall until the device catches up (docs/method.md, "Lean by construction").

Ours runs with its defaults (fused neurons, FFT convolution, flushed taps) and with the exact
settings. The batch is T = 100 steps of random spike counts at the preset's batch size, the
weights `snn-delays init`'s. Writes bench/dispatch_results.json and prints a Markdown table, then
our step's ops by kind.

Usage: dispatch_bench.py --bin target/release/snn-delays [--presets shd ssc]"""

import argparse
import json
import os
import sys
import tempfile

from command import run

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))
import tensorfile  # noqa: E402
import torch  # noqa: E402

EXACT = ["--set", "neuron_backend=ops", "--set", "convolution=direct", "--set", "flush_subnormal_taps=false"]
BATCH = {"shd": 256, "ssc": 128}


def prepare(args, work, preset):
    config, weights, batch = (os.path.join(work, f"{preset}.{k}") for k in ("json", "weights", "batch"))
    with open(config, "w") as f:
        f.write(run([args.bin, "config", "--preset", preset]))
    with open(config) as f:
        derived = json.load(f)["derived"]
    run([args.bin, "init", "--config", config, "--out", weights])
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(100, BATCH[preset], derived["n_inputs"], 5, generator=gen) < 0.05).sum(-1).float()
    tensorfile.save({"x": x, "y": torch.randint(0, derived["n_outputs"], (BATCH[preset],), generator=gen)}, batch)
    return ["--config", config, "--weights", weights, "--batch", batch, "--repeats", "1", "--warmup", "0"]


def last_json(text):
    return json.loads(text.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--presets", nargs="+", default=["shd", "ssc"])
    parser.add_argument("--out", default=os.path.join(HERE, "dispatch_results.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for preset in args.presets:
            common = prepare(args, work, preset)
            reference = os.path.join(HERE, "reference_step.py")
            row = {"preset": preset,
                   "reference_step": last_json(run([sys.executable, reference, *common, "--count-ops"]))["per_step"],
                   "reference_eval_batch": last_json(run([sys.executable, reference, *common, "--count-ops", "--eval"]))["per_batch"]}
            for side, sets in [("ours", []), ("exact", EXACT)]:
                ours = last_json(run([args.bin, "bench", "--json", *common, *sets, "--device", "cpu"]))
                ours_eval = last_json(run([args.bin, "bench", "--json", *common, *sets, "--device", "cpu", "--eval"]))
                row[f"{side}_step"], row[f"{side}_eval_batch"] = ours["per_step"], ours_eval["per_batch"]
            rows.append(row)
            print(f"{preset}: ours {row['ours_step']['ops']} ops per step, reference {row['reference_step']['ops']}",
                  file=sys.stderr)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"rows": rows}, f, indent=2)
    os.replace(tmp, args.out)
    print_table(rows)


def print_table(rows):
    print("| preset | what | reference | ours (default) | ratio | ours (exact) | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        for what, key, field in [("training step: ops", "step", "ops"), ("training step: leaf ops", "step", "leaf_ops"),
                                 ("training step: host reads", "step", "host_reads"),
                                 ("eval batch: ops", "eval_batch", "ops"), ("eval batch: host reads", "eval_batch", "host_reads")]:
            ref, ours, exact = (r[f"{side}_{key}"][field] for side in ("reference", "ours", "exact"))
            ratio = lambda value: f"{value / ref:.3f}" if ref else "–"
            print(f"| {r['preset']} | {what} | {ref} | {ours} | {ratio(ours)} | {exact} | {ratio(exact)} |")
    for r in rows:
        kinds = ", ".join(f"{name} {n}" for name, n in r["ours_step"]["by_name"][:12])
        print(f"\n{r['preset']}, our training step by kind (most frequent first): {kinds}; our kernel launches "
              f"{r['ours_step']['kernels']}")


if __name__ == "__main__":
    main()
