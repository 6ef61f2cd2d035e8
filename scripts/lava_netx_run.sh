#!/usr/bin/env bash
# `make lava-check`: runs a netx export in Lava's CPU simulator and compares its decisions with
# the engine's (scripts/lava_netx_run.py). Installs lava-nc 0.10.0 and lava-dl 0.6.0 into
# .venv-lava with Python 3.10 if missing; trains a small model on the generated task in
# runs/lava-check. Usage: lava_netx_run.sh BIN
set -euo pipefail
bin=${1:?usage: lava_netx_run.sh BIN}
venv=.venv-lava
python310=
for candidate in "$HOME"/.pyenv/versions/3.10.*/bin/python3.10 "$(command -v python3.10 || true)"; do
    if [ -x "$candidate" ] && "$candidate" -c 'import sys' 2>/dev/null; then python310=$candidate; break; fi
done
if [ ! -x "$venv/bin/python" ]; then
    [ -n "$python310" ] || { echo "lava-nc 0.10 and lava-dl 0.6 need Python 3.10, which this machine lacks"; exit 1; }
    "$python310" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check lava-nc==0.10.0 lava-dl==0.6.0 safetensors
fi
dir=runs/lava-check
mkdir -p "$dir"
[ -f "$dir/data/shd_test.h5" ] || "$bin" synth --out "$dir/data" --classes 4 --train 400 --test 100 --seed 11
settings=(--set n_hidden_neurons=32 --set batch_size=32 --set max_delay_ms=150)
[ -f "$dir/run/best_acc.safetensors" ] || "$bin" train --preset shd --data "$dir/data" --run-dir "$dir/run" --quiet "${settings[@]}" --epochs 12
"$bin" export --checkpoint "$dir/run/best_acc.safetensors" --format netx --out "$dir/model.net"
"$bin" export --checkpoint "$dir/run/best_acc.safetensors" --format delays --out "$dir/model.safetensors"
"$bin" infer --model "$dir/model.safetensors" --data "$dir/data" --json --scores > "$dir/engine.json"
"$bin" data export --dataset shd --config "$dir/run/config.json" --data "$dir/data" --split test --out "$dir/frames.safetensors"
# the network's tail: (K − 1)//2 steps per layer, K = 15 at max_delay_ms 150 and 10 ms steps, 3 layers
"$venv/bin/python" scripts/lava_netx_run.py --netx "$dir/model.net" --frames "$dir/frames.safetensors" \
    --ours "$dir/engine.json" --tail 21 --limit 40
