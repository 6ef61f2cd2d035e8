"""The reference's training step and evaluation pass, timed: the paper's network built from dcls
0.1.1 and spikingjelly 2.0.0 (tests/oracle/reference.py), trained the paper's way (Adam on
weights/BN with weight decay, a separate Adam on positions, clamp after each step, reset_net).

Reads the batch (`x` (T, B, C), `y` (B,)) and the weights from files written by bench.py, so that
ours and the reference time the same work. Prints one JSON line: per-repeat seconds and the peak
resident memory of this process.

Usage: reference_step.py --config C.json --weights W.safetensors --batch B.safetensors
       [--sigma S] [--eval] [--repeats 3] [--warmup 1] [--threads 2] [--device cpu|cuda] [--profile]
       [--count-ops]

On CUDA, cuDNN is off (as in the reference's main.py), every repeat ends with a synchronisation,
and the JSON also holds the peak CUDA memory allocated.

--count-ops adds what one step (with --eval: one evaluation batch, forward and loss) dispatches,
counted by PyTorch's profiler as `snn-delays bench` counts ours: `ops`, every aten op (RecordScope
FUNCTION, nested ones included); `leaf_ops`, those with no aten op inside; `host_reads`, the
`aten::_local_scalar_dense` calls (every `item()`: the reference's step copies nothing else to the
host).

Needs torch, dcls and spikingjelly; not numpy's or safetensors' Python packages of its own (files are
read with scripts/tensorfile.py). `SNN_GPU_KIT`, when set, is a folder of packages searched after the
interpreter's own (the GPU check's `.gpu-kit/site`)."""

import argparse
import json
import os
import resource
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "oracle"))
if os.environ.get("SNN_GPU_KIT"):
    sys.path.append(os.environ["SNN_GPU_KIT"])
from reference import ReferenceSnn, paper_optimizers, paper_step, reference_loss  # noqa: E402
from tensorfile import load as load_file  # noqa: E402


def train_step(net, cfg, x, y, opt_w, opt_pos):
    loss = paper_step(net, cfg, x, y, opt_w, opt_pos).item()
    net.reset_state()
    return loss


EVAL_BATCHES = 4  # batches in one timed evaluation pass, as `snn-delays bench --eval`


def eval_pass(net, cfg, x, y, batches=EVAL_BATCHES):
    """The reference's eval_model on `batches` copies of the batch: eval transform, no_grad."""
    net.to_eval_form()
    net.eval()
    losses = []
    with torch.no_grad():
        for _ in range(batches):
            losses.append(reference_loss(net(x), y, cfg).item())
            net.reset_state()
    return sum(losses) / len(losses)


def dispatch_counts(work):
    """What `work` dispatches, by PyTorch's profiler: aten ops, leaves among them, host reads."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        work()
    ops = [e for e in prof.events() if int(e.scope) == 0]
    leaves = [e for e in ops if not any(int(c.scope) == 0 for c in e.cpu_children)]
    reads = [e for e in ops if e.name == "aten::_local_scalar_dense"]
    return {"ops": len(ops), "leaf_ops": len(leaves), "host_reads": len(reads)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--batch", required=True)
    parser.add_argument("--sigma", type=float, default=None)
    parser.add_argument("--eval", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--count-ops", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.backends.cudnn.enabled = False
    with open(args.config) as f:
        cfg = json.load(f)
    net = ReferenceSnn(cfg)
    net.load_state_dict(load_file(args.weights))
    net.to(device)
    if args.sigma is not None:
        with torch.no_grad():
            for m in net.model:
                if getattr(m, "SIG", None) is not None:
                    m.SIG.fill_(args.sigma)
    batch = load_file(args.batch)
    x, y = batch["x"].to(device), batch["y"].to(device)
    opt_w, opt_pos = paper_optimizers(net, cfg)
    run = (lambda: eval_pass(net, cfg, x, y)) if args.eval else (lambda: train_step(net, cfg, x, y, opt_w, opt_pos))
    if not args.eval:
        net.train()
    for _ in range(args.warmup):
        run()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        run()
        sync()
        seconds.append(time.perf_counter() - start)
    if args.profile:
        with torch.profiler.profile() as prof:
            run()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25), file=sys.stderr)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"seconds": seconds, "peak_rss_mib": peak_mib}
    if args.count_ops:
        if args.eval:
            net.to_eval_form()
            net.eval()
            with torch.no_grad():
                result["per_batch"] = dispatch_counts(lambda: reference_loss(net(x), y, cfg))
            net.reset_state()
        else:
            result["per_step"] = dispatch_counts(lambda: train_step(net, cfg, x, y, opt_w, opt_pos))
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps(result))


if __name__ == "__main__":
    main()
