# Quick start: `make demo` (the whole job on a synthetic dataset) and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
OUT     ?= demo_out
STAMP   := $(VENV)/.installed
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache

.PHONY: demo test install clean

$(STAMP): setup.py pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/lsdc demo --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(OUT) .pytest_cache .numba_cache
