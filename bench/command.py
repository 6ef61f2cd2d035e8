"""Running our binary from the bench scripts."""

import subprocess
import sys


def run(cmd):
    """Runs `cmd` and returns its standard output; exits with its output if it fails."""
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{done.stdout}{done.stderr}")
    return done.stdout
