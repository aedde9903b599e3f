"""The cohort engine reads the next case in the background (``prefetch``): same results, failures stay per case."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from medseg.tasks.cohort import CaseResult, run_cohort
from medseg.tasks.inputs import CaseInput


class Panic(BaseException):
    """A decoder panic (not an ``Exception``) raised while prefetching."""


def test_prefetch_overlaps_reading_with_processing_and_keeps_failures_per_case(tmp_path: Path) -> None:
    cases = [CaseInput(f"c{i}", tmp_path / f"c{i}.nii.gz") for i in range(5)]
    readers: list[str] = []

    def read(case: CaseInput) -> str:
        readers.append(threading.current_thread().name)
        time.sleep(0.1)
        if case.case_id == "c2":
            raise Panic("damaged frame")
        return f"pixels of {case.case_id}"

    def process(case: CaseInput, files) -> CaseResult:
        data = files.loaded(lambda: "read in the foreground")
        time.sleep(0.1)
        return CaseResult.of(case, values={"data": data})

    t0 = time.perf_counter()
    results = run_cohort(cases, process, out=tmp_path / "run", command="test", progress=False, prefetch=read)
    took = time.perf_counter() - t0
    assert [r.status for r in results] == ["ok", "ok", "skipped", "ok", "ok"]
    assert results[2].reason == "Panic: damaged frame"
    assert [r.values["data"] for r in results if r.ok] == [f"pixels of c{i}" for i in (0, 1, 3, 4)]
    assert all(name.startswith("medseg-cohort-io") for name in readers) and len(readers) == 5
    assert took < 0.9  # 5 x (100 ms read + 100 ms work) = 1 s in sequence; overlapped ~0.6 s
    # without prefetch the process reads by itself
    plain = run_cohort(cases[:1], process, out=tmp_path / "run2", command="test", progress=False)
    assert plain[0].values["data"] == "read in the foreground"
