"""``medseg train --gpus 2`` on CPU: two real gloo ranks train one segmenter; rank 0 alone writes; resume works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medseg.cli_commands.train import torchrun_command

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "device=cpu",
    "data.num_cases=6",
    "train.max_minutes=null",
    "train.val_every=1",
    "synthetic.shape=[48,48,16]",
    "model.channels=[4,8,8,8,8]",
    "plan.max_patch_voxels=2304",
    "infer.tta=false",
    "infer.uncertainty=entropy",
    "train.batch_size=2",
]


def _medseg(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "medseg", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=400
    )


@pytest.mark.slow
def test_train_on_two_ranks_writes_one_run_folder_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    sets = [x for s in [*TINY, "train.epochs=2"] for x in ("--set", s)]
    r = _medseg("train", "configs/seg_2d.yaml", "--gpus", "2", "--out", str(out), *sets)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "ok" and info["world_size"] == 2 and info["distributed"]["backend"] == "gloo"
    assert not list(out.glob(".rank*"))  # the other rank's scratch folder is gone
    assert (out / "checkpoints" / "best.pt").is_file() and (out / "model_card.md").is_file()
    assert len((out / "metrics.csv").read_text().splitlines()) == 3  # header + 2 epochs, written once
    # exact-resume path under DDP: rank 0's checkpoint reaches both ranks, training continues to epoch 3
    sets = [x for s in [*TINY, "train.epochs=3"] for x in ("--set", s)]
    r = _medseg("train", "configs/seg_2d.yaml", "--gpus", "2", "--out", str(out), "--resume", *sets)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["epochs"] == 3


def test_gpus_relaunches_the_same_command_under_torchrun() -> None:
    cmd = torchrun_command(4, ["train", "c.yaml", "--gpus", "4", "--set", "a=1", "--gpus=4"])
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert cmd[5:] == ["-m", "medseg", "train", "c.yaml", "--set", "a=1"]


def test_gpus_below_one_is_a_usage_error(tmp_path: Path) -> None:
    r = _medseg("train", "configs/seg_2d.yaml", "--gpus", "0", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "--gpus needs N >= 1" in r.stderr
