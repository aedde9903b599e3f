# medseg — two commands: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.medseg-installed
DEMO_OUT ?= runs/demo

.PHONY: demo test test-slow bench setup clean help

help:
	@echo "make demo       set up .venv and run the demo on the embedded synthetic data"
	@echo "make test       set up .venv (with test extras) and run the fast test suite"
	@echo "make test-slow  also run the slow (training-to-target) tests"
	@echo "make bench      run all benchmarks, write benchmarks/results/<date>.jsonl"

setup: $(STAMP)

# torch goes in first, so that nothing pulls the CUDA build onto a machine without an NVIDIA GPU.
$(STAMP): pyproject.toml .ci/install_torch.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	PIP="$(PIP)" bash .ci/install_torch.sh
	$(PIP) install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/medseg demo --out $(DEMO_OUT) --force

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache
