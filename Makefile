# Two commands do all set-up on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test train bench clean

# Idempotent: the stamp is rebuilt only when the project's dependencies change.
install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The pinned CPU build first: an open range would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: install
	$(PY) -m pytest

train: install
	$(VENV)/bin/av-td3 train --config configs/td3.yaml

bench: install
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) benchmarks/buffer_memory.py
	$(PY) benchmarks/td3_updates.py
	$(PY) benchmarks/env_speed.py
	$(PY) benchmarks/classical_baseline.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
