"""Segmentation task: train a U-Net / FCN, segment new studies in their source geometry, evaluate.

Entry points (used by the CLI, the pipelines and the demo):

- :func:`train` (``medseg train CONFIG``): fingerprint + plan, cached MONAI datasets, DiceCE,
  sliding-window validation on whole volumes, best/last checkpoints, exact resume, extension
  past the planned epochs (``--resume --set train.epochs=N``).
- :func:`segment` (``medseg segment --model RUN INPUT... --out DIR``): NIfTI files, DICOM series
  folders or a datalist; writes uint8 label maps (and optional probabilities) whose affine equals
  the input's, plus a table with volumes, uncertainty and a ``needs_review`` flag. A bad case is
  reported and skipped; the others finish.
- :func:`evaluate` (``medseg evaluate --pred DIR --ref DIR``): Dice, HD95 and surface Dice per
  class and case (MONAI metrics), CSV + JSON.
- :func:`run_demo`: the demo stage.

Files are read with ``medseg.io.load`` (:func:`medseg.transforms.pipeline.loader`, :func:`read_image`)
and written with ``medseg.io.save_label`` / ``save_nifti`` (:func:`write_nifti`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.errors import (
    ConfigError,
    InputError,
    LabelMismatchError,
    MedsegError,
    MissingFileError,
)
from medseg.utils import atomic_write_text, seed_everything

__all__ = ["train", "segment", "segment_cases", "evaluate", "run_demo", "read_image", "write_nifti", "predict_case"]

log = logging.getLogger("medseg.segmentation")

_NIFTI_SUFFIXES = (".nii", ".nii.gz")


# =============================================================================== I/O (swap point)


def read_image(path: str | Path):
    """Read an image or label map as a channel-first MetaTensor ``(C, *S)`` with its RAS affine (``medseg.io.load``).

    NIfTI, a DICOM series folder or PNG/TIFF. Raises MissingFileError and the other medseg.io errors.
    """
    from medseg.io import load

    return load(path)


def write_nifti(array: np.ndarray, affine: np.ndarray, path: str | Path) -> Path:
    """Write ``array`` ``(*S)`` as NIfTI with ``affine`` (RAS mm), atomically.

    uint8 label maps go through ``medseg.io.save_label`` (qform = sform = affine), other arrays
    through ``medseg.io.save_nifti``. DICOM SEG output for DICOM inputs hooks in at
    :func:`_write_case_outputs` (``medseg.io.write_dicom_seg``).
    """
    import torch as _t
    from monai.data import MetaTensor

    from medseg.io import save_label, save_nifti

    arr = np.asarray(array)
    aff = np.asarray(affine, dtype=np.float64)
    if arr.dtype == np.uint8:
        ref = MetaTensor(_t.zeros((1,) + arr.shape, dtype=_t.uint8), affine=_t.as_tensor(aff))
        return save_label(arr, ref, path)
    return save_nifti(arr[None], path, affine=aff)


def write_probabilities(probs: np.ndarray, affine: np.ndarray, path: str | Path) -> Path:
    """Write class probabilities ``(K, *S)`` float32 as a NIfTI ``(*S, K)`` with ``affine`` (``io.save_nifti``)."""
    from medseg.io import save_nifti

    return save_nifti(
        np.asarray(probs, dtype=np.float32), path, affine=np.asarray(affine, np.float64), dtype=np.float32
    )


def _case_id(path: Path) -> str:
    name = path.name
    for suf in _NIFTI_SUFFIXES + (".png", ".tif", ".tiff", ".dcm"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name


# =============================================================================== data


def _synthetic_datalist(cfg, folder: Path) -> tuple[list[dict], list[dict]]:
    """Generate the synthetic CT phantoms (3D) or their axial mid-slices (2D) as NIfTI; (train, test)."""
    from medseg.data.synthetic import Phantom, ct_phantom, make_ct_dataset

    n = cfg.data.num_cases
    n_test = max(1, round(n * 0.25)) if n >= 4 else 0
    kw = dict(cfg.synthetic)
    if cfg.spatial_dims == 3:
        dl = folder / "dataset.json"
        stamp = folder / "synthetic.json"  # what was generated: reuse it on resume / re-runs
        want = json.dumps({"n": n, "seed": cfg.seed, "n_test": n_test, "kw": kw}, sort_keys=True, default=str)
        if not (dl.is_file() and stamp.is_file() and stamp.read_text() == want):
            dl = make_ct_dataset(folder, n_cases=n, seed=cfg.seed, n_test=n_test, **kw)
            atomic_write_text(stamp, want)
        content = json.loads(dl.read_text())
        fix = lambda items: [{k: str(folder / v) for k, v in it.items()} for it in items]  # noqa: E731
        return fix(content["training"]), fix(content["test"])
    train, test = [], []
    for i in range(n):
        ph = ct_phantom(seed=cfg.seed * 1000 + i, **kw)
        k = ph.image.shape[2] // 2 + int(np.random.default_rng(i).integers(-3, 4))
        sl = Phantom(
            image=ph.image[:, :, k], label=ph.label[:, :, k], spacing=ph.spacing, origin=ph.origin, seed=ph.seed
        )
        split = "Ts" if i >= n - n_test else "Tr"
        img, lab = folder / f"images{split}/slice_{i:03d}.nii.gz", folder / f"labels{split}/slice_{i:03d}.nii.gz"
        aff = ph.affine
        for arr, p in ((sl.image, img), (sl.label, lab)):
            write_nifti(arr, aff, p)
        (test if split == "Ts" else train).append({"image": str(img), "label": str(lab)})
    return train, test


def _datalists(cfg, data_dir: Path) -> tuple[list[dict], list[dict], list[dict]]:
    """(training, validation, test) items with absolute paths."""
    from medseg.config import load_datalist

    if cfg.data.synthetic:
        items, test = _synthetic_datalist(cfg, data_dir)
        val = []
    else:
        if cfg.data.datalist is None:
            raise ConfigError("data.datalist is required (or set data.synthetic: true)")
        items = load_datalist(cfg.data.datalist, cfg.data.root, "training")
        content = json.loads(Path(cfg.data.datalist).read_text())
        val = load_datalist(cfg.data.datalist, cfg.data.root, "validation") if content.get("validation") else []
        test = []
        if content.get("test"):
            test = [
                t if isinstance(t, dict) else {"image": t}
                for t in load_datalist(cfg.data.datalist, cfg.data.root, "test")
            ]
    items = [it for it in items if "label" in it]
    if not items:
        raise InputError("the datalist has no labelled training cases (empty label set)", cfg.data.datalist)
    if not val:
        rng = np.random.default_rng(cfg.seed)
        order = rng.permutation(len(items))
        n_val = (
            max(1, int(round(len(items) * cfg.data.val_fraction)))
            if cfg.data.val_fraction > 0 and len(items) > 1
            else 0
        )
        val = [items[i] for i in order[:n_val]]
        items = [items[i] for i in order[n_val:]]
    return items, val, test


def _unwrap(e: BaseException) -> BaseException:
    """The MedsegError inside MONAI's 'applying transform' RuntimeError chain, else the root cause."""
    cur: BaseException | None = e
    last = e
    while cur is not None:
        if isinstance(cur, MedsegError):
            return cur
        last = cur
        cur = cur.__cause__ or cur.__context__
    return last if isinstance(e, RuntimeError) and str(e).startswith("applying transform") else e


def _dataset(items: list[dict], transform, cfg, cache_dir: Path):
    """MONAI CacheDataset (memory) / PersistentDataset (disk) / Dataset; bad cases raise the MedsegError."""
    from monai.data import CacheDataset, Dataset, PersistentDataset

    try:
        if cfg.data.cache == "memory":
            return CacheDataset(items, transform, cache_rate=1.0, num_workers=None, progress=False, copy_cache=False)
        if cfg.data.cache == "disk":
            cache_dir.mkdir(parents=True, exist_ok=True)
            return PersistentDataset(items, transform, cache_dir=str(cache_dir))
        return Dataset(items, transform)
    except Exception as e:  # MONAI wraps transform errors in RuntimeError
        inner = _unwrap(e)
        if inner is not e:
            raise inner from None
        raise


# =============================================================================== model / loss


def _model_params(cfg, plan: Mapping[str, Any], in_channels: int) -> dict[str, Any]:
    params = cfg.model.model_dump()
    name = params.pop("name")
    params.setdefault("spatial_dims", cfg.spatial_dims)
    params.setdefault("in_channels", in_channels)
    params.setdefault("out_channels", len(cfg.class_names))
    if name == "fcn" and params.get("pretrained"):
        params["encoder"] = "lite0"  # so load_run_model rebuilds the same encoder (with pretrained: false)
    if name == "unet":
        levels = len(params.get("channels") or (16, 32, 64, 128))
        if "strides" not in params:
            params["strides"] = plan["strides"][:levels]
    return {"name": name, **params}


def _loss_fn():
    from monai.losses import DiceCELoss

    dice_ce = DiceCELoss(
        to_onehot_y=True,
        softmax=True,
        include_background=False,
        squared_pred=False,
        smooth_nr=1e-5,
        smooth_dr=1e-5,
        batch=True,
    )

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # DynUNet deep supervision in training: (B, 1 + n, K, *S), heads already at full size
        if out.dim() == y.dim() + 1:
            n = out.shape[1]
            w = [0.5**i for i in range(n)]
            return sum(wi * dice_ce(out[:, i], y) for i, wi in enumerate(w)) / sum(w)
        return dice_ce(out, y)

    return loss


def _step_fn(loss):
    def step(model, batch, device):
        x = batch["image"].to(device, non_blocking=True)
        y = batch["label"].to(device, non_blocking=True)
        return loss(model(x), y)

    return step


def _dice_per_class(pred: torch.Tensor, ref: torch.Tensor, n_classes: int) -> np.ndarray:
    """Dice per foreground class (``n_classes - 1`` values; NaN where both are empty) via MONAI DiceMetric."""
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    p = one_hot(torch.as_tensor(pred).long().reshape((1, 1) + tuple(pred.shape[-_nd(pred) :])), n_classes)
    r = one_hot(torch.as_tensor(ref).long().reshape((1, 1) + tuple(ref.shape[-_nd(ref) :])), n_classes)
    m = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    return m(p, r)[0].cpu().numpy()


def _nd(t) -> int:
    return t.ndim if t.ndim in (2, 3) and t.shape[0] != 1 else t.ndim - 1


# =============================================================================== train


def _plan(cfg, run_dir: Path, items: list[dict], resume: bool) -> dict[str, Any]:
    from medseg.engine.plan import fingerprint, make_plan

    path = run_dir / "plan.json"
    if resume and path.is_file():
        return json.loads(path.read_text())
    fp = fingerprint(
        items, spatial_dims=cfg.spatial_dims, modality=cfg.modality, max_cases=cfg.plan.fingerprint_cases, seed=cfg.seed
    )
    levels = len(cfg.model.model_dump().get("channels") or (16, 32, 64, 128))
    plan = make_plan(
        fp, spatial_dims=cfg.spatial_dims, modality=cfg.modality, levels=levels, overrides=cfg.plan.model_dump()
    )
    plan = {"fingerprint": fp, **plan}
    atomic_write_text(path, json.dumps(plan, indent=2) + "\n")
    return plan


def _transforms(cfg, plan):
    from medseg.transforms.pipeline import train_transforms

    flip = cfg.augment.flip_axes
    if flip is None and cfg.modality == "RGB":
        flip = list(range(cfg.spatial_dims))
    return train_transforms(
        spatial_dims=cfg.spatial_dims,
        modality=cfg.modality,
        target_spacing=plan["target_spacing"],
        patch_size=plan["patch_size"],
        n_classes=len(cfg.class_names),
        label_map=cfg.label_map,
        norm=plan["norm"],
        augment=cfg.augment.level,
        flip_axes=flip,
        samples_per_image=cfg.augment.samples_per_image,
        pos_fraction=cfg.augment.pos_fraction,
    )


def train(cfg, run, resume: bool = False) -> dict[str, Any]:
    """Train a segmenter as configured; write checkpoints, metrics and the plan into ``run``.

    Parameters
    ----------
    cfg : :class:`medseg.config.SegmentationConfig`.
    run : :class:`medseg.runs.Run` (the run folder).
    resume : continue from ``checkpoints/last.pt`` (exactly), possibly to a larger ``train.epochs``.

    Returns
    -------
    summary dict: epochs, best validation Dice (mean over foreground classes) and its epoch,
    stop reason, training seconds, run folder.
    """
    from monai.data import DataLoader, ThreadDataLoader

    from medseg.engine.device import describe_device, select_device, use_amp
    from medseg.engine.trainer import Trainer, build_optimizer, build_scheduler
    from medseg.models import build_model

    if len(cfg.class_names) < 2:
        raise ConfigError("class_names needs background plus at least one class")
    device = select_device(cfg.device)
    run.set(device=describe_device(device))
    seed_everything(cfg.seed)
    run_dir = Path(run.path)
    with run.stage("data"):
        train_items, val_items, _ = _datalists(cfg, run_dir / "data")
        plan = _plan(cfg, run_dir, train_items + val_items, resume)
        train_tf, val_tf = _transforms(cfg, plan)
        train_ds = _dataset(train_items, train_tf, cfg, run_dir / "cache" / "train")
        val_ds = _dataset(val_items, val_tf, cfg, run_dir / "cache" / "val") if val_items else None
    in_channels = int(plan["fingerprint"]["channels"])
    params = _model_params(cfg, plan, in_channels)
    seed_everything(cfg.seed)
    model = build_model(**params)
    if cfg.data.num_workers == 0:
        # patches are cropped/augmented in a background thread while the network trains on the previous
        # batch (MONAI ThreadDataLoader); one thread keeps the random stream in order (exact resume)
        loader = ThreadDataLoader(train_ds, batch_size=cfg.train.batch_size, shuffle=True, num_workers=0, buffer_size=1)
    else:
        loader = DataLoader(train_ds, batch_size=cfg.train.batch_size, shuffle=True, num_workers=cfg.data.num_workers)
    loss = _loss_fn()
    n_classes = len(cfg.class_names)
    amp = use_amp(device, cfg.train.amp)

    cpu0 = time.process_time()

    def val_fn(m) -> dict[str, float]:
        from medseg.engine.inference import sliding_window_probs

        cpu_s = time.process_time() - cpu0  # CPU seconds of this process (contention-independent)

        dices = []
        for i in range(len(val_ds)):
            d = val_ds[i]
            probs, _ = sliding_window_probs(
                m,
                d["image"].as_tensor()[None],
                plan["patch_size"],
                sw_batch_size=cfg.infer.batch_size,
                overlap=min(cfg.infer.overlap, 0.25),
                device=device,
                amp=amp,
            )
            pred = probs.argmax(1)[0].cpu()
            dices.append(_dice_per_class(pred, d["label"].as_tensor()[0], n_classes))
        arr = np.array(dices)
        per_class = np.nanmean(arr, axis=0) if len(arr) else np.full(n_classes - 1, np.nan)
        out = {"val_dice": float(np.nanmean(per_class)), "cpu_seconds": cpu_s}
        out.update({f"val_dice_{n}": float(v) for n, v in zip(cfg.class_names[1:], per_class)})
        return out

    opt = build_optimizer(model.parameters(), cfg.train.optimizer, cfg.train.lr, cfg.train.weight_decay)
    sched = build_scheduler(opt, cfg.train.scheduler, cfg.train.epochs)
    trainer = Trainer(
        model,
        opt,
        loader,
        _step_fn(loss),
        val_fn=val_fn if val_ds is not None else None,
        key_metric="val_dice" if val_ds is not None else "train_loss",
        mode="max" if val_ds is not None else "min",
        scheduler=sched,
        device=device,
        amp=amp,
        grad_clip=cfg.train.grad_clip,
        max_epochs=cfg.train.epochs,
        max_minutes=cfg.train.max_minutes,
        val_every=cfg.train.val_every,
        early_stop_patience=cfg.train.early_stop_patience,
        steps_per_epoch=cfg.train.steps_per_epoch,
        seed=cfg.seed,
        run_dir=run_dir,
        model_meta={
            "model_params": params,
            "plan": _plan_meta(plan),
            "class_names": list(cfg.class_names),
            "modality": cfg.modality,
            "spatial_dims": cfg.spatial_dims,
        },
    )
    with run.stage("train"):
        # resume: model, optimiser, scheduler (stretched by the Trainer when train.epochs grew), state, RNG
        state = trainer.fit(resume=resume)
    summary = {
        "epochs": state.epoch,
        "best_val_dice": state.best_metric,
        "best_epoch": state.best_epoch,
        "stop_reason": state.stop_reason,
        "train_seconds": round(state.train_seconds, 1),
        "train_cases": len(train_items),
        "val_cases": len(val_items),
        "patch_size": plan["patch_size"],
        "target_spacing": plan["target_spacing"],
        "run_dir": str(run_dir),
    }
    run.write_json("train_summary.json", summary)
    return summary


def _plan_meta(plan: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in plan.items() if k != "fingerprint"}


# =============================================================================== inference


def _expand_inputs(inputs: Iterable[str | Path]) -> list[tuple[str, Path, Path | None]]:
    """(case_id, image path, reference label or None) for files, DICOM folders and datalist JSONs."""
    out: list[tuple[str, Path, Path | None]] = []
    for p in inputs:
        p = Path(p)
        if p.suffix == ".json" and p.is_file():
            content = json.loads(p.read_text())
            for key in ("test", "validation", "training"):
                for it in content.get(key, []):
                    img = it["image"] if isinstance(it, dict) else it
                    lab = it.get("label") if isinstance(it, dict) else None
                    ip = (p.parent / img) if not Path(img).is_absolute() else Path(img)
                    lp = ((p.parent / lab) if not Path(lab).is_absolute() else Path(lab)) if lab else None
                    out.append((_case_id(ip), ip, lp))
        elif p.is_dir() and any(c.name.lower().endswith(_NIFTI_SUFFIXES) for c in p.iterdir()):
            for c in sorted(p.iterdir()):  # a folder of NIfTI files (not a DICOM series)
                if c.name.lower().endswith(_NIFTI_SUFFIXES):
                    out.append((_case_id(c), c, None))
        else:
            out.append((_case_id(p), p, None))
    seen: dict[str, int] = {}
    uniq = []
    for cid, ip, lp in out:
        if cid in seen:
            seen[cid] += 1
            cid = f"{cid}_{seen[cid]}"
        else:
            seen[cid] = 0
        uniq.append((cid, ip, lp))
    return uniq


def predict_case(
    model, path: str | Path, *, meta: Mapping[str, Any], infer, device: torch.device, post=None
) -> dict[str, Any]:
    """Segment one image and return the result in its source geometry.

    Parameters
    ----------
    model : trained network (eval mode).
    path : NIfTI file or DICOM series folder.
    meta : checkpoint meta (``plan``, ``class_names``, ``modality``, ``spatial_dims``).
    infer : :class:`medseg.config.SegInferSection`.
    device : where the network runs.
    post : :class:`medseg.config.SegPostSection` or None.

    Returns
    -------
    dict: ``labels`` (*S) uint8 and ``probs`` (K, *S) float32 in the source voxel grid, ``affine``
    (4x4 RAS, equal to the input's), ``uncertainty`` (float), ``volumes_ml`` per class.
    """
    from monai.data import MetaTensor
    from monai.transforms import Invertd

    from medseg.engine.inference import (
        component_volumes_ml,
        entropy_uncertainty,
        postprocess_labels,
        sliding_window_probs,
    )
    from medseg.transforms.pipeline import CheckCased, preprocess

    path = Path(path)
    if not path.exists():
        raise MissingFileError("input not found", path)
    plan = meta["plan"]
    names = list(meta["class_names"])
    sd = int(meta["spatial_dims"])
    pre = preprocess(
        ["image"],
        spatial_dims=sd,
        modality=meta["modality"],
        target_spacing=plan["target_spacing"],
        norm=plan["norm"],
        crop_foreground=True,
        check=CheckCased(len(meta["class_names"])),
    )
    try:
        d = pre({"image": str(path)})
    except Exception as e:
        inner = _unwrap(e)
        if isinstance(inner, MedsegError):
            raise inner from None
        raise InputError(
            f"cannot read or preprocess the image ({type(inner).__name__}: {str(inner)[:200]})", path
        ) from None
    img = d["image"]
    if not torch.isfinite(img.as_tensor()).all():
        raise InputError("image contains NaN or infinite values", path)
    src_affine = np.asarray(img.meta["source_affine"], dtype=np.float64)
    tta_axes = (infer.tta_axes if infer.tta_axes is not None else list(range(sd))) if infer.tta else None
    want_dis = infer.tta and infer.uncertainty == "tta"
    probs, dis = sliding_window_probs(
        model,
        img.as_tensor()[None],
        plan["patch_size"],
        sw_batch_size=infer.batch_size,
        overlap=infer.overlap,
        sigma_scale=infer.sigma_scale,
        device=device,
        amp=device.type == "cuda",
        tta_axes=tta_axes,
        return_disagreement=want_dis,
    )
    d["pred"] = MetaTensor(probs[0].cpu(), affine=img.affine, meta=dict(img.meta))
    inv = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False, to_tensor=True)
    d = inv(d)
    probs_src = torch.as_tensor(d["pred"]).float()
    out_affine = np.asarray(d["pred"].affine, dtype=np.float64) if hasattr(d["pred"], "affine") else src_affine
    if not np.allclose(out_affine, src_affine, atol=1e-4):
        log.warning("%s: inverted affine differs from the source's; writing with the source affine", path.name)
    labels = probs_src.argmax(0).numpy().astype(np.uint8)
    if post is not None:
        vox_ml = (
            abs(float(np.linalg.det(src_affine[:3, :3]))) / 1000.0
            if sd == 3
            else float(np.prod(np.linalg.norm(src_affine[:2, :2], axis=0))) / 1000.0
        )
        largest = [names.index(c) for c in post.largest_component if c in names]
        labels = postprocess_labels(
            labels,
            largest_component=largest,
            min_size_voxels=int(math.ceil(post.min_component_ml / vox_ml)) if post.min_component_ml else 0,
            fill_holes=post.fill_holes,
        )
    if want_dis:
        fg = torch.as_tensor(probs.argmax(1)[0] > 0)
        unc = float(dis[0][fg].mean()) if bool(fg.any()) else 0.0
    else:
        unc = entropy_uncertainty(probs_src, torch.as_tensor(labels))
    src_meta = img.meta
    dicom_sources = list(src_meta.get("source_paths") or []) if src_meta.get("format") == "dicom" else []
    return {
        "labels": labels,
        "probs": probs_src.numpy().astype(np.float32),
        "affine": src_affine,
        "uncertainty": unc,
        "volumes_ml": component_volumes_ml(labels, src_affine, names),
        "dicom_sources": dicom_sources,
        "class_names": names,
    }


def _write_case_outputs(
    res: Mapping[str, Any], case_id: str, out: Path, save_probs: bool, model_name: str | None = None
) -> dict[str, str]:
    """Write the label map (and probabilities) of one case; returns {kind: absolute path}.

    For a DICOM series input a DICOM SEG referencing the slices that were used (localizers and
    other excluded files stay out) is written too, via :func:`medseg.io.write_dicom_seg`.
    """
    outputs = {"labels": str(write_nifti(res["labels"], res["affine"], out / "labels" / f"{case_id}.nii.gz").resolve())}
    if save_probs:
        outputs["probabilities"] = str(
            write_probabilities(res["probs"], res["affine"], out / "probabilities" / f"{case_id}.nii.gz").resolve()
        )
    if res.get("dicom_sources") and np.asarray(res["labels"]).ndim == 3:
        from monai.data import MetaTensor

        from medseg.io import write_dicom_seg

        labels = MetaTensor(torch.as_tensor(res["labels"])[None], affine=torch.as_tensor(res["affine"]))
        seg = write_dicom_seg(
            labels,
            res["dicom_sources"],
            out / "dicom_seg" / f"{case_id}.seg.dcm",
            dict(enumerate(res["class_names"])),
            model_name=model_name,
        )
        outputs["dicom_seg"] = str(Path(seg).resolve())
    return outputs


def segment_cases(
    model_dir: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    device: str = "auto",
    infer_overrides: Mapping[str, Any] | None = None,
    thumbnails: bool = True,
):
    """Segment a cohort; returns ``(ReviewCase list, table rows)``. Bad cases are skipped and reported.

    ``out`` must exist. ``infer_overrides`` patch the run's ``infer`` section (e.g. ``{"tta": True}``).
    """
    from medseg.engine.checkpoint import load_run_model
    from medseg.engine.device import select_device
    from medseg.review.cases import ReviewCase

    out = Path(out)
    dev = select_device(device)
    model, cfg, ckpt = load_run_model(model_dir, "best", map_location=dev)
    model.to(dev)
    meta = ckpt.get("meta", {})
    if "plan" not in meta:
        raise MissingFileError("checkpoint has no segmentation plan (not a medseg segmentation run)", model_dir)
    infer = cfg.infer.model_copy(update=dict(infer_overrides or {}))
    names = list(meta["class_names"])
    cases, rows = [], []
    for cid, ip, lp in _expand_inputs(inputs):
        t0 = time.perf_counter()
        try:
            res = predict_case(model, ip, meta=meta, infer=infer, device=dev, post=cfg.postprocess)
            outputs = _write_case_outputs(
                res, cid, out, infer.save_probabilities, model_name=f"{cfg.model.name} ({Path(model_dir).name})"
            )
            metrics: dict[str, float] = {}
            if lp is not None and Path(lp).exists():
                ref = np.asarray(read_image(lp))[0].astype(np.int64)
                if ref.size == res["labels"].size:  # 2D label maps are stored as (X, Y, 1)
                    ref = ref.reshape(res["labels"].shape)
                for src, dst in cfg.label_map.items():
                    ref[ref == src] = dst
                if ref.shape == res["labels"].shape:
                    dsc = _dice_per_class(torch.as_tensor(res["labels"]), torch.as_tensor(ref), len(names))
                    metrics = {f"dice_{n}": round(float(v), 4) for n, v in zip(names[1:], dsc)}
                    metrics["dice_mean"] = round(float(np.nanmean(dsc)), 4)
            needs = bool(res["uncertainty"] > infer.review_threshold)
            thumb = _thumbnail(ip, res, out, cid, names) if thumbnails else None
            case = ReviewCase(
                case_id=cid,
                task="segmentation",
                volumes_ml=res["volumes_ml"],
                uncertainty=round(res["uncertainty"], 4),
                needs_review=needs,
                metrics=metrics,
                outputs=outputs,
                thumbnail=thumb,
                overlays=[thumb] if thumb else [],
            )
            log.info(
                "%s: segmented in %.1f s (uncertainty %.3f%s)",
                cid,
                time.perf_counter() - t0,
                res["uncertainty"],
                ", needs review" if needs else "",
            )
        except (MedsegError, RuntimeError, ValueError, OSError) as e:
            inner = _unwrap(e)
            log.error("%s: skipped: %s", cid, inner)
            case = ReviewCase(
                case_id=cid, task="segmentation", status="skipped", error=f"{type(inner).__name__}: {inner}"
            )
        cases.append(case)
        row = {
            "case_id": cid,
            "input": str(ip),
            "status": case.status,
            "error": case.error or "",
            "uncertainty": case.uncertainty,
            "needs_review": case.needs_review,
            **{f"volume_ml_{k}": v for k, v in case.volumes_ml.items()},
            **case.metrics,
            **{f"output_{k}": v for k, v in case.outputs.items()},
        }
        rows.append(row)
    return cases, rows


def _thumbnail(image_path: Path, res: Mapping[str, Any], out: Path, cid: str, names: Sequence[str]) -> str | None:
    """Overlay PNG through the review helper's API when it is present (None otherwise)."""
    try:
        from medseg.review.overlay import overlay_2d, overlay_volume, save_png  # type: ignore[attr-defined]
    except ImportError:
        return None
    try:
        img = np.asarray(read_image(image_path))[0]
        lab = res["labels"]
        if lab.ndim == 3:
            k = int(np.argmax((lab > 0).sum(axis=(0, 1)))) if lab.any() else lab.shape[2] // 2
            rgb = overlay_volume(
                img, lab, affine=res["affine"], view="axial", index=k, class_names=dict(enumerate(names))
            )
        else:
            rgb = overlay_2d(img, lab, window="soft_tissue", class_names=dict(enumerate(names)))
        return str(save_png(rgb, out / "overlays" / f"{cid}.png").resolve())
    except Exception as e:  # a thumbnail never fails a case
        log.warning("%s: no thumbnail (%s)", cid, e)
        return None


def _write_table(rows: list[dict], out: Path, name: str = "segmentation") -> tuple[Path, Path]:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow(r)
    c = atomic_write_text(out / f"{name}.csv", buf.getvalue())
    j = atomic_write_text(out / f"{name}.json", json.dumps(rows, indent=2, default=str) + "\n")
    return c, j


def segment(
    model_dir: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    device: str = "auto",
    force: bool = False,
    tta: bool | None = None,
    save_probabilities: bool | None = None,
    **_: Any,
) -> dict[str, Any]:
    """Segment images with a trained run; outputs in the source geometry.

    Parameters
    ----------
    model_dir : run folder of ``medseg train`` (config.yaml + checkpoints/best.pt).
    inputs : NIfTI files, DICOM series folders, or MSD datalist JSONs.
    out : output folder (a medseg run folder: run.json, labels/, probabilities/, segmentation.csv/.json).
    device : "auto" | "cpu" | "cuda".
    force : move an existing output folder aside instead of failing.
    tta, save_probabilities : override the run's ``infer`` settings.

    Returns
    -------
    summary: cases, ok, skipped (with reasons), needs_review, table paths.
    """
    from medseg.runs import Run

    out = Path(out)
    model_dir = Path(model_dir)
    if not (model_dir / "config.yaml").is_file():
        raise MissingFileError("not a trained medseg run folder (no config.yaml)", model_dir)
    run = Run.create(out, None, force=force, command="segment")
    ov = {}
    if tta is not None:
        ov["tta"] = tta
    if save_probabilities is not None:
        ov["save_probabilities"] = save_probabilities
    with run:
        with run.stage("segment"):
            cases, rows = segment_cases(model_dir, inputs, out, device=device, infer_overrides=ov)
        csv_path, json_path = _write_table(rows, out)
        skipped = {c.case_id: c.error for c in cases if c.status != "ok"}
        summary = {
            "cases": len(cases),
            "ok": len(cases) - len(skipped),
            "skipped": len(skipped),
            "needs_review": [c.case_id for c in cases if c.needs_review],
            "table": str(csv_path),
        }
        from medseg.review.report import write_report

        summary["report"] = str(
            write_report(
                out,
                cases,
                title="medseg segmentation review",
                summary={"segmentation": {k: v for k, v in summary.items() if k not in ("table",)}},
            )
        )
        if skipped:
            summary["skipped_cases"] = skipped
        run.set(model=str(model_dir.resolve()), summary=summary)
    return summary


# =============================================================================== evaluation


def _label_files(folder: Path) -> dict[str, Path]:
    if (folder / "labels").is_dir():
        folder = folder / "labels"
    return {
        _case_id(p): p for p in sorted(folder.iterdir()) if p.is_file() and p.name.lower().endswith(_NIFTI_SUFFIXES)
    }


def evaluate(
    pred: str | Path,
    ref: str | Path,
    out: str | Path | None = None,
    *,
    tolerance_mm: float = 2.0,
    class_names: Sequence[str] | None = None,
    **_: Any,
) -> dict[str, Any]:
    """Dice, HD95 (mm) and surface Dice (``tolerance_mm``) per class and case (MONAI metrics).

    Parameters
    ----------
    pred, ref : folders of NIfTI label maps matched by file name (``pred/labels/`` is used when present).
    out : output folder (default: ``<pred>_evaluation`` beside ``pred``); gets ``evaluation.csv``
        (one row per case and class) and ``evaluation.json`` (means per class, skipped cases).
    tolerance_mm : surface Dice tolerance.
    class_names : names of classes 1..K-1 (default: "class_<i>").

    A case whose prediction and reference do not overlay (shape/affine) or is missing is skipped
    and listed. Returns the JSON summary.
    """
    from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDiceMetric
    from monai.networks.utils import one_hot

    pred, ref = Path(pred), Path(ref)
    for p in (pred, ref):
        if not p.is_dir():
            raise MissingFileError("expected a folder of NIfTI label maps", p)
    out = Path(out) if out is not None else pred.parent / f"{pred.name}_evaluation"
    out.mkdir(parents=True, exist_ok=True)
    label_map: dict[int, int] = {}
    model_run = _model_run_of(pred)
    if model_run is not None:  # a 'medseg segment' output: use the model's class names and label map
        try:
            from medseg.config import load_config

            mcfg = load_config(model_run / "config.yaml")
            class_names = class_names or list(mcfg.class_names[1:])
            label_map = dict(mcfg.label_map)
        except (MedsegError, OSError) as e:
            log.warning("cannot read the model config of %s (%s)", pred, e)
    pf, rf = _label_files(pred), _label_files(ref)
    rows, skipped = [], {}
    for cid in sorted(set(pf) | set(rf)):
        if cid not in pf or cid not in rf:
            skipped[cid] = "no prediction" if cid not in pf else "no reference"
            continue
        try:
            p, r = read_image(pf[cid]), read_image(rf[cid])
            if tuple(p.shape) != tuple(r.shape) or not np.allclose(
                np.asarray(p.affine), np.asarray(r.affine), atol=1e-3
            ):
                raise LabelMismatchError(
                    f"prediction {pf[cid].name} and reference {rf[cid]} do not overlay (shape or affine differ)",
                    pf[cid],
                )
            pa, ra = p.as_tensor().long(), r.as_tensor().long()
            if label_map:
                ra0 = ra.clone()
                for src, dst in label_map.items():
                    ra[ra0 == src] = dst
            k = int(max(pa.max(), ra.max())) + 1
            if class_names is not None:
                k = max(k, len(class_names) + 1)
            k = max(k, 2)
            sd = pa.ndim - 1
            spacing = [float(x) for x in np.linalg.norm(np.asarray(p.affine)[:sd, :sd], axis=0)]
            po, ro = one_hot(pa[None], k), one_hot(ra[None], k)
            dice = DiceMetric(include_background=False, reduction="none", ignore_empty=False)(po, ro)[0]
            hd = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(
                po, ro, spacing=spacing
            )[0]
            sdice = SurfaceDiceMetric([tolerance_mm] * (k - 1), include_background=False, reduction="none")(
                po, ro, spacing=spacing
            )[0]
            for c in range(1, k):
                name = class_names[c - 1] if class_names and c - 1 < len(class_names) else f"class_{c}"
                rows.append(
                    {
                        "case_id": cid,
                        "class": name,
                        "label": c,
                        "dice": float(dice[c - 1]),
                        "hd95_mm": float(hd[c - 1]),
                        "surface_dice": float(sdice[c - 1]),
                        "pred_voxels": int((pa == c).sum()),
                        "ref_voxels": int((ra == c).sum()),
                    }
                )
        except (MedsegError, RuntimeError, ValueError, OSError) as e:
            skipped[cid] = f"{type(e).__name__}: {e}"
            log.error("%s: skipped: %s", cid, e)
    if rows:
        _write_table(rows, out, "evaluation_cases")
    per_class: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(r["class"] for r in rows):
        sel = [r for r in rows if r["class"] == name]
        per_class[name] = {m: _nanmean([r[m] for r in sel]) for m in ("dice", "hd95_mm", "surface_dice")}
    summary = {
        "cases": len({r["case_id"] for r in rows}),
        "per_class": per_class,
        "mean_dice": _nanmean([v["dice"] for v in per_class.values()]),
        "mean_hd95_mm": _nanmean([v["hd95_mm"] for v in per_class.values()]),
        "mean_surface_dice": _nanmean([v["surface_dice"] for v in per_class.values()]),
        "tolerance_mm": tolerance_mm,
        "skipped": skipped,
        "table": str(out / "evaluation_cases.csv"),
    }
    atomic_write_text(out / "evaluation.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _model_run_of(pred: Path) -> Path | None:
    info = pred / "run.json"
    if not info.is_file():
        return None
    try:
        m = json.loads(info.read_text()).get("model")
    except (OSError, json.JSONDecodeError):
        return None
    return Path(m) if m and (Path(m) / "config.yaml").is_file() else None


def _nanmean(v: Sequence[float]) -> float | None:
    a = np.array([x for x in v if x is not None and np.isfinite(x)], float)
    return round(float(a.mean()), 4) if a.size else None


# =============================================================================== demo


def demo_config(out: Path, quick: bool = False):
    """The segmentation config the demo trains (the phantom set-up of configs/seg_ct_phantom.yaml)."""
    from medseg.config import load_config

    path = Path(__file__).resolve().parents[2] / "configs" / "seg_ct_phantom.yaml"
    over = [f"output_dir={out}", "name=train", "device=auto"]
    if quick:
        over += [
            "data.num_cases=4",
            "train.epochs=6",
            "train.steps_per_epoch=3",
            "train.max_minutes=0.12",
            "model.channels=[8,16,32]",
            "augment.samples_per_image=1",
        ]
    else:
        over += ["data.num_cases=10", "train.epochs=40", "train.max_minutes=0.9"]
    if not path.is_file():
        raise MissingFileError("demo config configs/seg_ct_phantom.yaml not found", path)
    return load_config(path, over)


def run_demo(out: Path, quick: bool = False) -> dict[str, Any]:
    """Demo stage: train a 3D U-Net on synthetic phantoms briefly, segment held-out cases + the DICOM series.

    Uses ``configs/seg_ct_phantom.yaml`` with a short time budget (quick: ~15 s, else ~80 s on 2
    cores). Segments the held-out phantoms (Dice against their labels) and, when the data stage
    wrote it, the DICOM series at ``out.parent/data/ct_dicom/study1/series1``.

    Returns
    -------
    ``{"summary": {mean_dice, train_seconds, epochs, ...}, "cases": [ReviewCase, ...]}``
    """
    from medseg.runs import Run

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = demo_config(out, quick)
    t0 = time.perf_counter()
    run = Run.create(out / "train", cfg, force=True, command="demo segmentation")
    with run:
        tsum = train(cfg, run)
    train_s = time.perf_counter() - t0
    data_dir = out / "train" / "data"
    content = json.loads((data_dir / "dataset.json").read_text())
    held_out = {
        "test": [
            {"image": str(data_dir / it["image"]), "label": str(data_dir / it["label"])}
            for it in content.get("test", [])
        ]
    }
    seg_out = out / "segment"
    inputs_json = atomic_write_text(seg_out / "inputs.json", json.dumps(held_out, indent=2))
    inputs: list[Path] = [inputs_json]
    dicom = out.parent / "data" / "ct_dicom" / "study1" / "series1"
    if dicom.is_dir():
        inputs.append(dicom)
    cases, rows = segment_cases(out / "train", inputs, seg_out, device="auto")
    _write_table(rows, seg_out)
    dices = [c.metrics["dice_mean"] for c in cases if "dice_mean" in c.metrics]
    summary = {
        "mean_dice": round(float(np.mean(dices)), 4) if dices else None,
        "train_seconds": round(train_s, 1),
        "epochs": tsum["epochs"],
        "best_val_dice": tsum["best_val_dice"],
        "cases": len(cases),
        "skipped": sum(c.status != "ok" for c in cases),
        "dicom_series_segmented": dicom.is_dir(),
        "needs_review": sum(c.needs_review for c in cases),
        "table": str(seg_out / "segmentation.csv"),
    }
    return {"summary": summary, "cases": cases}
