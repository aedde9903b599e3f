"""``--shard i/n`` and ``medseg merge``: 2 shards over 6 cases give the table of one run, in input order."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medseg.cli import main
from medseg.data.synthetic import ct_phantom, write_phantom_nifti
from medseg.runs import Run
from medseg.tasks import segmentation as seg
from medseg.tasks.cohort import CaseResult, Shard, finish_cohort, parse_shard, run_cohort, sharding
from medseg.tasks.inputs import CaseInput
from medseg.tasks.merge import merge_shards

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_and_cases(tmp_path_factory, tiny_seg_cfg) -> tuple[Path, list[Path]]:
    tmp = tmp_path_factory.mktemp("shards")
    cfg = tiny_seg_cfg(tmp)
    with Run.create(tmp / "run", cfg, command="train") as run:
        seg.train(cfg, run)
    cases = []
    for i in range(6):
        ph = ct_phantom(seed=40 + i, shape=(32, 32, 16), spacing=(6.0, 6.0, 9.0))
        cases.append(write_phantom_nifti(ph, tmp / "cases" / f"case{i}.nii.gz")[0])
    return tmp / "run", cases


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "segment.csv", newline="") as f:
        return list(csv.DictReader(f))


def _without_paths(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k != "outputs"} for r in rows]


@pytest.mark.slow
def test_two_shards_merged_give_the_table_of_one_run(tmp_path: Path, model_and_cases) -> None:
    model, cases = model_and_cases
    common = ["segment", "--model", str(model), *map(str, cases), "--device", "cpu", "--no-tta"]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    assert main([*common, "--out", str(tmp_path / "s1"), "--shard", "1/2"]) == 0
    assert main([*common, "--out", str(tmp_path / "s0"), "--shard", "0/2"]) == 0
    assert [r["case_id"] for r in _rows(tmp_path / "s0")] == ["case0", "case2", "case4"]  # round robin
    assert json.loads((tmp_path / "s1" / "run.json").read_text())["shard"] == {"index": 1, "count": 2, "cases": 3}
    # shards given in any order
    assert main(["merge", str(tmp_path / "s1"), str(tmp_path / "s0"), "--out", str(tmp_path / "merged")]) == 0
    one, merged = _rows(tmp_path / "one"), _rows(tmp_path / "merged")
    assert [r["case_id"] for r in merged] == [f"case{i}" for i in range(6)]
    assert list(merged[0]) == list(one[0])  # same columns in the same order
    assert _without_paths(merged) == _without_paths(one)
    for m, o in zip(merged, one):  # the same output files, written in the shard folders
        names = [Path(x.split("=", 1)[1]).name for x in m["outputs"].split("; ")]
        assert names == [Path(x.split("=", 1)[1]).name for x in o["outputs"].split("; ")]
        assert all(Path(x.split("=", 1)[1]).exists() for x in m["outputs"].split("; "))
    info = json.loads((tmp_path / "merged" / "run.json").read_text())
    assert info["summary"]["cases"] == 6 and info["summary"]["ok"] == 6 and info["summary"]["shards"] == 2
    assert (tmp_path / "merged" / "report.html").is_file()
    # a missing shard is an error naming it (exit 2), not a silently short table
    assert main(["merge", str(tmp_path / "s0"), "--out", str(tmp_path / "bad")]) == 2


def test_shard_parsing() -> None:
    assert parse_shard("2/5") == Shard(2, 5)
    assert Shard(1, 3).take(list(range(8))) == [1, 4, 7]
    for bad in ("5/5", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    with pytest.raises(SystemExit):  # a malformed --shard is a usage error
        main(["segment", "--model", "m", "x.nii.gz", "--out", "o", "--shard", "3/2"])


@pytest.mark.slow
def test_torchrun_gives_each_rank_its_shard_and_rank_0_merges(tmp_path: Path, model_and_cases) -> None:
    model, cases = model_and_cases
    args = ["segment", "--model", str(model), *map(str, cases), "--device", "cpu", "--no-tta"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "medseg"]
    r = subprocess.run([*cmd, *args, "--out", str(tmp_path / "ranks")], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _without_paths(_rows(tmp_path / "ranks")) == _without_paths(_rows(tmp_path / "one"))
    assert sorted(p.name for p in (tmp_path / "ranks.shards").iterdir()) == ["shard-0-of-2", "shard-1-of-2"]


def _ok(case: CaseInput, files) -> CaseResult:
    if case.case_id == "c3":
        raise ValueError("unreadable")
    return CaseResult.of(
        case, flags=["needs_review"] if case.case_id == "c1" else [], values={"n": int(case.case_id[1:])}
    )


def test_merge_restores_input_order_and_the_summary(tmp_path: Path) -> None:
    cases = [CaseInput(f"c{i}", tmp_path / f"c{i}.png") for i in range(7)]
    dirs = []
    for i in range(3):
        with sharding(Shard(i, 3)), Run.create(tmp_path / f"s{i}", None, command="detect") as run:
            finish_cohort(
                run,
                run_cohort(cases, _ok, out=run.path, command="detect", progress=False),
                command="detect",
                task="detection",
                report=False,
            )
        dirs.append(tmp_path / f"s{i}")
    summary = merge_shards(dirs[::-1], tmp_path / "merged")
    rows = json.loads((tmp_path / "merged" / "detect.json").read_text())
    assert [r["case_id"] for r in rows] == [f"c{i}" for i in range(7)]
    assert [r["n"] for r in rows if r["status"] == "ok"] == [0, 1, 2, 4, 5, 6]
    assert summary.cases == 7 and summary.skipped == 1 and summary.needs_review == ["c1"]
    assert summary.exit_code == 1 and "c3" in summary.skipped_cases
    with pytest.raises(Exception, match="missing shard"):
        merge_shards(dirs[:2], tmp_path / "short")
    with pytest.raises(Exception, match="given twice"):
        merge_shards([dirs[0], dirs[0], dirs[1]], tmp_path / "twice")
