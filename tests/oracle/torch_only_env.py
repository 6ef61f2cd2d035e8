"""Builds a Python environment that holds torch and its own dependencies and nothing else, as a GPU
machine with only python3 + torch has: a folder of links to exactly those packages of this
interpreter's site-packages (torch's requirements, followed recursively, extras left out), and an
executable `python` that runs this interpreter with `-S` (no site-packages) on that folder. With
`--with numpy`, numpy is linked in too. A kit folder holds the reference's pure-Python packages, as
`make gpu-kit` copies them.

Usage: torch_only_env.py DIR [--with PACKAGE ...]; prints DIR/python and DIR/kit."""

import argparse
import importlib.metadata as metadata
import os
import re
import sys


def distributions(roots):
    """The distributions `roots` need, recursively, ignoring extras."""
    seen, todo, found = set(), list(roots), []
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(dist)
        todo.extend(re.split(r"[\s\[<>=!;~(]", req, maxsplit=1)[0] for req in dist.requires or [] if "extra ==" not in req)
    return found


def link_top_levels(dist, folder):
    for top in {f.parts[0] for f in dist.files or []}:
        if top.endswith((".dist-info", ".egg-info", ".pth")) or top in ("..", "__pycache__"):
            continue
        source, target = os.path.join(str(dist.locate_file("")), top), os.path.join(folder, top)
        if os.path.exists(source) and not os.path.lexists(target):
            os.symlink(source, target)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--with", dest="extra", nargs="*", default=[])
    args = parser.parse_args()
    site, kit = os.path.join(args.dir, "site"), os.path.join(args.dir, "kit")
    os.makedirs(site, exist_ok=True)
    os.makedirs(kit, exist_ok=True)
    for dist in distributions(["torch", *args.extra]):
        link_top_levels(dist, site)
    for dist in distributions(["dcls", "loguru"]) + [metadata.distribution("spikingjelly")]:
        if dist.metadata["Name"].lower() in ("dcls", "loguru", "spikingjelly"):
            link_top_levels(dist, kit)
    python = os.path.join(args.dir, "python")
    with open(python, "w") as f:
        f.write(f'#!/bin/sh\nPYTHONPATH="{site}${{PYTHONPATH:+:$PYTHONPATH}}" exec "{sys.executable}" -S "$@"\n')
    os.chmod(python, 0o755)
    print(python)
    print(kit)


if __name__ == "__main__":
    main()
