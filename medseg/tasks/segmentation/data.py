"""Training data of the segmentation task: the datalists (synthetic or MSD JSON) and the cached datasets.

- :func:`synthetic_datalist` writes the embedded CT phantoms (3D) or their axial mid-slices (2D)
  as NIfTI into the run folder (reused on resume and re-runs with the same settings).
- :func:`datalists` returns the (training, validation, test) items of a config, after
  :func:`check_shapes` compared every image with its label map (headers only, before planning);
  multi-channel entries (``"image": [t1, t2]``) are stacked once into ``data/channels/`` by
  :func:`stack_channels` (the channels checked to share one grid).
- :func:`dataset` wraps items and their transform in a MONAI ``CacheDataset`` (memory),
  ``PersistentDataset`` (disk) or ``Dataset`` (``data.cache``).
- :func:`unwrap_error` finds the medseg error inside MONAI's "applying transform" chain.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.transforms import Compose

from medseg.config import SegmentationConfig, load_datalist
from medseg.data.synthetic import Phantom, ct_phantom, make_ct_dataset, make_mr_dataset, mr_phantom
from medseg.errors import ConfigError, InputError, LabelMismatchError, MedsegError
from medseg.io import discover, save_nifti
from medseg.io.registry import FORMATS, case_id, format_of
from medseg.tasks.segmentation.files import load_channels, write_nifti
from medseg.utils import atomic_write_text

__all__ = [
    "synthetic_datalist",
    "datalists",
    "validation_split",
    "validation_note",
    "check_shapes",
    "stack_channels",
    "dataset",
    "unwrap_error",
]

#: one datalist entry: ``image`` a path (or a list of paths, one per channel), ``label`` a path
Item = dict[str, Any]


def synthetic_datalist(cfg: SegmentationConfig, folder: Path) -> tuple[list[Item], list[Item]]:
    """Generate the synthetic phantoms of ``cfg`` as NIfTI in ``folder``; returns (train, test) items.

    3D: :func:`medseg.data.synthetic.make_ct_dataset` (``modality: MR``: ``make_mr_dataset``, the
    skull-stripped MR phantoms) (``dataset.json`` + ``imagesTr``/``labelsTr``,
    the last quarter of the cases under ``imagesTs``/``labelsTs`` when there are at least 4).
    2D: one axial slice near the middle of each phantom. Paths in the items are absolute.
    """
    n = cfg.data.num_cases
    n_test = max(1, round(n * 0.25)) if n >= 4 else 0
    kw: dict[str, Any] = cfg.synthetic.model_dump(exclude_none=True)
    if cfg.spatial_dims == 3:
        dl = folder / "dataset.json"
        stamp = folder / "synthetic.json"  # what was generated: reuse it on resume / re-runs
        want = json.dumps(
            {"n": n, "seed": cfg.seed, "n_test": n_test, "kw": kw, "modality": cfg.modality},
            sort_keys=True,
            default=str,
        )
        if not (dl.is_file() and stamp.is_file() and stamp.read_text() == want):
            make = make_mr_dataset if cfg.modality == "MR" else make_ct_dataset
            dl = make(folder, n_cases=n, seed=cfg.seed, n_test=n_test, **kw)
            atomic_write_text(stamp, want)
        content = json.loads(dl.read_text())

        def absolute(items: list[dict[str, str]]) -> list[Item]:
            return [{k: str(folder / v) for k, v in it.items()} for it in items]

        return absolute(content["training"]), absolute(content["test"])
    train: list[Item] = []
    test: list[Item] = []
    for i in range(n):
        ph = (mr_phantom if cfg.modality == "MR" else ct_phantom)(seed=cfg.seed * 1000 + i, **kw)
        k = ph.image.shape[2] // 2 + int(np.random.default_rng(i).integers(-3, 4))
        sl = Phantom(
            image=ph.image[:, :, k], label=ph.label[:, :, k], spacing=ph.spacing, origin=ph.origin, seed=ph.seed
        )
        split = "Ts" if i >= n - n_test else "Tr"
        img, lab = folder / f"images{split}/slice_{i:03d}.nii.gz", folder / f"labels{split}/slice_{i:03d}.nii.gz"
        for arr, p in ((sl.image, img), (sl.label, lab)):
            write_nifti(arr, ph.affine, p)
        (test if split == "Ts" else train).append({"image": str(img), "label": str(lab)})
    return train, test


def datalists(cfg: SegmentationConfig, data_dir: Path) -> tuple[list[Item], list[Item], list[Item]]:
    """(training, validation, test) items with absolute paths.

    Synthetic data is generated into ``data_dir``. Without a ``validation`` list, a seeded
    ``data.val_fraction`` of the labelled training cases is held out for validation, or with a
    single case a spatial block of it (:func:`validation_split`).

    Raises
    ------
    ConfigError without ``data.datalist`` (and no synthetic data); InputError when no training
    case has a label; the errors of :func:`medseg.config.load_datalist`.
    """
    val: list[Item] = []
    test: list[Item] = []
    if cfg.data.synthetic:
        items, test = synthetic_datalist(cfg, data_dir)
    else:
        if cfg.data.datalist is None:
            raise ConfigError("data.datalist is required (or set data.synthetic: true)")
        items = load_datalist(cfg.data.datalist, cfg.data.root, "training")
        content = json.loads(Path(cfg.data.datalist).read_text())
        if content.get("validation"):
            val = load_datalist(cfg.data.datalist, cfg.data.root, "validation")
        if content.get("test"):
            test = [
                t if isinstance(t, dict) else {"image": t}
                for t in load_datalist(cfg.data.datalist, cfg.data.root, "test")
            ]
    items = [it for it in items if "label" in it]
    if not items:
        raise InputError("the datalist has no labelled training cases (empty label set)", cfg.data.datalist)
    check_shapes(items + val)
    if any(isinstance(it.get("image"), list) for it in items + val + test):
        folder = data_dir / "channels"
        items, val, test = (stack_channels(x, folder) for x in (items, val, test))
    if not val:
        items, val = validation_split(items, cfg.data.val_fraction, cfg.seed)
    return items, val, test


def _header_shape(path: str | Path) -> tuple[int, ...] | None:
    """Spatial shape of an image from its header (trailing size-1 axes dropped), None when unknown."""
    p = Path(path)
    fmt = format_of(p) if p.is_file() else None
    describe = FORMATS[fmt].describe if fmt is not None else None
    infos = [describe(p)] if describe is not None else (discover(p) if p.exists() else [])
    shapes = [s.shape for s in infos if s.ok and s.shape]
    if len(shapes) != 1:
        return None  # unknown here: reading the case reports the problem
    shape = tuple(int(v) for v in shapes[0])
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def check_shapes(items: list[Item]) -> None:
    """Raise LabelMismatchError when an image (or a channel) and its label map differ in shape.

    Headers only (NIfTI header, DICOM headers), so a mismatch is reported before the fingerprint
    and the plan read any voxel, with both files and both shapes named.
    """
    for it in items:
        images = it["image"] if isinstance(it.get("image"), list) else [it.get("image")]
        others = [("channel", p) for p in images[1:]] + ([("label map", it["label"])] if it.get("label") else [])
        first = images[0]
        if not others or not isinstance(first, (str, Path)):
            continue
        ref = _header_shape(first)
        for what, p in others:
            shape = _header_shape(p) if isinstance(p, (str, Path)) else None
            if ref is not None and shape is not None and shape != ref:
                raise LabelMismatchError(
                    f"{what} {p} has shape {shape} but the image {images[0]} has {ref}; "
                    "they must be on the same voxel grid (resample or fix the datalist entry)",
                    p,
                )


def stack_channels(items: list[Item], folder: Path) -> list[Item]:
    """Items whose ``image`` is a list of channel files, with the channels stacked into one 4D NIfTI.

    ``folder/<case>.nii.gz`` holds ``(X, Y, Z, C)`` (written once; rewritten when a channel file
    changes, by size and modification time); the item keeps its channel files under ``channels``.
    The training pipeline then reads one file per case. Raises LabelMismatchError when the channels
    do not share one voxel grid (naming both files).
    """
    out = []
    for it in items:
        image = it.get("image")
        if not isinstance(image, list):
            out.append(it)
            continue
        target = folder / f"{case_id(image[0])}.nii.gz"
        stamp = folder / f"{case_id(image[0])}.json"
        want = json.dumps([[str(p), Path(p).stat().st_size, Path(p).stat().st_mtime_ns] for p in image])
        if not (target.is_file() and stamp.is_file() and stamp.read_text() == want):
            save_nifti(load_channels(image), target)
            atomic_write_text(stamp, want)
        out.append({**it, "image": str(target), "channels": [str(p) for p in image]})
    return out


#: share of a single training case held out as a spatial block for validation
BLOCK_FRACTION = 0.2


def validation_split(items: list[Item], val_fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """(training, validation) items when the datalist has no validation list.

    - ``val_fraction`` 0: no validation (the run says so; no figure is reported as validation);
    - at least 2 labelled cases: a seeded ``val_fraction`` of them (at least 1, at most all but 1);
    - a single case: a spatial block is held out, the last :data:`BLOCK_FRACTION` of the case
      along its longest physical axis validates and the rest trains (items carry ``"block"``, read
      by :class:`medseg.transforms.pipeline.SpatialBlockd`), so training and validation never share
      a voxel.
    """
    if val_fraction <= 0:
        return items, []
    if len(items) == 1:
        f = f"{max(val_fraction, BLOCK_FRACTION):.3g}"
        return [{**items[0], "block": f"train:{f}"}], [{**items[0], "block": f"val:{f}"}]
    order = np.random.default_rng(seed).permutation(len(items))
    n_val = min(max(1, int(round(len(items) * val_fraction))), len(items) - 1)
    return [items[i] for i in order[n_val:]], [items[i] for i in order[:n_val]]


def validation_note(train: list[Item], val: list[Item], val_fraction: float) -> dict[str, Any]:
    """What the run validates on, for ``run.json`` and the log: ``{"mode", "cases", "reason"}``.

    ``mode`` is ``"cases"`` (held-out cases), ``"spatial_block"`` (part of a single case) or ``"none"``.
    """
    if not val:
        return {
            "mode": "none",
            "cases": 0,
            "reason": "no validation (data.val_fraction is 0 and the datalist has no validation list): "
            "the last checkpoint is used and no validation figure is reported",
        }
    if any("block" in it for it in val):
        frac = str(val[0]["block"]).split(":")[1]
        return {
            "mode": "spatial_block",
            "cases": 0,
            "reason": f"only {len(train)} labelled training case: too few for a held-out case "
            f"(data.val_fraction {val_fraction:g}); the last {float(frac):.0%} of it along its longest axis "
            "validates and is left out of training",
        }
    return {"mode": "cases", "cases": len(val), "reason": f"{len(val)} held-out case(s)"}


def unwrap_error(e: BaseException) -> BaseException:
    """The MedsegError inside MONAI's 'applying transform' RuntimeError chain, else the root cause.

    An exception that is not such a chain (and holds no MedsegError) is returned as it is.
    """
    cur: BaseException | None = e
    last = e
    while cur is not None:
        if isinstance(cur, MedsegError):
            return cur
        last = cur
        cur = cur.__cause__ or cur.__context__
    return last if isinstance(e, RuntimeError) and str(e).startswith("applying transform") else e


def _join_cache_threads(timeout_s: float = 120.0) -> None:
    """Wait for the caching threads of a ``CacheDataset`` that stopped on an error.

    MONAI fills the cache with a ``multiprocessing.pool.ThreadPool``; when one case raises, the pool
    is terminated but its worker threads (``DummyProcess``) are not joined, and a worker still inside
    a torch operation when the interpreter exits aborts the process ("terminate called without an
    active exception", exit 134) after the clear error was printed. Joining them first lets the
    error end the process normally.
    """
    from multiprocessing.dummy import DummyProcess

    for t in threading.enumerate():
        if isinstance(t, DummyProcess) and t is not threading.current_thread() and t.is_alive():
            t.join(timeout_s)


def dataset(items: list[Item], transform: Compose, cfg: SegmentationConfig, cache_dir: Path) -> Dataset:
    """MONAI ``CacheDataset`` (memory) / ``PersistentDataset`` (disk) / ``Dataset`` (``data.cache``).

    With caching, every case is read and preprocessed here; a bad case raises its medseg error
    (naming the file), not MONAI's wrapper.
    """
    try:
        if cfg.data.cache == "memory":
            return CacheDataset(items, transform, cache_rate=1.0, num_workers=None, progress=False, copy_cache=False)
        if cfg.data.cache == "disk":
            cache_dir.mkdir(parents=True, exist_ok=True)
            return PersistentDataset(items, transform, cache_dir=str(cache_dir))
        return Dataset(items, transform)
    except Exception as e:  # MONAI wraps transform errors in RuntimeError
        _join_cache_threads()
        inner = unwrap_error(e)
        if inner is not e:
            raise inner from None
        raise
