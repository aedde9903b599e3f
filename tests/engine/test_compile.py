"""``torch.compile`` as an option: eager fallback with identical outputs, plain checkpoint keys, exactness.

Fast tests compile nothing (a compiler that fails, or compile off); the slow ones run Inductor on the
CPU (a C++ compiler is needed: gcc).
"""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.compiled import CompiledModule, compile_status, compiled, pad_batch
from medseg.engine.inference import sliding_window_probs
from medseg.engine.trainer import Trainer, build_optimizer
from medseg.models import build_model


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 1))


def _unet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("unet", spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8, 16))


def _failing_compile(calls: list[int]):
    def compile_fn(module: nn.Module):
        def run(*args, **kwargs):
            calls.append(1)
            raise RuntimeError("CppCompileError: C++ compile error\nno compiler here")

        return run

    return compile_fn


def _seg_step(model, batch, device):
    x, y = (t.to(device) for t in batch)
    return nn.functional.cross_entropy(model(x), y)


def _seg_data(n: int = 4, size: int = 16) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, size, size, size, generator=g)
    return TensorDataset(x, (x[:, 0] > 0.5).long())


def _trainer(model: nn.Module, run_dir, *, compile: bool, epochs: int = 1) -> Trainer:
    opt = build_optimizer(model.parameters(), "adamw", lr=0.01)
    loader = DataLoader(_seg_data(), batch_size=2, shuffle=False)
    return Trainer(model, opt, loader, _seg_step, max_epochs=epochs, run_dir=run_dir, compile=compile, progress=False)


def test_failing_compile_falls_back_to_identical_eager_outputs(caplog):
    net = _net().eval()
    calls: list[int] = []
    wrapper = CompiledModule(net, compile_fn=_failing_compile(calls))
    x = torch.rand(2, 1, 8, 8, 8)
    with caplog.at_level(logging.WARNING, logger="medseg.engine"), torch.no_grad():
        outs = [wrapper(x) for _ in range(3)]
        ref = net(x)
    for out in outs:
        assert torch.equal(out, ref)
    assert len(calls) == 1  # the compiled call is not tried again
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "CppCompileError" in warnings[0].getMessage()
    assert wrapper.status() == {"requested": True, "used": False, "fallback_reason": wrapper.fallback_reason}
    assert "CppCompileError" in str(wrapper.fallback_reason)


def test_compile_that_raises_when_built_falls_back(caplog):
    def no_compile(module):
        raise RuntimeError("torch.compile is not supported on this platform")

    net = _net().eval()
    wrapper = CompiledModule(net, compile_fn=no_compile)
    x = torch.rand(1, 1, 6, 6, 6)
    with caplog.at_level(logging.WARNING, logger="medseg.engine"), torch.no_grad():
        assert torch.equal(wrapper(x), net(x))
    assert "not supported" in caplog.text and not wrapper.used


def test_out_of_memory_is_not_a_compile_failure():
    def oom(module):
        def run(*a, **k):
            raise torch.OutOfMemoryError("out of memory")

        return run

    wrapper = CompiledModule(_net(), compile_fn=oom)
    with pytest.raises(torch.OutOfMemoryError):
        wrapper(torch.rand(1, 1, 4, 4, 4))
    assert wrapper.used  # still compiled: the sliding window's own fallback handles memory


def test_wrapper_keeps_plain_keys_modes_and_attributes():
    net = _net()
    wrapper = CompiledModule(net, compile_fn=_failing_compile([]))
    assert list(wrapper.state_dict()) == list(net.state_dict())
    wrapper.load_state_dict(_net(seed=1).state_dict())
    assert torch.equal(net[0].weight, _net(seed=1)[0].weight)
    assert [id(p) for p in wrapper.parameters()] == [id(p) for p in net.parameters()]
    wrapper.eval()
    assert not net.training
    net.output_stride = 4  # attributes the wrapper lacks are the plain network's (a task's step may read them)
    assert wrapper.output_stride == 4 and wrapper.module is net


def test_compile_false_leaves_the_model_untouched(tmp_path):
    net = _net()
    assert compiled(net, False) is net
    trainer = _trainer(_net(), tmp_path, compile=False)
    assert trainer.net is trainer.model  # single process, no compile: the network itself trains
    assert trainer.compile_status() == {"requested": False, "used": False, "fallback_reason": None}
    assert compiled(net) is compiled(net)  # one wrapper per network: compiled once, reused


def test_checkpoint_of_a_compiled_trainer_has_the_plain_keys(tmp_path, caplog):
    model = _unet()
    plain_keys = set(model.state_dict())
    trainer = _trainer(model, tmp_path, compile=True)
    assert isinstance(trainer.net, CompiledModule)
    # no real compilation in the fast suite: a compiler that fails (the eager fallback trains)
    object.__setattr__(trainer.net, "_compile_fn", _failing_compile([]))
    trainer.fit()
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert set(ckpt["model"]) == plain_keys
    assert not any(k.startswith("_orig_mod.") for k in ckpt["model"])
    _unet(seed=5).load_state_dict(ckpt["model"])  # loads into an uncompiled network
    status = trainer.compile_status()
    assert status["requested"] and not status["used"] and "CppCompileError" in status["fallback_reason"]


def test_sliding_window_compile_status_and_padded_last_batch(monkeypatch):
    net = _net().eval()
    x = torch.rand(1, 1, 20, 20, 12)
    ref, _ = sliding_window_probs(net, x, (8, 8, 8), sw_batch_size=4)
    # compile requested but failing: identical probabilities, status recorded
    monkeypatch.setattr("medseg.engine.compiled._torch_compile", _failing_compile([]))
    got, _ = sliding_window_probs(net, x, (8, 8, 8), sw_batch_size=4, compile=True)
    assert torch.equal(got, ref)
    assert compile_status(net, True)["used"] is False
    assert compile_status(net, False) == {"requested": False, "used": False, "fallback_reason": None}
    # the last, smaller batch of windows reaches the network padded to the full batch
    seen: list[int] = []

    def fn(t):
        seen.append(int(t.shape[0]))
        return t * 2

    out = pad_batch(fn, 4)(torch.arange(3.0).reshape(3, 1))
    assert seen == [4] and torch.equal(out, torch.tensor([[0.0], [2.0], [4.0]]))


needs_cxx = pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None, reason="no C++ compiler: run `make system-deps`"
)


@pytest.mark.slow
@needs_cxx
def test_compiled_sliding_window_equals_eager():
    net = _unet().eval()
    x = torch.rand(1, 1, 40, 36, 28)
    eager, _ = sliding_window_probs(net, x, (16, 16, 16), sw_batch_size=3, overlap=0.5)
    comp, _ = sliding_window_probs(net, x, (16, 16, 16), sw_batch_size=3, overlap=0.5, compile=True)
    status = compile_status(net, True)
    assert status["used"], status  # Inductor really compiled on this machine
    assert float((comp - eager).abs().max()) <= 1e-4  # same probabilities up to float reassociation


@pytest.mark.slow
@needs_cxx
def test_compiled_training_checkpoint_loads_uncompiled_and_predicts_the_same(tmp_path):
    trainer = _trainer(_unet(), tmp_path, compile=True, epochs=2)
    trainer.fit()
    assert trainer.compile_status()["used"], trainer.compile_status()
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    plain = _unet(seed=9)
    plain.load_state_dict(ckpt["model"])  # no compile needed to use the run
    x = torch.rand(1, 1, 24, 24, 20)
    eager, _ = sliding_window_probs(plain, x, (16, 16, 16), sw_batch_size=2)
    comp, _ = sliding_window_probs(trainer.model, x, (16, 16, 16), sw_batch_size=2, compile=True)
    assert float((comp - eager).abs().max()) <= 1e-4


def test_segment_compile_flag_records_the_fallback_and_keeps_the_labels(tiny_seg_run, tmp_path, monkeypatch, caplog):
    import json

    import nibabel as nib

    from medseg.cli import main
    from medseg.data.synthetic import ct_phantom, write_phantom_nifti

    ph = ct_phantom(seed=21, shape=(32, 32, 16), spacing=(6.0, 6.0, 9.0))
    nii = write_phantom_nifti(ph, tmp_path / "c0.nii.gz")[0]
    train_rec = json.loads((tiny_seg_run / "run.json").read_text())
    assert train_rec["compile"] == {"requested": False, "used": False, "fallback_reason": None}
    common = ["segment", "--model", str(tiny_seg_run), str(nii), "--device", "cpu"]
    assert main([*common, "--out", str(tmp_path / "eager")]) == 0
    monkeypatch.setattr("medseg.engine.compiled._torch_compile", _failing_compile([]))
    with caplog.at_level(logging.WARNING, logger="medseg.engine"):
        assert main([*common, "--out", str(tmp_path / "comp"), "--compile"]) == 0
    rec = json.loads((tmp_path / "comp" / "run.json").read_text())["compile"]
    assert rec["requested"] and not rec["used"] and "CppCompileError" in rec["fallback_reason"]
    assert caplog.text.count("torch.compile failed") == 1
    labels = [np.asarray(nib.load(str(tmp_path / d / "labels" / "c0.nii.gz")).dataobj) for d in ("eager", "comp")]
    assert np.array_equal(*labels)


def test_compile_keys_default_off_and_set_from_the_command_line():
    from pathlib import Path

    from medseg.config import load_config

    path = Path(__file__).resolve().parents[2] / "configs" / "seg_ct_phantom.yaml"
    assert (load_config(path).train.compile, load_config(path).infer.compile) == (False, False)
    cfg = load_config(path, ["train.compile=true", "infer.compile=true"])  # --set train.compile=true
    assert cfg.train.compile is True and cfg.infer.compile is True
