"""`medseg tune` as a study: finds the good learning rates, resumes after a killed worker, shares SQLite.

Real worker processes (``python -m medseg.cli tune``) on tiny 2D phantoms. Slow: each process
imports torch and MONAI, and the study trains a few dozen tiny U-Nets.
"""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import medseg

optuna = pytest.importorskip("optuna")

from medseg.tasks.tune import sqlite_url  # noqa: E402  (after the Optuna skip)

pytestmark = pytest.mark.slow

REPO = Path(medseg.__file__).resolve().parents[1]
SPACE = {"train.lr": {"log_uniform": [1.0e-6, 1.0e-1]}}


def _worker(cfg: Path, trials: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "medseg.cli", "-q", "tune", str(cfg), "--trials", str(trials), "--no-plots"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _study(folder: Path, name: str):
    return optuna.load_study(study_name=name, storage=sqlite_url(folder / "study.db"))


def test_small_study_finds_the_good_learning_rates(tmp_path, tiny_seg2d_yaml):
    """lr in [1e-6, 1e-4] learns nothing in 6 short epochs, lr in [1e-2, 1e-1] does: the best is there."""
    from medseg.cli import main

    cfg = tiny_seg2d_yaml(
        tmp_path,
        name="lr",
        train={"epochs": 6, "steps_per_epoch": 4},
        tune={"space": SPACE, "startup_trials": 4, "warmup_epochs": 1},
    )
    assert main(["tune", str(cfg), "--trials", "10", "--no-plots"]) == 0
    study = _study(tmp_path / "lr-tune", "lr")
    assert study.best_params["train.lr"] >= 1e-3
    done = [t for t in study.trials if t.value is not None]
    good = [t.value for t in done if t.params["train.lr"] >= 1e-2]
    bad = [t.value for t in done if t.params["train.lr"] <= 1e-4]
    assert good and bad and min(good) > max(bad)
    assert study.best_value > max(bad) + 0.1


def test_resume_after_a_killed_worker_continues_the_same_study(tmp_path, tiny_seg2d_yaml):
    cfg = tiny_seg2d_yaml(
        tmp_path,
        name="kill",
        train={"epochs": 6, "steps_per_epoch": 3},
        tune={"space": SPACE, "heartbeat_seconds": 1, "pruner": "none"},
    )
    folder = tmp_path / "kill-tune"
    p = _worker(cfg, 4)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill the worker during its second trial
        if (folder / "trials" / "trial_0001" / "metrics.csv").is_file():
            break
        assert p.poll() is None, p.stdout.read() if p.stdout else ""
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    before = {t.number: t for t in _study(folder, "kill").trials}
    assert before[0].state.name == "COMPLETE" and before[1].state.name == "RUNNING"
    q = _worker(cfg, 4)
    out, _ = q.communicate(timeout=600)
    assert q.returncode == 0, out
    trials = _study(folder, "kill").trials
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 4 and "RUNNING" not in states
    assert trials[0].value == before[0].value  # the finished trial is kept, not run again
    assert trials[1].state.name == "FAIL"  # the killed trial: failed by the heartbeat ...
    retry = [t for t in trials if t.number > 1 and t.params == trials[1].params]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE"  # ... and run again with its parameters
    rows = list(csv.DictReader((folder / "trials.csv").open()))
    assert len(rows) == len(trials) == 5


def test_two_workers_share_one_sqlite_study(tmp_path, tiny_seg2d_yaml):
    cfg = tiny_seg2d_yaml(
        tmp_path, name="two", train={"epochs": 2, "steps_per_epoch": 2}, tune={"space": SPACE, "pruner": "none"}
    )
    workers = [_worker(cfg, 4) for _ in range(2)]
    outs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs
    folder = tmp_path / "two-tune"
    trials = _study(folder, "two").trials
    finished = [t for t in trials if t.state.name == "COMPLETE"]
    assert 4 <= len(finished) <= 5  # 4 wanted; two workers asking at the same instant may add one
    numbers = [t.number for t in trials]
    run_dirs = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(numbers)) == len(numbers) and len(set(run_dirs)) == len(run_dirs)  # no trial twice
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both processes ran trials
    assert all((Path(d) / "checkpoints" / "best.pt").is_file() for d in run_dirs)
    assert all(math.isfinite(t.value) for t in finished)
