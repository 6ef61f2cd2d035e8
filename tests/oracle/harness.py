"""Helpers shared by the oracle scripts: running our binary, writing case files, and the
closing report ('N passed, M failed', exit status 1 on any failure)."""

import argparse
import random
import shlex
import subprocess
import sys

import torch
from safetensors.torch import save_file


def run(cmd):
    """Runs a command and returns its stdout; exits with its output when it fails."""
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"command failed: {' '.join(map(str, cmd))}\n{done.stdout}{done.stderr}")
    return done.stdout


def fresh_seed(label, given):
    """`given`, or a fresh random seed; printed, so that any run can be repeated."""
    seed = given if given is not None else random.SystemRandom().randint(0, 2**31)
    print(f"{label} seed {seed}")
    return seed


def print_reproduce(seed):
    """Prints the command line that repeats this run with `seed` (a failure's first aid)."""
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip or arg == "--seed":
            skip = not skip
            continue
        args.append(arg)
    print("reproduce:", shlex.join([sys.executable, sys.argv[0], *args, "--seed", str(seed)]))


def case_file_args():
    """`OUT.safetensors [--seed S]` for the case generators; seeds torch."""
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    return args


def save_cases(path, cases, what):
    """Writes `case<i>.<field>` tensors for a list of per-case dicts."""
    tensors = {f"case{i}.{field}": value.contiguous() for i, case in enumerate(cases) for field, value in case.items()}
    save_file(tensors, path)
    print(f"wrote {len(cases)} {what} cases to {path}")


def finish(label, total, failures):
    """Prints up to 20 failures and the closing line, then exits 0 or 1."""
    for failure in failures[:20]:
        print("FAIL", failure)
    print(f"{label}: {total - len(failures)} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)
