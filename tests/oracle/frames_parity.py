"""SHD/SSC frames parity: `snn-delays data export` against spikingjelly 2.0.0's fixed-duration
integration (`grid`) followed by binning by 5, against an independent re-implementation of
the paper-era event-anchored windows (`paper2023`, docs/method.md §5.2), and against NumPy's
`digitize` over `linspace(0, 1.4, 250)` as DelRec's SSC loader bins (`digitize`, §5.8; a time at
or after 1.4 s, which the original cannot hold, goes to the last frame), on a float16 file written
here with h5py. Random samples come from --seed (fresh each run unless given). Edge cases: a
single spike, all spikes at one time (spikingjelly raises; we must give one frame holding
them all), spikes exactly on window borders, long silences, a last spike on a frame border.
Exact equality is required: the inputs are integer spike counts.

Usage: frames_parity.py --bin target/release/snn-delays [--seed S]"""

import argparse
import os
import random
import tempfile

import h5py
import numpy as np
from safetensors.numpy import load_file
from spikingjelly.datasets.shd import _integrate_events_by_fixed_duration

from harness import finish, fresh_seed, print_reproduce, run

BINS, DURATION = 5, 10


def ragged(arrays):
    out = np.empty(len(arrays), dtype=object)
    out[:] = arrays
    return out


def edge_cases():
    cases = {
        "single spike": ([0.25], [3]),
        "all at one time": ([0.1, 0.1, 0.1], [0, 5, 699]),
        "window borders": ([0.0, 0.01, 0.02, 0.02, 0.03], [1, 2, 3, 4, 5]),
        "long silence": ([0.0, 0.002, 0.9, 0.95], [10, 20, 30, 40]),
        "last on a border": ([0.5, 0.51, 0.53], [7, 8, 9]),
        "late times, coarse float16": ([1.0, 1.0009, 1.5, 1.9999], [0, 1, 2, 3]),
        "spec worked example": ([0, .004, .0101, .012, .0205, .06, .0651, .071], [BINS * i for i in range(8)]),
    }
    return [(name, np.array(t, dtype=np.float16), np.array(u, dtype=np.uint16)) for name, (t, u) in cases.items()]


# The spec's worked example (docs/method.md §5.2): which of its 8 events each frame holds. Event i
# is on input channel i after binning, so the frames are known exactly.
WORKED_EXAMPLE = {"paper2023": [[0, 1], [2, 3], [4], [5, 6], [7]],
                  "grid": [[0, 1], [2, 3], [4], [], [], [], [5, 6], [7]]}


def worked_example_frames(integration):
    groups = WORKED_EXAMPLE[integration]
    frames = np.zeros((len(groups), 700 // BINS))
    for k, events in enumerate(groups):
        frames[k, events] = 1
    return frames


def random_sample(rng):
    n = rng.randint(1, 400)
    times = np.sort(np.array([rng.random() * rng.choice([0.3, 1.2]) for _ in range(n)])).astype(np.float16)
    times = np.sort(times)
    units = np.array([rng.randrange(700) for _ in range(n)], dtype=np.uint16)
    return f"random {n} events", times, units


def grid_reference(times, units):
    t = 1000 * times
    if (t - t[0])[-1] == 0:
        frames = np.zeros([1, 700])
        np.add.at(frames[0], units.astype(int), 1)
    else:
        frames = _integrate_events_by_fixed_duration({"t": times, "x": units}, DURATION, 700)
    return frames.reshape(frames.shape[0], 700 // BINS, BINS).sum(-1)


def paper2023_reference(times, units):
    """Event-anchored windows in float16, written from the spec independently of the Rust code."""
    t = (1000 * times).astype(np.float16)
    frames, start, current = [], t[0], np.zeros(700)
    for ti, ui in zip(t, units):
        if np.float16(ti - start) > DURATION:
            frames.append(current)
            current, start = np.zeros(700), ti
        current[int(ui)] += 1
    frames.append(current)
    frames = np.stack(frames)
    return frames.reshape(frames.shape[0], 700 // BINS, BINS).sum(-1)


def digitize_reference(times, units):
    """DelRec's SSC binning: counts at np.digitize(t, linspace(0, 1.4, 250)), then 5 channels to 1."""
    frames = np.zeros([250, 700])
    index = np.minimum(np.digitize(times, np.linspace(0, 1.4, 250)), 249)
    np.add.at(frames, (index, units.astype(int)), 1)
    return frames.reshape(250, 700 // BINS, BINS).sum(-1)


def export(binary, folder, integration, out):
    run([binary, "data", "export", "--dataset", "shd", "--data", folder, "--split", "train", "--integration", integration, "--out", out])
    return load_file(out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--random", type=int, default=200)
    args = parser.parse_args()
    seed = fresh_seed("frames parity", args.seed)
    rng = random.Random(seed)
    samples = edge_cases() + [random_sample(rng) for _ in range(args.random)]
    labels = np.array([rng.randrange(20) for _ in samples], dtype=np.uint8)
    failures, checked = [], 0
    with tempfile.TemporaryDirectory() as folder:
        with h5py.File(os.path.join(folder, "shd_train.h5"), "w") as f:
            f.create_dataset("spikes/times", data=ragged([s[1] for s in samples]), dtype=h5py.vlen_dtype(np.float16))
            f.create_dataset("spikes/units", data=ragged([s[2] for s in samples]), dtype=h5py.vlen_dtype(np.uint16))
            f.create_dataset("labels", data=labels)
        for integration, reference in (("grid", grid_reference), ("paper2023", paper2023_reference),
                                       ("digitize", digitize_reference)):
            ours = export(args.bin, folder, integration, os.path.join(folder, f"{integration}.safetensors"))
            if not np.array_equal(ours["labels"], labels.astype(np.int64)):
                failures.append(f"{integration}: labels differ")
            for i, (name, times, units) in enumerate(samples):
                expected, got = reference(times, units), ours[f"x.{i}"]
                checked += 1
                if expected.shape != got.shape or not np.array_equal(expected, got):
                    failures.append(f"{integration} sample {i} ({name}): ours {got.shape}, reference {expected.shape}")
            if integration == "digitize":
                continue
            worked, want = ours[f"x.{len(edge_cases()) - 1}"], worked_example_frames(integration)
            if worked.shape != want.shape or not np.array_equal(worked, want):
                failures.append(f"{integration}: the spec's worked example gave frames {worked[:, :8].tolist()}, "
                                f"expected {want[:, :8].tolist()}")
    if failures:
        print_reproduce(seed)
    finish("frames parity", checked, failures)


if __name__ == "__main__":
    main()
