"""Device choice: ``auto|cpu|cuda|cuda:N`` in configs and on the command line, clear errors otherwise."""

from __future__ import annotations

import pytest
import torch

from medseg.config import parse_config
from medseg.engine.device import select_device
from medseg.errors import ConfigError


def test_config_accepts_cuda_n_and_refuses_typos():
    assert parse_config({"task": "segmentation", "device": "cuda:1"}).device == "cuda:1"
    with pytest.raises(ConfigError, match="did you mean 'cuda'"):
        parse_config({"task": "segmentation", "device": "cud"})
    with pytest.raises(ConfigError, match="cuda:N"):
        parse_config({"task": "detection", "device": "gpu0"})


def test_select_device_checks_the_gpu_number():
    assert select_device("cpu").type == "cpu"
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n == 0:
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            select_device("cuda:0")
    else:
        assert select_device("cuda:0") == torch.device("cuda", 0)
        assert select_device(f"cuda:{n - 1}").index == n - 1
    if n:
        with pytest.raises(ConfigError, match=f"sees {n} GPU"):
            select_device(f"cuda:{n}")


def test_cli_device_option_takes_cuda_n(capsys):
    from medseg.cli import build_parser

    args = build_parser().parse_args(["segment", "--model", "m", "x.nii.gz", "--out", "o", "--device", "cuda:2"])
    assert args.device == "cuda:2"
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["segment", "--model", "m", "x.nii.gz", "--out", "o", "--device", "gpu"])
    assert e.value.code == 2 and "cuda:N" in capsys.readouterr().err


def test_thread_budget_shares_the_cores_between_ranks_and_workers(monkeypatch) -> None:
    from medseg.engine.device import available_cores, loader_options, thread_budget, torch_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cores = available_cores()
    assert thread_budget() == cores  # one process, no workers: every core
    assert thread_budget(processes=cores * 2) == 1  # never fewer than one thread
    assert thread_budget(workers=cores) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun's ranks on this machine share the cores
    assert thread_budget() == max(1, cores // 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's (or torchrun's) bound wins
    assert thread_budget(processes=1) == 1
    old = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == old
    opts = loader_options(2, "cpu")
    assert opts == {"num_workers": 2, "persistent_workers": False, "pin_memory": False}
    assert (
        loader_options(2, persistent=True)["persistent_workers"]
        and not loader_options(0, persistent=True)["persistent_workers"]
    )


def test_amp_dtype_is_float32_on_cpu_and_the_cpu_trainer_has_no_scaler() -> None:
    from medseg.engine.device import amp_dtype
    from medseg.engine.trainer import Trainer

    assert amp_dtype(torch.device("cpu")) == torch.float32
    model = torch.nn.Linear(2, 1)
    t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), [], lambda m, b, d: m(b).sum(), amp=True)
    assert not t.amp and not t.scaler.is_enabled()  # AMP asked for on CPU: the CPU path is unchanged
