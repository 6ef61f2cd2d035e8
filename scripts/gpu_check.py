"""The GPU check (`make gpu-check`, or `bash scripts/gpu_check.sh` on a machine with only python3 +
torch 2.11): ours on CUDA against ours on the CPU and against the reference on the same GPU.

Needs no network, make, pip, numpy or safetensors: the binary is carried, tensors files are read and
written by scripts/tensorfile.py, and the reference's pure-Python packages (dcls, spikingjelly,
loguru) travel in `.gpu-kit/site` (`make gpu-kit`), searched after the interpreter's own. The
reference itself needs numpy (spikingjelly imports it): without it, its rows are skipped and say so.

Every section runs under its own time limit (and the whole check under --budget), records `ok`,
`failed` or `skipped` with the reason, and the next one runs whatever happened; results.json,
summary.md and log.txt under --out are rewritten as each section ends. Sections, in order:
- environment: torch, the GPU and its driver, `ldd` of the binary, its size, which NVRTC it loads
  and whether its fused neuron kernel passed the self-check (`snn-delays devices`);
- startup: the time to the end of the first training step, and the neuron backend in use;
- nccl: a one-rank NCCL group on each GPU (an all-reduce and a broadcast);
- parity: CUDA against the CPU on the same weights, batch and dropout masks: output, loss and every
  gradient, LIF and PLIF, fused and op-by-op neurons, default and exact settings; one optimizer
  step;
- determinism: two identical 3-epoch runs agree, and a run stopped after 2 epochs and resumed
  equals the uninterrupted one;
- dispatch: libtorch ops and host reads per training step and evaluation batch, ours and the
  reference's, SHD and SSC presets;
- step_times: training step, ours (FFT + fused neurons; direct convolution + cuDNN) and the
  reference (cuDNN off, as its main.py), SHD and SSC presets, with GPU utilisation and peak
  memory (nvidia-smi, every 100 ms);
- recurrent: recurrent delays (DelRec): a 2-epoch `delrec-ssc` run on the device against the same
  run on the CPU (per-epoch training losses within 1e-3 relative; on CUDA the fused layer must
  run its step kernels, which check themselves against the CPU before use), and a training step
  of ours (fused and postsynaptic layers) and of DelRec's computation in PyTorch on the device;
- epoch: one SHD-size epoch (8156 + 2264 generated samples) and the 150-epoch time it projects.

`--device cpu` (the default without CUDA) is the dry run: the same sections on the CPU at small
sizes, those that need CUDA skipped, plus a check that `--device cuda` fails cleanly. Exit 0 when
no section failed, 1 otherwise.

Tolerances, CUDA against CPU (float32 on different hardware; a rounding can move a membrane across
the threshold): loss within 1e-4 relative; 99.9% of output elements within 1e-4·max(1, |cpu|); each
gradient within 1e-3 in relative norm; parameters after one step within 1e-4 in relative norm.

Usage: gpu_check.py --bin target/release/snn-delays [--out gpu-check] [--device auto|cuda|cpu]
       [--budget 480] [--repeats 5] [--sections NAME ...]"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
if os.environ.get("SNN_GPU_KIT"):
    sys.path.append(os.environ["SNN_GPU_KIT"])

import torch  # noqa: E402
import tensorfile  # noqa: E402

EXACT = ["--set", "convolution=direct", "--set", "flush_subnormal_taps=false"]
LIMITS = {"environment": 60, "startup": 120, "nccl": 60, "parity": 150, "determinism": 150, "dispatch": 150,
          "step_times": 240, "recurrent": 150, "epoch": 150, "no_cuda_error": 30}


class Skip(Exception):
    """A section that cannot run here; the message says why."""


class Failed(Exception):
    """A section whose check did not hold; the message says what was seen."""


class Check:
    """Runs the sections, keeps their records and writes them under `out` as they come."""

    def __init__(self, args):
        self.args, self.out, self.records = args, args.out, []
        self.results = {"device": args.device, "torch": torch.__version__, "sections": {}}
        self.started = time.monotonic()
        os.makedirs(self.out, exist_ok=True)
        self.log_path = os.path.join(self.out, "log.txt")
        open(self.log_path, "w").close()
        self.deadline = None

    def log(self, text):
        with open(self.log_path, "a") as f:
            f.write(text.rstrip("\n") + "\n")

    def remaining(self):
        return min(self.deadline, self.started + self.args.budget) - time.monotonic()

    def run(self, cmd, check=True, env=None):
        """Runs a command within the section's time left; its output goes to the log."""
        cmd = [str(c) for c in cmd]
        left = self.remaining()
        if left <= 1:
            raise Failed("out of time before running " + " ".join(cmd[:3]))
        self.log("$ " + " ".join(cmd))
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=left, env=env)
        except subprocess.TimeoutExpired:
            raise Failed(f"timed out: {' '.join(cmd[:4])} ...")
        self.log(done.stdout[-4000:] + done.stderr[-4000:])
        if check and done.returncode != 0:
            raise Failed(f"`{' '.join(cmd[:4])} ...` exited {done.returncode}: {(done.stderr or done.stdout).strip()[-600:]}")
        return done

    def section(self, name, body):
        limit = LIMITS[name]
        self.deadline = time.monotonic() + limit
        started = time.monotonic()
        record = {"section": name}
        try:
            if self.remaining() <= 1:
                raise Skip(f"the check's budget of {self.args.budget} s is spent")
            with tempfile.TemporaryDirectory() as work:
                record["detail"] = body(self, work)
            record["status"] = "ok"
        except Skip as why:
            record.update(status="skipped", reason=str(why))
        except Failed as why:
            record.update(status="failed", reason=str(why))
        except Exception as error:  # a bug in a section must not stop the others
            record.update(status="failed", reason=f"{type(error).__name__}: {error}")
            self.log(traceback.format_exc())
        record["seconds"] = round(time.monotonic() - started, 1)
        self.records.append(record)
        self.results["sections"][name] = record
        line = f"{record['status']:<7} {name} ({record['seconds']} s)"
        if "reason" in record:
            line += f": {record['reason']}"
        elif isinstance(record.get("detail"), dict) and record["detail"].get("summary"):
            line += f": {record['detail']['summary']}"
        print(line, flush=True)
        self.save()

    def save(self):
        counts = {s: sum(r["status"] == s for r in self.records) for s in ("ok", "failed", "skipped")}
        self.results["counts"] = counts
        lines = [f"# GPU check ({self.args.device}, torch {torch.__version__})", ""]
        lines += [f"- {r['status']}: {r['section']} ({r['seconds']} s)" + (f": {r['reason']}" if "reason" in r else "")
                  + (f": {r['detail']['summary']}" if isinstance(r.get("detail"), dict) and r["detail"].get("summary") else "")
                  for r in self.records]
        for name, text in [("results.json", json.dumps(self.results, indent=2)), ("summary.md", "\n".join(lines) + "\n")]:
            tmp = os.path.join(self.out, name + ".tmp")
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, os.path.join(self.out, name))


def cuda(check):
    return check.args.device == "cuda"


def needs_cuda(check):
    if not cuda(check):
        raise Skip("needs CUDA (this is the CPU dry run)")


def last_json(text):
    return json.loads(text.strip().splitlines()[-1])


def write_config(check, work, name, preset, sets):
    path = os.path.join(work, f"{name}.json")
    with open(path, "w") as f:
        f.write(check.run([check.args.bin, "config", "--preset", preset, *sets]).stdout)
    with open(path) as f:
        return path, json.load(f)


def write_batch(path, cfg, steps, size, masks=0):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    d = cfg["derived"]
    x = (torch.rand(steps, size, d["n_inputs"], 5, generator=gen) < 0.05).sum(-1).float()
    y = torch.randint(0, d["n_outputs"], (size,), generator=gen)
    tensors = {"x": x, "y": y}
    for layer in range(masks):
        tensors[f"mask.{layer}"] = torch.nn.functional.dropout(torch.ones(size, cfg["n_hidden_neurons"]), cfg["dropout_p"],
                                                               training=True)
    tensorfile.save(tensors, path)
    return tensors


def sizes(check):
    """Presets, batch sizes and steps: SHD and SSC at full size on CUDA, a small SHD network in
    the dry run (which checks the code paths, not the figures)."""
    if cuda(check):
        return [("shd", [], 256, 100), ("ssc", [], 128, 100)]
    return [("shd", ["--set", "n_hidden_neurons=16"], 4, 20)]


def environment(check, work):
    detail = {"python": sys.version.split()[0], "cuda_available": torch.cuda.is_available(),
              "binary_mib": round(os.path.getsize(check.args.bin) / 2**20, 1)}
    if torch.cuda.is_available():
        detail["gpu"] = torch.cuda.get_device_name(0)
        smi = check.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"], check=False) \
            if which("nvidia-smi") else None
        detail["nvidia_smi"] = smi.stdout.strip() if smi is not None and smi.returncode == 0 else None
    ldd = check.run(["ldd", check.args.bin], check=False)
    missing = [line.strip() for line in ldd.stdout.splitlines() if "not found" in line]
    detail["ldd_torch"] = [line.strip() for line in ldd.stdout.splitlines() if "torch" in line or "c10" in line]
    devices = last_json(check.run([check.args.bin, "devices"]).stdout)
    detail["devices"] = devices
    if missing:
        raise Failed("libraries not found: " + "; ".join(missing))
    if cuda(check) and not all(g.get("fused_kernel") for g in devices["gpus"]):
        raise Failed("the fused kernel is not used on every GPU: " + "; ".join(str(g.get("fused_kernel_note")) for g in devices["gpus"]))
    detail["summary"] = f"{detail.get('gpu', 'no GPU')}; {devices['nvrtc']}; binary {detail['binary_mib']} MiB"
    return detail


def which(program):
    return any(os.access(os.path.join(d, program), os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep))


def bench(check, config, weights, batch, device, extra=(), repeats=None):
    repeats = repeats or (check.args.repeats if cuda(check) else 1)
    cmd = [check.args.bin, "bench", "--json", "--config", config, "--weights", weights, "--batch", batch,
           "--repeats", repeats, "--warmup", 1, "--device", device, *extra]
    return last_json(check.run(cmd).stdout)


def prepared(check, work, preset, sets, size, steps, name=None):
    name = name or preset
    config, cfg = write_config(check, work, name, preset, sets)
    weights, batch = os.path.join(work, f"{name}-w.safetensors"), os.path.join(work, f"{name}-b.safetensors")
    check.run([check.args.bin, "init", "--config", config, "--out", weights])
    write_batch(batch, cfg, steps, size)
    return config, weights, batch


def startup(check, work):
    preset, sets, size, steps = sizes(check)[0]
    config, weights, batch = prepared(check, work, preset, sets, size, steps)
    ours = bench(check, config, weights, batch, check.args.device, repeats=1)
    detail = {k: ours[k] for k in ("startup_seconds", "neuron_backend", "backend_note", "median_seconds")}
    if cuda(check) and ours["neuron_backend"] != "fused":
        raise Failed(f"the fused neuron kernel is not used: {ours['backend_note']}")
    detail["summary"] = f"first step after {ours['startup_seconds']:.2f} s, {ours['neuron_backend']} neurons"
    return detail


def nccl(check, work):
    needs_cuda(check)
    devices = last_json(check.run([check.args.bin, "devices", "--collectives"]).stdout)
    outcomes = [g.get("nccl_group_of_one") for g in devices["gpus"]]
    if not outcomes or any(o != "ok" for o in outcomes):
        raise Failed(f"one-rank NCCL groups: {outcomes}")
    return {"groups": outcomes, "summary": f"{len(outcomes)} one-rank NCCL group(s): all-reduce and broadcast ok"}


def rel_norm(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-30))


def parity(check, work):
    needs_cuda(check)
    rows, worst_overall = {}, []
    for neuron in ("lif", "plif"):
        sets = ["--set", "n_hidden_neurons=64", "--set", "batch_size=16", "--set", f"neuron={neuron}"]
        config, cfg = write_config(check, work, f"small-{neuron}", "shd", sets)
        weights, batch = os.path.join(work, f"w-{neuron}.safetensors"), os.path.join(work, f"b-{neuron}.safetensors")
        check.run([check.args.bin, "init", "--config", config, "--out", weights])
        tensors = write_batch(batch, cfg, 50, 16, masks=cfg["n_hidden_layers"])
        for name, extra in [("fused", []), ("ops", ["--set", "neuron_backend=ops"]), ("exact", EXACT + ["--set", "neuron_backend=ops"])]:
            outs = {}
            for device in ("cpu", "cuda"):
                path = os.path.join(work, f"out-{neuron}-{name}-{device}.safetensors")
                check.run([check.args.bin, "forward", "--config", config, *extra, "--weights", weights, "--input", batch,
                           "--out", path, "--grad", "--device", device])
                outs[device] = tensorfile.load(path)
            cpu, gpu = outs["cpu"], outs["cuda"]
            loss_rel = abs(float(gpu["loss"]) - float(cpu["loss"])) / max(1.0, abs(float(cpu["loss"])))
            close = ((gpu["output"] - cpu["output"]).abs() <= 1e-4 * cpu["output"].abs().clamp(min=1)).float().mean().item()
            grads = {k: rel_norm(gpu[k], cpu[k]) for k in cpu if k.startswith("grad.")}
            worst = max(grads.items(), key=lambda kv: kv[1])
            ok = loss_rel <= 1e-4 and close >= 0.999 and worst[1] <= 1e-3
            rows[f"{neuron}-{name}"] = {"loss_rel": loss_rel, "output_close_fraction": close, "worst_grad": worst, "ok": ok}
            worst_overall.append((worst[1], f"{neuron}-{name} {worst[0]}"))
        replay = os.path.join(work, f"replay-{neuron}.safetensors")
        tensorfile.save({f"e0.b0.{k}": v for k, v in tensors.items()}, replay)
        params = {}
        for device in ("cpu", "cuda"):
            path = os.path.join(work, f"replayed-{neuron}-{device}.safetensors")
            check.run([check.args.bin, "replay", "--config", config, "--weights", weights, "--batches", replay, "--out", path,
                       "--device", device])
            params[device] = tensorfile.load(path)
        keys = [k for k in params["cpu"] if k.startswith("model.") and params["cpu"][k].is_floating_point()]
        step = max(((rel_norm(params["cuda"][k], params["cpu"][k]), k) for k in keys))
        rows[f"{neuron}-optimizer-step"] = {"worst_param": step, "ok": step[0] <= 1e-4}
    failed = [k for k, r in rows.items() if not r["ok"]]
    if failed:
        raise Failed(f"outside tolerance: {failed}; {rows}")
    worst = max(worst_overall)
    return {"rows": rows, "summary": f"{len(rows)} comparisons within tolerance; worst gradient {worst[1]} rel norm {worst[0]:.1e}"}


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    for row in rows:
        row.pop("seconds", None)
    return rows


def determinism(check, work):
    data = os.path.join(work, "synth")
    check.run([check.args.bin, "synth", "--out", data, "--train", "256", "--test", "64", "--classes", "10", "--seed", "1"])
    width = ["--set", "n_hidden_neurons=64", "--set", "batch_size=16"] if cuda(check) else ["--set", "n_hidden_neurons=8",
                                                                                               "--set", "batch_size=64"]
    common = ["train", "--preset", "shd", "--data", data, "--epochs", "3", "--device", check.args.device, "--quiet", *width,
              "--set", "max_delay_ms=100"]
    dirs = [os.path.join(work, f"run{i}") for i in range(3)]
    check.run([check.args.bin, *common, "--run-dir", dirs[0]])
    check.run([check.args.bin, *common, "--run-dir", dirs[1]])
    check.run([check.args.bin, *common, "--run-dir", dirs[2], "--stop-after", "2"])
    check.run([check.args.bin, *common, "--run-dir", dirs[2], "--resume"])
    same, resumed = metrics(dirs[0]) == metrics(dirs[1]), metrics(dirs[0]) == metrics(dirs[2])
    if not (same and resumed):
        raise Failed(f"identical runs agree: {same}; resumed equals uninterrupted: {resumed}")
    return {"summary": "identical runs agree; stopped after 2 epochs and resumed equals uninterrupted"}


def reference(check, args, device):
    """The reference's step script; Skip when this Python cannot import the reference."""
    python = os.environ.get("SNN_PYTHON", sys.executable)
    done = check.run([python, os.path.join(ROOT, "bench", "reference_step.py"), *args, "--device", device], check=False)
    if done.returncode != 0:
        if "No module named" in done.stderr:
            missing = done.stderr.strip().splitlines()[-1]
            raise Skip(f"the reference cannot be imported here ({missing})")
        raise Failed(f"the reference's step failed: {done.stderr.strip()[-600:]}")
    return last_json(done.stdout)


def with_reference(row, fill):
    """`row` after `fill(row)` adds the reference's figures; a reference this Python cannot import
    leaves a note instead."""
    try:
        fill(row)
    except Skip as why:
        row["reference"] = f"skipped: {why}"
    return row


def dispatch(check, work):
    rows = []
    for preset, sets, size, steps in sizes(check):
        config, weights, batch = prepared(check, work, preset, sets, size, steps)
        ours = bench(check, config, weights, batch, check.args.device, repeats=1)
        ours_eval = bench(check, config, weights, batch, check.args.device, extra=["--eval"], repeats=1)
        row = {"preset": preset, "ours_step": ours["per_step"], "ours_eval_batch": ours_eval["per_batch"]}
        timing = ["--config", config, "--weights", weights, "--batch", batch, "--repeats", 1, "--warmup", 0, "--count-ops"]

        def counts(row):
            row["reference_step"] = reference(check, timing, check.args.device)["per_step"]
            row["reference_eval_batch"] = reference(check, timing + ["--eval"], check.args.device)["per_batch"]
            row["ops_ratio"] = row["ours_step"]["ops"] / row["reference_step"]["ops"]
        rows.append(with_reference(row, counts))
    first = rows[0]
    summary = f"{first['preset']}: ours {first['ours_step']['ops']} ops and {first['ours_step']['host_reads']} host reads per step"
    if "reference_step" in first:
        summary += f", reference {first['reference_step']['ops']} and {first['reference_step']['host_reads']}"
    return {"rows": rows, "summary": summary}


class GpuSampler:
    """Samples nvidia-smi's utilisation and memory every 100 ms while a command runs."""

    def __init__(self, enabled):
        self.samples, self.stop, self.enabled = [], threading.Event(), enabled and which("nvidia-smi")

    def __enter__(self):
        if self.enabled:
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
        if self.enabled:
            self.thread.join()

    def summary(self):
        if not self.samples:
            return None, None
        return round(statistics.mean(u for u, _ in self.samples), 1), max(m for _, m in self.samples)


def step_times(check, work):
    rows, device = [], check.args.device
    for preset, sets, size, steps in sizes(check):
        config, weights, batch = prepared(check, work, preset, sets, size, steps)
        row = {"preset": preset, "batch": size}
        variants = [("fft", []), ("direct_cudnn", ["--set", "convolution=direct", "--cudnn"])]
        for name, extra in variants:
            with GpuSampler(cuda(check)) as sampler:
                ours = bench(check, config, weights, batch, device, extra=extra)
            util, memory = sampler.summary()
            row[f"ours_{name}_s"] = ours["median_seconds"]
            row[f"ours_{name}_gpu_util_pct"], row[f"ours_{name}_gpu_mem_mib"] = util, memory
        repeats = check.args.repeats if cuda(check) else 1
        timing = ["--config", config, "--weights", weights, "--batch", batch, "--repeats", repeats, "--warmup", 1]

        def times(row):
            with GpuSampler(cuda(check)) as sampler:
                ref = reference(check, timing, device)
            row["reference_s"] = statistics.median(ref["seconds"])
            row["reference_gpu_util_pct"], row["reference_gpu_mem_mib"] = sampler.summary()
            row["reference_peak_allocated_mib"] = ref.get("peak_cuda_mib")
            for name, _ in variants:
                row[f"ours_{name}_ratio"] = row[f"ours_{name}_s"] / row["reference_s"]
        rows.append(with_reference(row, times))
    first = rows[0]
    summary = f"{first['preset']}: ours {1e3 * first['ours_fft_s']:.1f} ms"
    if "reference_s" in first:
        summary += f", reference {1e3 * first['reference_s']:.1f} ms (ratio {first['ours_fft_ratio']:.2f})"
    return {"rows": rows, "summary": summary}


def recurrent(check, work):
    data = os.path.join(work, "synth")
    check.run([check.args.bin, "synth", "--out", data, "--train", "64", "--test", "32", "--classes", "4", "--seed", "2"])
    shd_layout = ["--set", "dataset=shd", "--set", "validation=test", "--set", "integration=grid", "--set", "time_step_ms=10"]
    small = [*shd_layout, "--set", "n_hidden_neurons=32", "--set", "batch_size=32", "--set", "n_outputs=4"]
    losses = {}
    for device in dict.fromkeys(["cpu", check.args.device]):
        run_dir = os.path.join(work, f"run-{device}")
        check.run([check.args.bin, "train", "--preset", "delrec-ssc", "--data", data, "--epochs", "2", "--device", device,
                   "--quiet", "--run-dir", run_dir, *small])
        losses[device] = [row["train_loss"] for row in metrics(run_dir)]
        with open(os.path.join(run_dir, "summary.json")) as f:
            neurons = json.load(f)["neuron_backend"]
    if cuda(check) and "CUDA step kernels" not in neurons:
        raise Failed(f"the fused recurrent layer did not use its CUDA step kernels: {neurons}")
    worst = max(abs(a - b) / abs(b) for a, b in zip(losses[check.args.device], losses["cpu"]))
    if worst > 1e-3:
        raise Failed(f"training losses on {check.args.device} {losses[check.args.device]} against the CPU's {losses['cpu']}")
    size, steps = (64, 250) if cuda(check) else (2, 20)
    weights, batch = os.path.join(work, "w.safetensors"), os.path.join(work, "b.safetensors")
    check.run([check.args.bin, "init", "--preset", "delrec-ssc", "--out", weights])
    tensorfile.save({"x": (torch.rand(steps, size, 140) < 0.05).float(), "y": torch.randint(0, 35, (size,))}, batch)
    row = {"batch": size, "steps": steps, "train_losses": losses, "worst_loss_rel_diff": worst, "neurons": neurons}
    for buffer in ("fused", "postsynaptic"):
        ours = last_json(check.run([check.args.bin, "bench", "--json", "--preset", "delrec-ssc", "--weights", weights, "--batch",
                                    batch, "--repeats", 1, "--warmup", 1, "--device", check.args.device, "--set",
                                    f"recurrent.buffer={buffer}"]).stdout)
        row[f"ours_{buffer}_s"] = ours["median_seconds"]
    python = os.environ.get("SNN_PYTHON", sys.executable)
    done = check.run([python, os.path.join(ROOT, "bench", "reference_delrec_step.py"), "--arch", "ssc", "--weights", weights,
                      "--batch", batch, "--repeats", 1, "--device", check.args.device], check=False)
    if done.returncode == 0:
        row["reference_s"] = last_json(done.stdout)["median_seconds"]
        row["fused_ratio"] = row["ours_fused_s"] / row["reference_s"]
    else:
        row["reference"] = f"skipped: {done.stderr.strip()[-300:]}"
    summary = f"losses within {worst:.1e} of the CPU's; delrec-ssc step (batch {size}, T {steps}): fused {row['ours_fused_s']:.3f} s"
    if "reference_s" in row:
        summary += f", DelRec in PyTorch {row['reference_s']:.3f} s (ratio {row['fused_ratio']:.2f})"
    return {"row": row, "summary": summary}


def epoch(check, work):
    needs_cuda(check)
    data = os.path.join(work, "shd-size")
    check.run([check.args.bin, "synth", "--out", data, "--train", "8156", "--test", "2264", "--classes", "20", "--noise-rate",
               "11000", "--seed", "0"])
    run_dir = os.path.join(work, "epoch")
    started = time.perf_counter()
    check.run([check.args.bin, "train", "--preset", "shd", "--data", data, "--epochs", "150", "--stop-after", "1", "--device",
               "cuda", "--quiet", "--run-dir", run_dir])
    wall = time.perf_counter() - started
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        seconds = json.loads(f.readline())["seconds"]
    return {"epoch_seconds": seconds, "process_seconds": wall, "projected_150_epochs_s": 150 * seconds,
            "summary": f"{seconds:.1f} s per epoch (process {wall:.1f} s); 150 epochs project to {150 * seconds / 60:.1f} min"}


def no_cuda_error(check, work):
    if torch.cuda.is_available():
        raise Skip("CUDA is available here")
    done = check.run([check.args.bin, "demo", "--preset", "shd", "--set", "n_hidden_neurons=8", "--batch", "2", "--steps", "5",
                      "--device", "cuda"], check=False)
    if not (done.returncode == 1 and "CUDA is not available" in done.stderr and "panicked" not in done.stderr):
        raise Failed(f"`--device cuda` without CUDA exited {done.returncode}: {done.stderr.strip()}")
    return {"summary": f"`--device cuda` -> exit 1: {done.stderr.strip()}"}


SECTIONS = [environment, startup, nccl, parity, determinism, dispatch, step_times, recurrent, epoch, no_cuda_error]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "snn-delays"))
    parser.add_argument("--out", default="gpu-check")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--budget", type=float, default=480)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sections", nargs="+", choices=[s.__name__ for s in SECTIONS])
    args = parser.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu-check: --device cuda, but this torch sees no CUDA device")
    check = Check(args)
    print(f"gpu-check on {args.device}: torch {torch.__version__}, results in {args.out}", flush=True)
    if not os.access(args.bin, os.X_OK):
        check.results["error"] = f"{args.bin} is missing"
        check.save()
        sys.exit(f"{args.bin} is missing: build it first (make build) and carry it")
    for section in SECTIONS:
        if args.sections is None or section.__name__ in args.sections:
            check.section(section.__name__, section)
    counts = check.results["counts"]
    print(f"gpu-check: {counts['ok']} passed, {counts['failed']} failed, {counts['skipped']} skipped", flush=True)
    sys.exit(1 if counts["failed"] else 0)


if __name__ == "__main__":
    main()
