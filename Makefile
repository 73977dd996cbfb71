# telemetry-lab: two commands on a fresh clone: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= build/demo
DEMO_SITES ?= 8
DEMO_ROWS ?= 500000

.PHONY: help install demo test bench clean

include mk/deploy.mk

help:
	@echo "make demo   - create .venv, install, generate $(DEMO_SITES) sites, run the local array job"
	@echo "make test   - run the test suite"
	@echo "make bench  - run the benchmarks in benchmarks/"
	@echo "make deploy-help - AWS deployment targets (terraform/README.md)"

$(VENV)/.installed: pyproject.toml setup.py telemetry_lab/_kernels.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/telemetry-lab generate --sites $(DEMO_SITES) --rows $(DEMO_ROWS) --seed 7 --out $(DEMO_DIR)/data
	$(BIN)/telemetry-lab run --manifest $(DEMO_DIR)/data/manifest.json --results $(DEMO_DIR)/output \
		--files-per-job 4 --workers 2
	@echo
	@echo "Result documents: $(DEMO_DIR)/output/results/latest/"
	@echo "Site reports:     $(DEMO_DIR)/output/reports/latest/"
	@echo "Index:            $(DEMO_DIR)/output/index.html"

test: install $(CHECKOV_STAMP)
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/bench_analysis.py
	$(BIN)/python benchmarks/bench_render.py

clean:
	rm -rf build .pytest_cache
