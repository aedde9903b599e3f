"""What a model was trained on, recorded in its run folder: :func:`record_training_data`.

Called once by each task's ``train`` after the data are split, it records in ``run.json`` under
``data``:

- ``source``: ``"datalist"`` or ``"synthetic"`` (the generator and its settings);
- ``datalist`` and ``datalist_sha256``: the datalist's path and the SHA-256 of its content (for
  synthetic data, of the ``dataset.json`` written into the run folder), so that a later change of
  the file is detectable;
- ``splits``: the case ids of each list (``training``, ``validation``, ``test``) and their counts;
- ``fingerprint``: the data fingerprint (the plan's for segmentation; image statistics otherwise);

and writes ``ood_reference.json``, the training reference of the out-of-distribution check
(:mod:`medseg.tasks.ood`), from up to :data:`MAX_REFERENCE_CASES` training and validation cases.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medseg.errors import MedsegError
from medseg.io import load, read_image_uint8
from medseg.io.registry import case_id
from medseg.runs import Run, file_sha256
from medseg.tasks.ood import build_reference, features_2d, image_features

__all__ = ["record_training_data", "item_paths", "MAX_REFERENCE_CASES"]

log = logging.getLogger("medseg.provenance")

#: training / validation cases read for the OOD reference (evenly spread over the list)
MAX_REFERENCE_CASES = 32


def item_paths(item: Any) -> list[Path]:
    """The image file(s) of one split item: a datalist dict (``image`` a path or a list of channel
    paths; ``channels`` the channel files of a stacked entry), a path, or an object with a ``path``
    attribute (a detection case)."""
    if isinstance(item, Mapping):
        image = item.get("channels") or item.get("image")
        return [Path(p) for p in image] if isinstance(image, (list, tuple)) else [Path(str(image))]
    if hasattr(item, "path"):
        return [Path(item.path)]
    return [Path(item)]


def _datalist_of(cfg: Any, run: Run) -> Path | None:
    data = getattr(cfg, "data", None)
    dl = getattr(data, "datalist", None)
    if dl is not None:
        return Path(dl)
    made = run.path / "data" / "dataset.json"
    return made if made.is_file() else None


def _features(item: Any, cfg: Any) -> dict[str, Any]:
    paths = item_paths(item)
    if getattr(cfg, "task", "") == "segmentation":
        # the file the model trains on: multi-channel entries were stacked into one file (``image``)
        image = item.get("image") if isinstance(item, Mapping) else None
        img: Any = load(image if isinstance(image, str) else paths[0])
        sd = int(getattr(cfg, "spatial_dims", 3))
        if sd == 2 and img.ndim == 4 and img.shape[-1] == 1:
            img = img[..., 0]
        return image_features(img, modality=str(getattr(cfg, "modality", "other")), spatial_dims=sd)
    volume = getattr(cfg, "volume", None)
    if volume is not None:  # a lesion classifier on volumes: the reference describes the scans
        return image_features(load(paths[0]), modality=volume.scan_modality, spatial_dims=3)
    return features_2d(read_image_uint8(paths[0]))


def _reference(cfg: Any, items: Sequence[Any], fingerprint: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not items:
        return None
    feats = []
    unique = list({str(item_paths(it)[0]): it for it in items}.values())  # lesions of one scan: the scan once
    step = max(1, len(unique) // MAX_REFERENCE_CASES)
    for it in unique[::step][:MAX_REFERENCE_CASES]:
        try:
            feats.append(_features(it, cfg))
        except (MedsegError, OSError, ValueError) as e:  # the training itself reports bad cases
            log.warning("OOD reference: %s left out (%s)", item_paths(it)[0].name, e)
    if not feats:
        return None
    seg = getattr(cfg, "task", "") == "segmentation"
    volume = getattr(cfg, "volume", None)
    if volume is not None:
        return build_reference(feats, modality=volume.scan_modality, spatial_dims=3, fingerprint=fingerprint)
    return build_reference(
        feats,
        modality=str(getattr(cfg, "modality", "RGB" if not seg else "other")),
        spatial_dims=int(getattr(cfg, "spatial_dims", 2)) if seg else 2,
        fingerprint=fingerprint,
    )


def record_training_data(
    run: Run,
    cfg: Any,
    splits: Mapping[str, Sequence[Any]],
    fingerprint: Mapping[str, Any] | None = None,
    reference: bool = True,
) -> dict[str, Any]:
    """Record the training data of a run in ``run.json`` (``data``) and write ``ood_reference.json``.

    Parameters
    ----------
    run : the training run folder.
    cfg : the run's config (``data.datalist`` / ``data.synthetic``, ``task``, ``modality`` ...).
    splits : ``{"training": items, "validation": items, "test": items}``; items are datalist dicts,
        paths, or detection cases (see :func:`item_paths`).
    fingerprint : the data fingerprint (segmentation: the plan's ``fingerprint``); None: the OOD
        reference's summary is recorded instead.
    reference : build the OOD reference from the items (False when they are case ids, not files).

    Returns
    -------
    the ``data`` record written to run.json.
    """
    dl = _datalist_of(cfg, run)
    synthetic = bool(getattr(getattr(cfg, "data", None), "synthetic", False))
    record: dict[str, Any] = {
        "source": "synthetic" if synthetic else "datalist",
        "datalist": str(dl) if dl is not None else None,
        "datalist_sha256": file_sha256(dl) if dl is not None and dl.is_file() else None,
        "splits": {k: [case_id(item_paths(it)[0]) for it in v] for k, v in splits.items()},
        "counts": {k: len(v) for k, v in splits.items()},
    }
    if synthetic:
        dump = getattr(getattr(cfg, "synthetic", None), "model_dump", None)
        record["generator"] = dump(exclude_none=True) if callable(dump) else {}
    fit = list(splits.get("training", [])) + list(splits.get("validation", []))
    ref = _reference(cfg, fit, fingerprint) if reference else None
    if ref is not None:
        run.write_json("ood_reference.json", ref)
    record["fingerprint"] = dict(fingerprint) if fingerprint is not None else ref
    run.set(data=record)
    log.info(
        "training data: %s (%s), %s",
        record["source"],
        Path(record["datalist"]).name if record["datalist"] else "-",
        ", ".join(f"{k} {n}" for k, n in record["counts"].items()),
    )
    return json.loads(json.dumps(record, default=str))
