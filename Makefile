# medseg — two commands: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.medseg-installed
DEMO_OUT ?= runs/demo
# Debian packages the real-component tests use (headless Chromium for the review report; Orthanc with
# DICOMweb for the PACS round trip, tests/pacs)
SYSTEM_PACKAGES ?= chromium orthanc orthanc-dicomweb
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-slow lint bench fuzz setup system-deps pacs clean help

help:
	@echo "make demo         set up .venv and run the demo on the embedded synthetic data"
	@echo "make test         set up .venv (with test extras) and run the fast test suite (with coverage)"
	@echo "make test-slow    also run the slow (training-to-target) tests"
	@echo "make lint         ruff (lint + format check), mypy, import-linter layer contracts"
	@echo "make system-deps  install the Debian packages real-component tests use: $(SYSTEM_PACKAGES)"
	@echo "make pacs         start a local Orthanc (DIMSE + DICOMweb) to try 'medseg pacs' with (docs/pacs.md)"
	@echo "make bench        run all benchmarks, write benchmarks/results/<date>.jsonl"
	@echo "make fuzz         fuzz medseg.io with atheris for FUZZ_SECONDS (default 60) s; crashers in build/fuzz/artifacts"

setup: $(STAMP)

# torch goes in first, so that nothing pulls the CUDA build onto a machine without an NVIDIA GPU.
$(STAMP): pyproject.toml .ci/install_torch.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	PIP="$(PIP)" bash .ci/install_torch.sh
	$(PIP) install --quiet -e ".[test,lint]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/medseg demo --out $(DEMO_OUT) --force

test: $(STAMP)
	$(PY) -m pytest -q --cov=medseg --cov-report=term:skip-covered

test-slow: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Needs root (or sudo). Tests that need these packages skip with this hint where they are absent.
system-deps:
	$(SUDO) apt-get update -qq
	$(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES)

# A throwaway Orthanc on free ports (storage in a temporary folder); prints the nodes file to use.
pacs: $(STAMP)
	$(PY) -m tests.pacs.orthanc

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# Coverage-guided fuzzing of medseg.io (DICOM by default; FUZZ_TARGET=nifti|nrrd|mha|png|tiff).
# A crasher is written to build/fuzz/artifacts: copy it to tests/data/fuzz/<target>/ (replayed by make test).
FUZZ_SECONDS ?= 60
FUZZ_TARGET ?= dicom
fuzz: $(STAMP)
	$(PIP) install --quiet -e ".[fuzz]"
	$(PY) tests/fuzz/fuzz_io.py --target $(FUZZ_TARGET) --seconds $(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache .coverage
