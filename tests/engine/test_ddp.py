"""DDP under torchrun on CPU (gloo, 2 real processes): equivalence with one process, exact resume, a crash.

Each test starts ``torchrun`` (two interpreters importing torch: ~20 s on a loaded 2-core machine), so
they are in the slow suite.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medseg.engine.distributed import DistContext, DistributedError, value_hash

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = Path(__file__).resolve().parents[2]

_spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
assert _spec is not None and _spec.loader is not None
ddp_worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ddp_worker)

#: weights after one step of 2 ranks x batch b vs 1 process x batch 2b: float32 sums in another order
STEP_TOLERANCE = 1e-6


def _torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.slow
def test_two_ranks_step_like_one_process_with_double_batch_and_resume_exactly(tmp_path: Path) -> None:
    r = _torchrun("all", str(tmp_path), "2")
    assert r.returncode == 0, r.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    single = subprocess.run(
        [sys.executable, str(WORKER), "step", str(tmp_path), "4"], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert single.returncode == 0, single.stderr[-3000:]
    one, two = torch.load(tmp_path / "step_ws1.pt"), torch.load(tmp_path / "step_ws2.pt")
    assert _max_diff(one, two) <= STEP_TOLERANCE
    assert _max_diff(one, ddp_worker._model(0.0).state_dict()) > 1e-3  # the step moved the weights
    straight, resumed = torch.load(tmp_path / "straight.pt"), torch.load(tmp_path / "resumed.pt")
    assert _max_diff(straight, resumed) == 0.0  # exact resume under DDP (dropout and shuffling included)
    assert _max_diff(straight, one) > 1e-3
    # only rank 0 wrote: one checkpoint folder per run, no per-rank files
    assert sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    for rank in (0, 1):  # ranks that disagree: a clear error on every rank, naming the ranks
        msg = (tmp_path / f"disagree_rank{rank}.txt").read_text()
        assert "disagree on the config" in msg and "ranks [0]" in msg and "ranks [1]" in msg


@pytest.mark.slow
def test_a_crash_on_one_rank_ends_the_job_with_its_message(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    r = _torchrun("crash", str(tmp_path), timeout=180)
    took = time.perf_counter() - t0
    assert r.returncode != 0
    assert "injected failure on rank 1" in r.stderr
    assert "rank      : 1" in r.stderr  # torchrun's summary names the failing rank as the root cause
    assert took < 120  # not a hang until the 60-s collective timeout of each remaining step


def test_single_process_context_is_a_no_op() -> None:
    ctx = DistContext()
    assert not ctx.enabled and ctx.is_main
    assert ctx.mean({"a": 2.0}) == {"a": 2.0}
    assert ctx.any(True) and not ctx.any(False)
    assert ctx.broadcast({"x": 1}) == {"x": 1}
    ctx.check_same({"anything": 1}, "config")  # nothing to compare with
    assert ctx.partition([1, 2, 3], seed=0) == [1, 2, 3]
    assert ctx.sampler([1, 2], shuffle=True, seed=0) is None
    model = torch.nn.Linear(2, 2)
    assert ctx.wrap(model, torch.device("cpu")) is model
    assert ctx.rank_seed(7) == 7


def test_partition_gives_equal_disjoint_shares() -> None:
    items = list(range(10))
    shares = [DistContext(rank=r, world_size=3).partition(items, seed=1) for r in range(3)]
    assert len({len(s) for s in shares}) == 1  # every rank runs the same number of steps
    assert set().union(*map(set, shares)) == set(items)
    assert shares == [DistContext(rank=r, world_size=3).partition(items, seed=1) for r in range(3)]  # seeded
    assert DistContext(rank=1, world_size=2).rank_seed(7) != DistContext(rank=0, world_size=2).rank_seed(7)


def test_value_hash_tells_configs_apart_and_the_error_is_a_config_error() -> None:
    assert value_hash({"a": 1, "b": 2}) == value_hash({"b": 2, "a": 1})
    assert value_hash({"a": 1}) != value_hash({"a": 2})
    assert issubclass(DistributedError, Exception)
