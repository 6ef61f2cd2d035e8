"""Writes broken SHD-layout files, one folder per defect, each holding `shd_train.h5`, plus a
Speech Commands folder whose WAV has the wrong format. The Rust test `tests/data.rs` checks the
error each one produces. Sample 1 carries the defect in every spike file.

Usage: bad_files.py OUT_DIR"""

import os
import sys
import wave

import h5py
import numpy as np

GOOD = ([0.0, 0.01, 0.02], [1, 2, 3])


def ragged(arrays):
    out = np.empty(len(arrays), dtype=object)
    out[:] = arrays
    return out


def write(folder, samples, labels, skip=None, times_dtype=np.float16):
    os.makedirs(folder, exist_ok=True)
    with h5py.File(os.path.join(folder, "shd_train.h5"), "w") as f:
        if skip != "spikes/times":
            f.create_dataset("spikes/times", data=ragged([np.array(t, dtype=times_dtype) for t, _ in samples]),
                             dtype=h5py.vlen_dtype(times_dtype))
        if skip != "spikes/units":
            f.create_dataset("spikes/units", data=ragged([np.array(u, dtype=np.uint16) for _, u in samples]),
                             dtype=h5py.vlen_dtype(np.uint16))
        if skip != "labels":
            f.create_dataset("labels", data=np.array(labels, dtype=np.uint8))


def main():
    out = sys.argv[1]
    write(os.path.join(out, "good"), [GOOD, GOOD], [0, 1])
    write(os.path.join(out, "missing_units"), [GOOD, GOOD], [0, 1], skip="spikes/units")
    write(os.path.join(out, "unit_700"), [GOOD, ([0.0, 0.01], [5, 700])], [0, 1])
    write(os.path.join(out, "negative_time"), [GOOD, ([-0.01, 0.01], [5, 6])], [0, 1], times_dtype=np.float32)
    write(os.path.join(out, "nan_time"), [GOOD, ([0.0, float("nan")], [5, 6])], [0, 1])
    write(os.path.join(out, "bad_label"), [GOOD, GOOD], [0, 20])
    write(os.path.join(out, "empty_sample"), [GOOD, ([], [])], [0, 1])
    write(os.path.join(out, "mismatched"), [GOOD, ([0.0, 0.01, 0.02], [5, 6])], [0, 1])
    write(os.path.join(out, "unsorted"), [GOOD, ([0.03, 0.0, 0.012], [5, 6, 7])], [0, 1])
    os.makedirs(os.path.join(out, "truncated"), exist_ok=True)
    with open(os.path.join(out, "good", "shd_train.h5"), "rb") as f:
        data = f.read()
    with open(os.path.join(out, "truncated", "shd_train.h5"), "wb") as f:
        f.write(data[: len(data) // 2])
    speech = os.path.join(out, "speech", "yes")
    os.makedirs(speech, exist_ok=True)
    with wave.open(os.path.join(speech, "aa_nohash_0.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.zeros(800, dtype="<i2").tobytes())
    for name in ("validation_list.txt", "testing_list.txt"):
        with open(os.path.join(out, "speech", name), "w") as f:
            f.write("yes/aa_nohash_0.wav\n" if name == "testing_list.txt" else "")


if __name__ == "__main__":
    main()
