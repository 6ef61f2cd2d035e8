"""Times one training step of DelRec's computation in PyTorch, as written from the spec in
tests/oracle (a ring buffer of postsynaptic currents, L products N x N per layer and step), on the
weights of `snn-delays init` and a batch file: forward, loss, backward, Adam (ssc) or AdamW (shd)
steps of both parameter groups. Prints one JSON line: the seconds of each timed repeat and their
median.

Usage: reference_delrec_step.py --arch ssc|shd --weights W --batch B [--threads N] [--repeats 3] [--device cuda]"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "oracle"))
import delrec_cases  # noqa: E402
import delrec_network_cases as network  # noqa: E402

delrec_cases.CHECK_ARRIVALS = False


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", choices=("ssc", "shd"), required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--batch", required=True)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_default_device(args.device)
    params = {key.removeprefix("model."): value.to(args.device) for key, value in load_file(args.weights).items()}
    trainable = [value.requires_grad_(True) for key, value in params.items() if not key.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    positions = [value for key, value in params.items() if key.endswith(("recurrent_delays", "p_spread"))]
    weights = [value for value in trainable if not any(value is p for p in positions)]
    kind = torch.optim.Adam if args.arch == "ssc" else torch.optim.AdamW
    optimizers = [kind(weights, lr=1e-3, weight_decay=1e-5), kind(positions, lr=5e-2, weight_decay=0.0)]
    batch = load_file(args.batch)
    x, labels = batch["x"].to(args.device), batch["y"].long().to(args.device)
    hidden = params["readout.weight"].shape[1]
    network.OUTPUTS = params["readout.weight"].shape[0]
    rates = network.mask_rates(args.arch)

    def step():
        masks = [torch.bernoulli(torch.full((x.shape[1], hidden), 1 - p)) / (1 - p) for p in rates]
        loss = network.loss_of(args.arch, network.forward(args.arch, params, x, masks, True, 10.0), labels)
        for optimizer in optimizers:
            optimizer.zero_grad()
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        if x.is_cuda:
            torch.cuda.synchronize()

    seconds = []
    for repeat in range(args.warmup + args.repeats):
        started = time.perf_counter()
        step()
        if repeat >= args.warmup:
            seconds.append(time.perf_counter() - started)
    print(json.dumps({"seconds": seconds, "median_seconds": statistics.median(seconds)}))


if __name__ == "__main__":
    main()
