"""One-command GPU check (`make gpu-check`, or `bash scripts/gpu_check.sh` on a machine with only
python3 + torch 2.11): ours on CUDA against ours on the CPU and against the reference on the same
GPU. Needs no network, make or pip: the binary is carried, and the reference's pure-Python
packages (dcls, spikingjelly) travel in `.gpu-kit/site` (`make gpu-kit`).

Checks, in order (each prints one line; results go to OUT/results.json and OUT/summary.md):
1. without a GPU: `--device cuda` must fail with a clear error, not a panic; then stop (exit 2);
2. CUDA against CPU on the same weights, batch and dropout masks (2x64 SHD network, batch 16):
   output, loss and every gradient, default and exact settings, and one optimizer step;
3. two identical 3-epoch CUDA runs give identical metrics, and a run stopped after 2 epochs and
   resumed equals the uninterrupted one;
4. training step time, ours against the reference (dcls + spikingjelly, cuDNN off) on this GPU,
   SHD and SSC presets, ours with the FFT and the direct convolution; GPU utilisation and peak
   memory while ours runs;
5. one epoch of 8156 generated SHD-size samples, and the 150-epoch time it projects.

Tolerances (float32 on different hardware, a threshold can turn a rounding into a spike):
loss within 1e-4 relative; 99.9% of output elements within 1e-4·max(1, |cpu|); each gradient
within 1e-3 in relative norm; parameters after one step within 1e-4 in relative norm.

Usage: gpu_check.py --bin target/release/snn-delays [--out gpu-check] [--repeats 5]"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXACT = ["--set", "convolution=direct", "--set", "flush_subnormal_taps=false"]
SMALL = ["--set", "n_hidden_neurons=64", "--set", "batch_size=16"]


def run(cmd, check=True):
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise SystemExit(f"FAILED: {' '.join(map(str, cmd))}\n{done.stdout}{done.stderr}")
    return done


class Report:
    def __init__(self, out):
        self.out, self.results, self.lines, self.failures = out, {}, [], 0

    def line(self, ok, text):
        mark = "ok  " if ok else "FAIL"
        self.failures += 0 if ok else 1
        print(f"{mark} {text}", flush=True)
        self.lines.append(f"- {mark.strip()}: {text}")

    def save(self):
        os.makedirs(self.out, exist_ok=True)
        for name, text in [("results.json", json.dumps(self.results, indent=2)), ("summary.md", "\n".join(self.lines) + "\n")]:
            tmp = os.path.join(self.out, name + ".tmp")
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, os.path.join(self.out, name))


def no_gpu(args, report):
    """Without CUDA, `--device cuda` must be a clean error (exit 1, a message, no panic)."""
    done = run([args.bin, "demo", "--preset", "shd", "--set", "n_hidden_neurons=8", "--batch", "2", "--steps", "5",
                "--device", "cuda"], check=False)
    clean = done.returncode == 1 and "CUDA is not available" in done.stderr and "panicked" not in done.stderr
    report.line(clean, f"no CUDA device here: `--device cuda` -> exit {done.returncode}: {done.stderr.strip()}")
    report.results["no_gpu_clean_error"] = clean
    report.save()
    print("no GPU on this machine: nothing else to check", flush=True)
    sys.exit(2 if clean else 1)


def rel_norm(a, b):
    import torch
    return float((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-30))


def parity(args, work, report):
    """CUDA against CPU: forward, loss, gradients (default and exact), one optimizer step."""
    import torch
    from safetensors.torch import load_file, save_file
    config = os.path.join(work, "small.json")
    with open(config, "w") as f:
        f.write(run([args.bin, "config", "--preset", "shd", *SMALL]).stdout)
    cfg = json.load(open(config))
    weights, batch = os.path.join(work, "w.safetensors"), os.path.join(work, "batch.safetensors")
    run([args.bin, "init", "--config", config, "--out", weights])
    gen = torch.Generator().manual_seed(0)
    steps, size, d = 50, 16, cfg["derived"]
    x = (torch.rand(steps, size, d["n_inputs"], 5, generator=gen) < 0.05).sum(-1).float()
    y = torch.randint(0, d["n_outputs"], (size,), generator=gen)
    masks = {f"mask.{l}": torch.nn.functional.dropout(torch.ones(size, 64), cfg["dropout_p"], training=True)
             for l in range(cfg["n_hidden_layers"])}
    save_file({"x": x, "y": y, **masks}, batch)
    for name, sets in [("default", []), ("exact", EXACT)]:
        outs = {}
        for device in ("cpu", "cuda"):
            path = os.path.join(work, f"out-{name}-{device}.safetensors")
            run([args.bin, "forward", "--config", config, *sets, "--weights", weights, "--input", batch, "--out", path,
                 "--grad", "--device", device])
            outs[device] = load_file(path)
        cpu, cuda = outs["cpu"], outs["cuda"]
        loss_rel = abs(float(cuda["loss"]) - float(cpu["loss"])) / max(1.0, abs(float(cpu["loss"])))
        close = ((cuda["output"] - cpu["output"]).abs() <= 1e-4 * cpu["output"].abs().clamp(min=1)).float().mean().item()
        grads = {k: rel_norm(cuda[k], cpu[k]) for k in cpu if k.startswith("grad.")}
        worst = max(grads.items(), key=lambda kv: kv[1])
        ok = loss_rel <= 1e-4 and close >= 0.999 and worst[1] <= 1e-3
        report.results[f"parity_{name}"] = {"loss_rel": loss_rel, "output_close_fraction": close, "grad_rel_norm": grads}
        report.line(ok, f"CUDA vs CPU ({name}): loss rel {loss_rel:.1e}, outputs close {100 * close:.2f}%, "
                        f"worst gradient {worst[0]} rel norm {worst[1]:.1e}")
    replay = os.path.join(work, "replay.safetensors")
    save_file({"e0.b0.x": x, "e0.b0.y": y, **{f"e0.b0.{k}": v for k, v in masks.items()}}, replay)
    params = {}
    for device in ("cpu", "cuda"):
        path = os.path.join(work, f"replay-{device}.safetensors")
        run([args.bin, "replay", "--config", config, "--weights", weights, "--batches", replay, "--out", path, "--device", device])
        params[device] = load_file(path)
    keys = [k for k in params["cpu"] if k.startswith("model.") and params["cpu"][k].is_floating_point()]
    step = {k: rel_norm(params["cuda"][k], params["cpu"][k]) for k in keys}
    worst = max(step.items(), key=lambda kv: kv[1])
    report.results["parity_optimizer_step"] = step
    report.line(worst[1] <= 1e-4, f"one optimizer step, CUDA vs CPU: worst parameter {worst[0]} rel norm {worst[1]:.1e}")


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    for row in rows:
        row.pop("seconds", None)
    return rows


def determinism(args, work, report):
    data = os.path.join(work, "synth")
    run([args.bin, "synth", "--out", data, "--train", "256", "--test", "64", "--classes", "10", "--seed", "1"])
    common = ["train", "--preset", "shd", "--data", data, "--epochs", "3", "--device", "cuda", "--quiet", *SMALL,
              "--set", "max_delay_ms=100"]
    dirs = [os.path.join(work, f"run{i}") for i in range(3)]
    run([args.bin, *common, "--run-dir", dirs[0]])
    run([args.bin, *common, "--run-dir", dirs[1]])
    run([args.bin, *common, "--run-dir", dirs[2], "--stop-after", "2"])
    run([args.bin, *common, "--run-dir", dirs[2], "--resume"])
    same = metrics(dirs[0]) == metrics(dirs[1])
    resumed = metrics(dirs[0]) == metrics(dirs[2])
    report.results["determinism"] = {"identical_runs": same, "resumed_equals_uninterrupted": resumed}
    report.line(same, "two identical 3-epoch CUDA runs: identical metrics")
    report.line(resumed, "stopped after 2 epochs and resumed: equal to the uninterrupted run")


class GpuSampler:
    """Samples nvidia-smi's utilisation and memory every 100 ms while a command runs."""

    def __init__(self):
        self.samples, self.stop = [], threading.Event()

    def __enter__(self):
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()
        return self

    def loop(self):
        while not self.stop.is_set():
            done = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True)
            if done.returncode == 0 and done.stdout.strip():
                util, mem = done.stdout.strip().splitlines()[0].split(",")
                self.samples.append((float(util), float(mem)))
            time.sleep(0.1)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def summary(self):
        if not self.samples:
            return None, None
        return statistics.mean(u for u, _ in self.samples), max(m for _, m in self.samples)


def speed(args, work, report):
    import torch
    from safetensors.torch import save_file
    rows = []
    for preset, size in [("shd", 256), ("ssc", 128)]:
        config = os.path.join(work, f"{preset}.json")
        with open(config, "w") as f:
            f.write(run([args.bin, "config", "--preset", preset]).stdout)
        cfg = json.load(open(config))
        weights, batch = os.path.join(work, f"{preset}-w.safetensors"), os.path.join(work, f"{preset}-b.safetensors")
        run([args.bin, "init", "--config", config, "--out", weights])
        gen = torch.Generator().manual_seed(0)
        d = cfg["derived"]
        x = (torch.rand(100, size, d["n_inputs"], 5, generator=gen) < 0.05).sum(-1).float()
        save_file({"x": x, "y": torch.randint(0, d["n_outputs"], (size,), generator=gen)}, batch)
        timing = ["--weights", weights, "--batch", batch, "--repeats", str(args.repeats), "--warmup", "2"]
        ref = json.loads(run([sys.executable, os.path.join(ROOT, "bench", "reference_step.py"), "--config", config, *timing,
                              "--device", "cuda"]).stdout.strip().splitlines()[-1])
        row = {"preset": preset, "reference_s": statistics.median(ref["seconds"]), "reference_peak_mib": ref.get("peak_cuda_mib")}
        for name, sets in [("fft", []), ("direct", ["--set", "convolution=direct"])]:
            with GpuSampler() as sampler:
                ours = json.loads(run([args.bin, "bench", "--config", config, *sets, *timing, "--device", "cuda"]).stdout
                                  .strip().splitlines()[-1])
            util, memory = sampler.summary()
            row[f"ours_{name}_s"] = statistics.median(ours["seconds"])
            row[f"ours_{name}_ratio"] = row[f"ours_{name}_s"] / row["reference_s"]
            row[f"ours_{name}_gpu_util_pct"], row[f"ours_{name}_gpu_mem_mib"] = util, memory
        rows.append(row)
        report.line(True, f"{preset} step on CUDA: reference {row['reference_s'] * 1e3:.1f} ms; ours fft "
                          f"{row['ours_fft_s'] * 1e3:.1f} ms (ratio {row['ours_fft_ratio']:.2f}, GPU {row['ours_fft_gpu_util_pct']}% busy, "
                          f"{row['ours_fft_gpu_mem_mib']} MiB); ours direct {row['ours_direct_s'] * 1e3:.1f} ms "
                          f"(ratio {row['ours_direct_ratio']:.2f})")
    report.results["speed"] = rows


def full_epoch(args, work, report):
    data = os.path.join(work, "shd-size")
    run([args.bin, "synth", "--out", data, "--train", "8156", "--test", "2264", "--classes", "20", "--noise-rate", "11000",
         "--seed", "0"])
    run_dir = os.path.join(work, "epoch")
    started = time.perf_counter()
    run([args.bin, "train", "--preset", "shd", "--data", data, "--epochs", "150", "--stop-after", "1", "--device", "cuda",
         "--quiet", "--run-dir", run_dir])
    wall = time.perf_counter() - started
    epoch = json.loads(open(os.path.join(run_dir, "metrics.jsonl")).readline())["seconds"]
    report.results["shd_epoch"] = {"epoch_seconds": epoch, "process_seconds": wall, "projected_150_epochs_s": 150 * epoch}
    report.line(150 * epoch < 300, f"SHD preset, one epoch of 8156 + eval of 2264 generated samples: {epoch:.1f} s "
                                   f"(process {wall:.1f} s); 150 epochs project to {150 * epoch / 60:.1f} min (target < 5)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "snn-delays"))
    parser.add_argument("--out", default="gpu-check")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    report = Report(args.out)
    if not os.access(args.bin, os.X_OK):
        raise SystemExit(f"{args.bin} is missing: build it first (make build) and carry it")
    import torch
    report.results["torch"] = torch.__version__
    if not torch.cuda.is_available():
        no_gpu(args, report)
    report.results["gpu"] = torch.cuda.get_device_name(0)
    print(f"GPU: {report.results['gpu']}, torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory() as work:
        for check in (parity, determinism, speed, full_epoch):
            started = time.perf_counter()
            check(args, work, report)
            report.save()
            print(f"     ({check.__name__}: {time.perf_counter() - started:.0f} s)", flush=True)
    print(f"gpu-check: {len(report.lines) - report.failures} passed, {report.failures} failed")
    sys.exit(1 if report.failures else 0)


if __name__ == "__main__":
    main()
