# snn-delays: every target first makes sure .venv holds the pinned Python packages (libtorch
# comes from its torch wheel, the parity oracles from the rest), then builds with cargo.
# Nothing is redone when it is already in place. See libtorch.md for other libtorch sources.

SHELL := /bin/bash
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BIN := target/release/snn-delays

export VIRTUAL_ENV := $(CURDIR)/$(VENV)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
ifndef LIBTORCH
export LIBTORCH_USE_PYTORCH := 1
endif

.PHONY: all venv build test run parity clean

all: build

venv: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

build: $(STAMP)
	cargo build --release

test: $(STAMP)
	cargo test --release

run: build
	$(BIN) demo

parity: build
	$(PYTHON) tests/oracle/parity_network.py --bin $(BIN)

clean:
	cargo clean
