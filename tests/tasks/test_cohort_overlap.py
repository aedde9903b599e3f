"""The cohort engine writes case k in the background while case k+1 computes (``Pending``): same rows and
files as in turn, in input order, a failed write skips only its own case, at most one case in the writer."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from medseg.tasks.cohort import CaseOutputs, CaseResult, Pending, run_cohort
from medseg.tasks.inputs import CaseInput
from medseg.utils import atomic_write_text


def _cases(tmp: Path, n: int) -> list[CaseInput]:
    return [CaseInput(f"c{i}", tmp / f"c{i}.nii.gz") for i in range(n)]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class _Job:
    """A process whose writing (``Pending``) fails for ``bad_write`` and whose compute fails for ``bad_compute``."""

    def __init__(self, bad_write: str = "", bad_compute: str = "", work: float = 0.0):
        self.bad_write, self.bad_compute, self.work = bad_write, bad_compute, work
        self.written: list[str] = []  # cases whose write finished, in order
        self.seen_at_start: dict[str, list[str]] = {}  # case -> writes finished when its compute started
        self.writer_threads: set[str] = set()

    def __call__(self, case: CaseInput, files: CaseOutputs) -> Pending:
        self.seen_at_start[case.case_id] = list(self.written)
        time.sleep(self.work)
        if case.case_id == self.bad_compute:
            raise ValueError("network failed")
        value = sum(map(ord, case.case_id))  # what the compute stage made for this case only

        def write() -> CaseResult:
            self.writer_threads.add(threading.current_thread().name)
            files.add("labels", atomic_write_text(files.path("labels", f"{case.case_id}.txt"), f"{value}\n"))
            time.sleep(self.work)
            if case.case_id == self.bad_write:
                raise OSError("disk full while writing the overlay")
            files.add("overlay", atomic_write_text(files.path("overlays", f"{case.case_id}.txt"), "picture\n"))
            self.written.append(case.case_id)
            return CaseResult.of(case, values={"value": value})

        return Pending(write)


def test_overlap_on_and_off_give_the_same_rows_and_files(tmp_path: Path) -> None:
    runs = {}
    for on in (True, False):
        job = _Job(bad_write="c2", bad_compute="c4")
        res = run_cohort(_cases(tmp_path, 6), job, out=tmp_path / str(on), command="t", progress=False, overlap=on)
        runs[on] = ([(r.case_id, r.status, r.reason, r.values, sorted(r.outputs)) for r in res], job)
    assert runs[True][0] == runs[False][0]
    assert _snapshot(tmp_path / "True") == _snapshot(tmp_path / "False")
    rows = runs[True][0]
    assert [r[0] for r in rows] == [f"c{i}" for i in range(6)]  # input order
    assert [r[1] for r in rows] == ["ok", "ok", "skipped", "ok", "skipped", "ok"]
    assert rows[2][2] == "OSError: disk full while writing the overlay" and rows[4][2] == "ValueError: network failed"
    # the failed write left nothing (its label file was written before the failure); the next case is complete
    assert not list((tmp_path / "True").rglob("c2.txt")) and not list((tmp_path / "True").rglob("c4.txt"))
    assert (tmp_path / "True" / "overlays" / "c3.txt").is_file()
    assert runs[True][1].writer_threads == {"medseg-cohort-io_0"}
    assert runs[False][1].writer_threads == {threading.current_thread().name}


def test_writing_overlaps_the_next_case_and_at_most_one_case_is_in_the_writer(tmp_path: Path) -> None:
    job = _Job(work=0.1)
    t0 = time.perf_counter()
    res = run_cohort(_cases(tmp_path, 5), job, out=tmp_path / "run", command="t", progress=False, overlap=True)
    took = time.perf_counter() - t0
    assert all(r.ok for r in res) and job.written == [f"c{i}" for i in range(5)]
    assert took < 0.9  # 5 x (100 ms compute + 100 ms write) = 1 s in turn; overlapped ~0.6 s
    for k in range(2, 5):  # when case k starts computing, the writes of cases 0 .. k-2 are done (bounded memory)
        assert {f"c{i}" for i in range(k - 1)} <= set(job.seen_at_start[f"c{k}"])
    assert all(r.seconds >= 0.2 for r in res)  # compute + write


def test_a_plain_result_and_prefetch_still_work_with_the_writer(tmp_path: Path) -> None:
    def process(case: CaseInput, files: CaseOutputs) -> CaseResult | Pending:
        data = files.loaded(lambda: "foreground")
        if case.case_id == "c1":  # a case with nothing to write returns its result at once
            return CaseResult.of(case, values={"data": data})
        return Pending(lambda: CaseResult.of(case, values={"data": data}))

    res = run_cohort(
        _cases(tmp_path, 3), process, out=tmp_path, command="t", progress=False, prefetch=lambda c: c.case_id
    )
    assert [r.values["data"] for r in res] == ["c0", "c1", "c2"]


def test_overlap_is_off_with_the_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSEG_COHORT_OVERLAP", "0")
    job = _Job()
    run_cohort(_cases(tmp_path, 2), job, out=tmp_path, command="t", progress=False)
    assert job.writer_threads == {threading.current_thread().name}


def test_an_interrupt_lets_the_case_being_written_finish_and_removes_the_interrupted_one(tmp_path: Path) -> None:
    started = threading.Event()

    def process(case: CaseInput, files: CaseOutputs) -> Pending:
        atomic_write_text(files.path("labels", f"{case.case_id}.txt"), "computed")
        if case.case_id == "c1":
            started.wait(5)
            raise KeyboardInterrupt

        def write() -> CaseResult:
            started.set()
            time.sleep(0.2)
            files.add("overlay", atomic_write_text(files.path("overlays", f"{case.case_id}.txt"), "done"))
            return CaseResult.of(case)

        return Pending(write)

    with pytest.raises(KeyboardInterrupt):
        run_cohort(_cases(tmp_path, 3), process, out=tmp_path, command="t", progress=False, overlap=True)
    assert (tmp_path / "overlays" / "c0.txt").read_text() == "done"  # finished, not cut in half
    assert not (tmp_path / "labels" / "c1.txt").exists()
