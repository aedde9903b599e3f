"""The per-case engine itself: isolation of each case, removal of partial outputs, reasons, progress, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medseg.errors import InputError
from medseg.runs import Run
from medseg.tasks.cohort import COLUMNS, CaseResult, finish_cohort, one_line_reason, run_cohort
from medseg.tasks.inputs import CaseInput
from medseg.utils import atomic_write_text


class Panic(BaseException):
    """A decoder panic: a BaseException, not an Exception."""


def _cases(tmp: Path, names: list[str]) -> list[CaseInput]:
    return [CaseInput(n, tmp / f"{n}.nii.gz", split="test" if i % 2 else "validation") for i, n in enumerate(names)]


def _process(case: CaseInput, files) -> CaseResult:
    files.add("first", atomic_write_text(files.path("out", f"{case.case_id}.txt"), "written before the failure"))
    files.path("sub", case.case_id).mkdir(parents=True, exist_ok=True)  # a folder the case made
    (files.root / "sub" / case.case_id / "x").write_text("x")
    if case.case_id == "panic":
        raise Panic("called `Result::unwrap()` on an `Err` value\nstack line 2")
    if case.case_id == "attr":
        raise AttributeError("'FileDataset' object has no attribute 'StudyInstanceUID'")
    if case.case_id == "medseg":
        try:
            raise InputError("image contains NaN", case.image)
        except InputError as e:  # wrapped the way MONAI wraps transform errors
            raise RuntimeError("applying transform <LoadCased>") from e
    return CaseResult.of(case, flags=["needs_review"], values={"score": 1.5})


def test_every_exception_of_one_case_is_contained_and_its_outputs_removed(tmp_path):
    cases = _cases(tmp_path, ["a", "panic", "attr", "medseg", "b"])
    results = run_cohort(cases, _process, out=tmp_path / "run", command="test", progress=False)
    by = {r.case_id: r for r in results}
    assert [r.status for r in results] == ["ok", "skipped", "skipped", "skipped", "ok"]
    assert by["panic"].reason == "Panic: called `Result::unwrap()` on an `Err` value"  # one line
    assert by["attr"].reason.startswith("AttributeError: 'FileDataset'")
    assert by["medseg"].reason.startswith("InputError: ") and "NaN" in by["medseg"].reason  # the cause, not the wrapper
    for cid in ("panic", "attr", "medseg"):
        assert not (tmp_path / "run" / "out" / f"{cid}.txt").exists()
        assert not (tmp_path / "run" / "sub" / cid).exists()
    for cid in ("a", "b"):
        assert Path(by[cid].outputs["first"]).read_text() == "written before the failure"


def test_keyboard_interrupt_stops_the_cohort(tmp_path):
    def stop(case, files):
        atomic_write_text(files.path(f"{case.case_id}.txt"), "partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_cohort(_cases(tmp_path, ["a", "b"]), stop, out=tmp_path, command="test", progress=False)
    assert not (tmp_path / "a.txt").exists() and not (tmp_path / "b.txt").exists()


def test_table_summary_and_exit_codes(tmp_path, capsys):
    cases = _cases(tmp_path, ["a", "attr", "b"])
    with Run.create(tmp_path / "run", command="test") as run:
        results = run_cohort(cases, _process, out=run.path, command="test")  # stderr is not a terminal here
        s = finish_cohort(run, results, command="test", task="segmentation", details={"extra": 1})
    assert capsys.readouterr().err == ""  # no progress bar when stderr is not a terminal
    d = s.to_dict()
    assert (d["cases"], d["ok"], d["skipped"], d["exit_code"], d["extra"]) == (3, 2, 1, 1, 1)
    assert d["needs_review"] == ["a", "b"] and list(d["skipped_cases"]) == ["attr"]
    header = (tmp_path / "run" / "test.csv").read_text().splitlines()[0].split(",")
    assert tuple(header[: len(COLUMNS)]) == COLUMNS and "score" in header
    rows = json.loads((tmp_path / "run" / "test.json").read_text())
    assert [r["split"] for r in rows] == ["validation", "test", "validation"]
    assert (tmp_path / "run" / "report.html").is_file()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["summary"]["exit_code"] == 1
    all_bad = [CaseResult("x", "x", status="skipped", reason="E: x")]
    with Run.create(tmp_path / "run2", command="test") as run2:
        assert finish_cohort(run2, all_bad, command="t", task="t", report=False).exit_code == 3
    with Run.create(tmp_path / "run3", command="test") as run3:
        assert finish_cohort(run3, [CaseResult("y", "y")], command="t", task="t", report=False).exit_code == 0


def test_one_line_reason_is_bounded():
    r = one_line_reason(ValueError("x" * 1000 + "\nsecond line"))
    assert len(r) <= 300 and r.endswith("...") and "\n" not in r
    assert one_line_reason(OSError()) == "OSError: no message"
