"""Exporting a trained run's network for other tools: TorchScript and ONNX, each checked and self-describing.

``medseg export RUN --format bundle|torchscript|onnx --out DIR`` writes a MONAI bundle
(:mod:`medseg.tasks.bundle`), or

- ``DIR/model.ts`` (TorchScript, ``torch.jit.trace``; the metadata in the archive's extra file
  ``medseg.json``: ``torch.jit.load(path, _extra_files={"medseg.json": ""})``) or ``DIR/model.onnx`` (opset
  17, dynamic batch and spatial axes; the metadata as the model's ``metadata_props`` entry ``medseg``),
- ``DIR/export.json``: the same metadata plus the check.

The metadata carry everything needed to reproduce medseg's preprocessing and inference: class names,
modality, spatial dims, input channels, the plan (orientation RAS, target spacing, intensity
normalisation, foreground crop rule, patch size, strides) and the sliding-window settings. The network
maps ``(B, C, *S)`` (preprocessed) to logits ``(B, K, *S)``; softmax over K gives the probabilities.

Check: the exported model and the PyTorch model run on the same random input of the plan's patch size
(and of a second, larger size, so a trace that froze a shape is caught); the largest absolute logit
difference must be <= :data:`TOLERANCE` (ONNX through onnxruntime's CPU provider), else ``CheckpointError``
and nothing is left in ``DIR``. A run whose run.json says ``failed`` (or still ``running``) is refused.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

import medseg
from medseg.engine.checkpoint import is_fold_parent, load_run_model
from medseg.errors import CheckpointError, InputError, MissingDependencyError, MissingFileError
from medseg.tasks.bundle import write_bundle
from medseg.transforms.pipeline import crop_rule
from medseg.utils import atomic_write, atomic_write_text

__all__ = ["export_model", "export_metadata", "TOLERANCE", "FORMATS"]

log = logging.getLogger(__name__)

#: largest absolute logit difference allowed between the exported and the PyTorch model (float32 CPU)
TOLERANCE = 1e-4
FORMATS = ("bundle", "torchscript", "onnx")
Format = Literal["bundle", "torchscript", "onnx"]
_FILES = {"torchscript": "model.ts", "onnx": "model.onnx"}


def _run_status(run_dir: Path) -> str | None:
    try:
        status = json.loads((run_dir / "run.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None
    return str(status) if status is not None else None


def export_metadata(run_dir: Path, cfg: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """What a user of the exported network needs: classes, input, preprocessing and inference settings."""
    plan = dict(meta.get("plan") or {})
    modality = str(meta.get("modality") or getattr(getattr(cfg, "data", None), "modality", "") or "")
    infer = getattr(cfg, "infer", None)
    return {
        "format_version": 1,
        "exported_by": f"medseg {medseg.__version__}",
        "run": run_dir.name,
        "task": getattr(cfg, "task", None),
        "class_names": list(meta.get("class_names") or []),
        "spatial_dims": int(meta.get("spatial_dims", len(plan.get("patch_size") or [0, 0, 0]))),
        "in_channels": int((meta.get("model_params") or {}).get("in_channels", 1)),
        "modality": modality,
        "model": dict(meta.get("model_params") or {}),
        "input": "(B, in_channels, *S) float32, preprocessed as below; S divisible by the plan's 'divisor'",
        "output": "(B, K, *S) logits; softmax over K = class probabilities, argmax = label map",
        "preprocessing": {
            "orientation": "RAS",
            "target_spacing_mm": plan.get("target_spacing"),
            "intensity": plan.get("norm"),
            "crop_foreground": crop_rule(modality) if modality else None,
            "patch_size": plan.get("patch_size"),
            "divisor": plan.get("divisor"),
            "plan": plan,
        },
        "inference": infer.model_dump(mode="json") if infer is not None else None,
    }


def _example(meta_out: dict[str, Any], scale: int = 1) -> torch.Tensor:
    patch = meta_out["preprocessing"]["patch_size"]
    if not patch:
        raise CheckpointError("the run's checkpoint has no plan patch size: cannot build an example input")
    gen = torch.Generator().manual_seed(0 if scale == 1 else scale)
    shape = (1, meta_out["in_channels"], *[int(p) * scale for p in patch])
    return torch.randn(shape, generator=gen)


def export_model(run_dir: str | Path, fmt: Format, out: str | Path) -> dict[str, Any]:
    """Export the network of a trained run as TorchScript or ONNX, check it, and describe it.

    Parameters
    ----------
    run_dir : a trained run folder (``config.yaml``, ``checkpoints/best.pt``, ``run.json``).
    fmt : ``torchscript`` or ``onnx``.
    out : output folder (created); ``model.ts`` / ``model.onnx`` and ``export.json`` are written atomically.

    Returns
    -------
    The metadata written to ``export.json`` (with ``file``, ``check``: inputs, max abs difference, tolerance).

    Raises
    ------
    InputError : the run is marked failed / running, a cross-validation parent, or an unknown format.
    MissingFileError, CheckpointError : not a run; the export differs from the PyTorch model beyond tolerance.
    MissingDependencyError : ONNX without the ``export`` extra.
    """
    run_dir, out = Path(run_dir), Path(out)
    if fmt not in FORMATS:
        raise InputError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not run_dir.is_dir():
        raise MissingFileError("run folder not found", run_dir)
    status = _run_status(run_dir)
    if status in ("failed", "running"):
        raise InputError(
            f"the run is marked {status!r} in run.json: its weights are not a finished model; "
            "train it again (or resume it) before exporting",
            run_dir,
        )
    if is_fold_parent(run_dir):
        raise InputError("a cross-validation parent is an ensemble of runs: export one fold's run (fold_k)", run_dir)
    model, cfg, ckpt = load_run_model(run_dir, "best", map_location="cpu")
    model.eval()
    meta = export_metadata(run_dir, cfg, dict(ckpt.get("meta") or {}))
    if fmt == "bundle":
        write_bundle(run_dir, meta, model.state_dict(), out, getattr(cfg, "postprocess", None))
        meta.update(file="configs/inference.json")
        atomic_write_text(out / "export.json", json.dumps(meta, indent=2, default=str))
        log.info("%s: exported as a MONAI bundle to %s", run_dir.name, out)
        return meta
    inputs = [_example(meta, 1), _example(meta, 2)]
    with torch.no_grad():
        expected = [model(x).float().numpy() for x in inputs]
    path = out / _FILES[fmt]
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(meta, default=str)
    with atomic_write(path, suffix=path.suffix) as tmp:
        got = _torchscript(model, inputs, text, tmp) if fmt == "torchscript" else _onnx(model, inputs, text, tmp)
        diff = max(float(np.abs(g - e).max()) for g, e in zip(got, expected))
        if not diff <= TOLERANCE:
            raise CheckpointError(
                f"the {fmt} export differs from the PyTorch model by up to {diff:.3g} (tolerance {TOLERANCE}); "
                "not written",
                run_dir,
            )
    meta.update(
        file=path.name,
        check={
            "inputs": [list(x.shape) for x in inputs],
            "max_abs_logit_diff": diff,
            "tolerance": TOLERANCE,
            "runtime": "onnxruntime CPUExecutionProvider" if fmt == "onnx" else "torch.jit.load",
        },
    )
    atomic_write_text(out / "export.json", json.dumps(meta, indent=2, default=str))
    log.info("%s: exported as %s to %s (max abs logit difference %.2g)", run_dir.name, fmt, path, diff)
    return meta


def _torchscript(model: torch.nn.Module, inputs: list[torch.Tensor], text: str, tmp: Path) -> list[np.ndarray]:
    with warnings.catch_warnings():  # trace warnings (deprecation, tensor-to-bool) are checked numerically below
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, inputs[0], check_trace=False)
        torch.jit.save(traced, str(tmp), _extra_files={"medseg.json": text})
        loaded = torch.jit.load(str(tmp), map_location="cpu")
    with torch.no_grad():
        return [loaded(x).float().numpy() for x in inputs]


def _onnx(model: torch.nn.Module, inputs: list[torch.Tensor], text: str, tmp: Path) -> list[np.ndarray]:
    try:
        import onnx  # lazy: optional dependency (the `export` extra)
        import onnxruntime as ort
    except ImportError:
        raise MissingDependencyError("ONNX export needs onnx and onnxruntime: pip install 'medseg[export]'") from None
    dims = inputs[0].dim() - 2
    axes = {0: "batch", **{2 + i: f"s{i}" for i in range(dims)}}
    with warnings.catch_warnings():  # the TorchScript-based exporter's deprecation / training-mode notes
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (inputs[0],),
            str(tmp),
            dynamo=False,  # the torch.export-based exporter needs onnxscript, which medseg does not require
            opset_version=17,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": axes, "logits": axes},
        )
    proto = onnx.load(str(tmp))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "medseg", text
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))
    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    return [np.asarray(session.run(["logits"], {"image": x.numpy()})[0], np.float32) for x in inputs]
