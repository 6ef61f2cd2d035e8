"""Writes broken SHD-layout files, one folder per defect, each holding `shd_train.h5`, plus
Speech Commands folders (`speech_<case>`) whose one WAV has another format than 16 kHz 16-bit
PCM mono. The Rust test `tests/data.rs` checks the error each one produces. Sample 1 carries the
defect in every spike file.

Usage: bad_files.py OUT_DIR"""

import os
import struct
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
    for case, (channels, width, rate) in SPEECH_CASES.items():
        with wave.open(speech_folder(out, case), "wb") as w:
            w.setnchannels(channels)
            w.setsampwidth(width)
            w.setframerate(rate)
            w.writeframes(bytes(width * channels * rate // 10))
    write_float_wav(speech_folder(out, "float32"), np.zeros(1600, dtype="<f4"))


# Channels, bytes per sample and sample rate of each WAV case written with the `wave` module.
SPEECH_CASES = {"rate_8000": (1, 2, 8000), "bits_8": (1, 1, 16000), "bits_24": (1, 3, 16000), "stereo": (2, 2, 16000)}


def speech_folder(out, case):
    """A Speech Commands folder whose test list names its one clip; the clip's path."""
    folder = os.path.join(out, f"speech_{case}")
    os.makedirs(os.path.join(folder, "yes"), exist_ok=True)
    for name in ("validation_list.txt", "testing_list.txt"):
        with open(os.path.join(folder, name), "w") as f:
            f.write("yes/aa_nohash_0.wav\n" if name == "testing_list.txt" else "")
    return os.path.join(folder, "yes", "aa_nohash_0.wav")


def write_float_wav(path, samples):
    """A 16 kHz mono IEEE-float WAV (format tag 3), which the `wave` module cannot write."""
    data = samples.tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 16000, 16000 * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", len(body)) + body)


if __name__ == "__main__":
    main()
