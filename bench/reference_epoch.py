"""The reference's whole epoch, loading included, in one process: read an SHD-layout HDF5 train and
test file with h5py, integrate each sample on spikingjelly 2.0.0's 10 ms grid and bin by 5, batch
with `pad_sequence_collate` through a DataLoader (shuffled, batch 256, drop_last False), build and
initialise the paper's network (dcls 0.1.1 + spikingjelly 2.0.0), train one epoch the paper's way
and evaluate on the test file with integer delays (the SHD protocol). The work of
`snn-delays train --epochs 1` on the same folder.

Prints one JSON line: wall seconds of the whole process body and its peak resident memory.

Usage: reference_epoch.py --config C.json --data DIR [--threads 2]"""

import argparse
import json
import os
import resource
import sys
import time

START = time.perf_counter()

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from spikingjelly.datasets.shd import _integrate_events_by_fixed_duration  # noqa: E402
from spikingjelly.datasets.utils import pad_sequence_collate  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from reference_step import eval_pass, train_step  # noqa: E402
from reference import ReferenceSnn, paper_optimizers  # noqa: E402


class SpikeFileDataset(torch.utils.data.Dataset):
    def __init__(self, path):
        self.file = h5py.File(path, "r")
        self.times, self.units = self.file["spikes/times"], self.file["spikes/units"]
        self.labels = self.file["labels"][:]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        frames = _integrate_events_by_fixed_duration({"t": self.times[i], "x": self.units[i]}, 10, 700)
        return frames.reshape(frames.shape[0], 140, 5).sum(-1).astype(np.float32), int(self.labels[i])


def loader(path, batch, shuffle):
    return torch.utils.data.DataLoader(SpikeFileDataset(path), batch_size=batch, shuffle=shuffle,
                                       collate_fn=pad_sequence_collate, num_workers=0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with open(args.config) as f:
        cfg = json.load(f)
    torch.manual_seed(cfg["seed"])
    train = loader(os.path.join(args.data, "shd_train.h5"), cfg["batch_size"], True)
    test = loader(os.path.join(args.data, "shd_test.h5"), cfg["batch_size"], False)
    net = ReferenceSnn(cfg)
    net.init_as_reference()
    opt_w, opt_pos = paper_optimizers(net, cfg)
    net.train()
    for x, y, _ in train:
        train_step(net, cfg, x.permute(1, 0, 2).float(), y, opt_w, opt_pos)
    snapshot = {k: v.clone() for k, v in net.state_dict().items()}
    for x, y, _ in test:
        eval_pass(net, cfg, x.permute(1, 0, 2).float(), y, batches=1)
    net.load_state_dict(snapshot)
    seconds = time.perf_counter() - START
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak_mib}))


if __name__ == "__main__":
    main()
