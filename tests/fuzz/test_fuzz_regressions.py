"""Replays the inputs the fuzz harness found (``tests/data/fuzz/<target>/``) under the harness's own rules.

Each file once crashed ``medseg.io`` (an exception other than ``MedsegError``, a decoder panic, a
``discover`` that raised) or was slow; now ``discover`` must list it and ``load`` may only raise a
``MedsegError``. New crashers of ``make fuzz`` go in the same folders.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fuzz_io import TARGETS, check_one  # noqa: E402  (the harness, a script beside this test)

DATA = Path(__file__).resolve().parents[1] / "data" / "fuzz"
CASES = sorted(p for p in DATA.glob("*/*") if p.is_file() and p.parent.name in TARGETS)


def test_there_are_regression_files():
    assert {p.parent.name for p in CASES} >= {"dicom"}


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.name}" for p in CASES])
def test_fuzz_finding_is_handled(path, tmp_path, caplog):
    target = tmp_path / f"input{TARGETS[path.parent.name]}"  # the suffix picks the reader, as in the harness
    shutil.copy(path, target)
    t0 = time.perf_counter()
    check_one(target)  # raises on anything but a MedsegError from load
    assert time.perf_counter() - t0 < 30
    for rec in caplog.records:  # what a reader said is re-emitted without header values
        assert "Lastname" not in rec.getMessage() and "id11111" not in rec.getMessage()
