# snn-delays: every target first makes sure .venv holds the pinned Python packages (libtorch
# comes from its torch wheel, the parity oracles from the rest), then builds with cargo.
# Nothing is redone when it is already in place. See libtorch.md for other libtorch sources.

SHELL := /bin/bash
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BIN := target/release/snn-delays

export VIRTUAL_ENV := $(CURDIR)/$(VENV)
# HDF5 is built from source (hdf5-metno's `static` feature), which needs cmake >= 3.26: pip's.
export CMAKE := $(CURDIR)/$(VENV)/bin/cmake
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
ifndef LIBTORCH
export LIBTORCH_USE_PYTORCH := 1
endif

.PHONY: all venv gloo build test run parity bench bench-delays gpu-kit gpu-check lava-check gsc-mini clean

all: build

venv: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

# gloo's headers, for the c10d shim's Gloo backend (multi-process training on the CPU).
gloo:
	@bash scripts/ensure_gloo.sh

build: $(STAMP) gloo
	cargo build --release

test: $(STAMP) gloo
	cargo test --release

# The main job: learn delays on a generated delay task (no download), a few minutes on 2 cores.
RUN_DATA := data/synth
run: build
	@test -f $(RUN_DATA)/shd_train.h5 || $(BIN) synth --out $(RUN_DATA)
	$(BIN) train --preset shd --data $(RUN_DATA) --epochs 12 --set n_hidden_neurons=64 --set batch_size=64

parity: build
	$(PYTHON) tests/oracle/parity_network.py --bin $(BIN) --set convolution=direct
	$(PYTHON) tests/oracle/default_path.py --bin $(BIN)
	$(PYTHON) tests/oracle/default_path.py --bin $(BIN) --random 6

# Speed: ours against the reference in the same run, printed as ratios (about 25 minutes on 2
# cores): training steps, evaluation, a whole epoch and peak memory, the ops and host reads a step
# dispatches, then the data loader, the deployment engine, training in 1 against 2 processes, and the
# recurrent-delay (DelRec) training step against DelRec's computation in PyTorch.
bench: build
	$(PYTHON) bench/speed_bench.py --bin $(BIN)
	$(PYTHON) bench/dispatch_bench.py --bin $(BIN)
	$(PYTHON) bench/data_bench.py --bin $(BIN)
	$(PYTHON) bench/engine_bench.py --bin $(BIN)
	$(PYTHON) bench/scale_bench.py --bin $(BIN)
	$(PYTHON) bench/delrec_bench.py --bin $(BIN)

# Learned delays against fixed and no delays on the generated task, and recurrent delays against
# recurrence without them, feedforward delays and none on a long-timing one (the README's tables).
bench-delays: build
	$(PYTHON) bench/delays_bench.py --bin $(BIN)

# What a GPU machine with only python3 + torch 2.11 needs besides this tree and the binary: the
# reference's pure-Python packages, for scripts/gpu_check.sh.
SITE = $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null)
gpu-kit: build
	rm -rf .gpu-kit && mkdir -p .gpu-kit/site
	cp -r $(SITE)/DCLS $(SITE)/spikingjelly $(SITE)/loguru .gpu-kit/site/

# The GPU check (scripts/gpu_check.py): every section on CUDA; without a GPU, the CPU dry run.
gpu-check: gpu-kit
	PYTHON=$(PYTHON) bash scripts/gpu_check.sh

# The netx export run in Lava's CPU simulator (scripts/lava_netx_run.sh): lava-nc 0.10.0 and
# lava-dl 0.6.0 in .venv-lava (Python 3.10, from pyenv or python3.10), a model trained on the
# generated task, its decisions against the engine's. About 15 minutes and 6 GB the first time.
lava-check: build
	bash scripts/lava_netx_run.sh $(BIN)

# A mini Speech Commands v0.02 spoken by espeak-ng (installed with sox if missing).
gsc-mini:
	bash scripts/make_gsc_mini.sh data/gsc-mini

clean:
	cargo clean
