"""Reads a run's TensorBoard events back with the `tensorboard` package's EventAccumulator and
checks that every tag we promise is there, that the epoch scalars equal metrics.jsonl (as
float32, which is what TensorBoard stores) and hold no epoch it lacks, and that no scalar has a step twice across the run's
event files (a resumed run writes from where the last one stopped). Orphan purging is off, so
the accumulator shows every point as written.

Usage: tensorboard_check.py RUN_DIR"""

import json
import os
import sys

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from harness import finish


def main():
    run_dir = sys.argv[1]
    accumulator = EventAccumulator(run_dir, size_guidance={"scalars": 0, "histograms": 0, "tensors": 0},
                                   purge_orphaned_data=False)
    accumulator.Reload()
    tags = accumulator.Tags()
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    layers = config["n_hidden_layers"] + 1
    failures = []
    scalars = ["loss_train", "acc_train", "loss_valid", "acc_valid", "lr_w", "lr_pos", "sigma"]
    scalars += [f"tau_m_{i}" for i in range(layers)] + [f"w_{i}" for i in range(layers)]
    scalars += [f"dpos{i}" for i in range(layers)] + [f"dpos{i}_epoch" for i in range(layers)]
    for tag in scalars:
        if tag not in tags["scalars"]:
            failures.append(f"missing scalar {tag}")
    for tag in tags["scalars"]:
        steps = [e.step for e in accumulator.Scalars(tag)]
        if len(steps) != len(set(steps)):
            failures.append(f"{tag} has repeated steps: {sorted(steps)}")
    epochs = {record["epoch"] for record in records}
    # the position changes are logged per batch, and once at epoch 0 before training
    per_epoch = [t for t in scalars if not t.startswith("dpos")]
    for tag in per_epoch:
        if tag in tags["scalars"]:
            extra = sorted({e.step for e in accumulator.Scalars(tag)} - epochs)
            if extra:
                failures.append(f"{tag} logged at epochs {extra}, which metrics.jsonl does not hold")
    for tag in [f"delays/layer{i}" for i in range(layers)] + [f"weights/layer{i}" for i in range(layers)]:
        if tag not in tags["histograms"]:
            failures.append(f"missing histogram {tag}")
    if "config" not in tags["tensors"]:
        failures.append("missing config text")
    else:
        text = accumulator.Tensors("config")[0].tensor_proto.string_val[0].decode()
        if '"n_hidden_neurons"' not in text:
            failures.append("config text does not hold the config")
    for tag, key in (("loss_train", "train_loss"), ("acc_valid", "valid_acc"), ("lr_w", "lr_w"), ("sigma", "sigma")):
        if tag in tags["scalars"]:
            logged = {e.step: e.value for e in accumulator.Scalars(tag)}
            for record in records:
                if logged.get(record["epoch"]) != np.float32(record[key]):
                    failures.append(f"{tag} at epoch {record['epoch']}: {logged.get(record['epoch'])} vs {record[key]}")
    if "delays/layer0" in tags["histograms"]:
        histogram = accumulator.Histograms("delays/layer0")[-1].histogram_value
        expected = config["derived"]["n_inputs"] * config["n_hidden_neurons"]
        if histogram.num != expected:
            failures.append(f"delays/layer0 counts {histogram.num} synapses, expected {expected}")
    finish("tensorboard check", len(scalars) + len(tags["scalars"]) + 2 * layers + 1, failures)


if __name__ == "__main__":
    main()
