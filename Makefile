# Quick start: `make demo` (the whole job on a synthetic dataset) and `make test`.
# `make test PY=python3.12` runs the suite in a venv of that Python (.venv-py3.12), installed with
# the tested set constraints/dev-py3.12.txt. `make wheelhouse` builds the offline route for Kaggle.
PY      ?= python3
# pyenv keeps python3.12 behind a shim that refuses to run unless that version is selected:
# select every installed version for the one command that resolves the interpreter's path, or (pyenv
# not on PATH) take it from pyenv's versions folder.
resolve_py = $(shell $(1) -c 'import sys; print(sys.executable)' 2>/dev/null || \
               PYENV_VERSION=$$(pyenv versions --bare 2>/dev/null | tr '\n' ':') pyenv which $(1) 2>/dev/null || \
               ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/*/bin/$(1) 2>/dev/null | tail -1)
PYBIN   := $(call resolve_py,$(PY))
PYVER   := $(shell $(PYBIN) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
ifeq ($(PYVER),)
$(error cannot run $(PY): pass PY=<a Python 3.11+ interpreter>)
endif
# .venv for the machine's default Python (3.11 here), .venv-pyX.Y for any other
VENV    ?= $(if $(filter 3.11,$(PYVER)),.venv,.venv-py$(PYVER))
BIN     := $(VENV)/bin
# The exact versions CI tests on this Python (torch 2.14.1 / CUDA 13 on 3.11; Kaggle's torch 2.10 /
# CUDA 12.8, the declared floor, on 3.12) and the DALI build that matches that torch's CUDA major.
CONSTRAINTS ?= constraints/dev-py$(PYVER).txt
EXTRAS_3.11 := test,dali-cu13
EXTRAS_3.12 := test,dali-cu12
EXTRAS  ?= $(or $(EXTRAS_$(PYVER)),test)
OUT     ?= demo_out
STAMP   := $(VENV)/.installed
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache

.PHONY: demo test install clean wheelhouse kaggle-python

$(STAMP): setup.py pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYBIN) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	$(BIN)/python -c "import torch, lsdc; print('lsdc in $(VENV): Python $(PYVER), torch', torch.__version__)"
	touch $(STAMP)

$(CONSTRAINTS):
	@echo "no tested constraint set for Python $(PYVER) ($(CONSTRAINTS)); pass CONSTRAINTS=FILE" >&2; exit 2

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/lsdc demo --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# Kaggle code competitions run offline: wheelhouse/ holds the lsdc wheel and every wheel a Kaggle GPU
# notebook (Python 3.12, constraints/kaggle.txt) lacks, resolved by a Python 3.12 on Linux x86-64.
# tools/kaggle_rehearsal.sh then rehearses the offline install and a predict run on this machine.
KAGGLE_PY = $(call resolve_py,python3.12)

wheelhouse:
	$(KAGGLE_PY) tools/wheelhouse.py --out wheelhouse --kaggle constraints/kaggle.txt

kaggle-python:  # the Python 3.12 interpreter tools/kaggle_rehearsal.sh builds its venv with
	@echo $(KAGGLE_PY)

clean:
	rm -rf $(OUT) .pytest_cache .numba_cache
