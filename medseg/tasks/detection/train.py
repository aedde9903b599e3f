"""``train``: fit a detector, choose its score threshold on validation, score the test split."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medseg.config import DetectionConfig
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.device import select_device, thread_budget, torch_threads
from medseg.engine.distributed import current
from medseg.engine.trainer import StepFn, Trainer, build_optimizer, build_scheduler
from medseg.errors import ConfigError
from medseg.metrics.detection import average_precision, detection_scores, pooled_scores, select_threshold
from medseg.models import build_model
from medseg.models.detection import MitosisCNN
from medseg.runs import Run
from medseg.tasks.detection.data import load_detection_data
from medseg.tasks.detection.params import DetectionParams
from medseg.tasks.detection.sampling import MitosisPatches, ProximityBatches
from medseg.tasks.detection.scoring import detect_cases
from medseg.tasks.modelcard import write_model_card
from medseg.tasks.provenance import record_training_data

__all__ = ["train", "DEFAULT_STEPS_PER_EPOCH"]

#: batches per epoch when ``train.steps_per_epoch`` is not set
DEFAULT_STEPS_PER_EPOCH = 20


def train(cfg: DetectionConfig, run: Run, resume: bool = False) -> dict[str, Any]:
    """Train a detector (``cfg.method``) into ``run``; choose the threshold; score the test split.

    Uses ``cfg.cpu_threads`` torch threads. Writes into the run folder: checkpoints/, metrics.csv,
    training_curve.png, ``detection.json`` (threshold and pixel parameters used by
    :func:`~medseg.tasks.detection.detect`) and, with a test split, ``test_metrics.json``.

    Returns
    -------
    Summary dict: method, epochs, best epoch, train seconds, threshold, validation F1, stop reason
    and, with a test split, test F1 / precision / recall / AP and the number of test images.
    """
    with torch_threads(cfg.cpu_threads or thread_budget()):
        return _train(cfg, run, resume)


def _step_fn(cfg: DetectionConfig) -> StepFn:
    """The step function of the trainer for ``cfg.method`` (BCE on patches, or weighted squared error on maps)."""
    if cfg.method == "mitosis":
        bce = nn.BCEWithLogitsLoss()

        def mitosis_step(m: nn.Module, batch: Any, dev: torch.device) -> torch.Tensor:
            x, y = batch
            return bce(m(x.to(dev)), y.to(dev))

        return mitosis_step
    w = cfg.target.loss_weight

    def proximity_step(m: nn.Module, batch: Any, dev: torch.device) -> torch.Tensor:
        x, t = batch
        x, t = x.to(dev), t.to(dev)
        pr = torch.sigmoid(m(x))
        return ((1 + w * t) * (pr - t) ** 2).mean()

    return proximity_step


def _train(cfg: DetectionConfig, run: Run, resume: bool = False) -> dict[str, Any]:
    device = select_device(cfg.device)
    dist = current()  # DDP: every rank samples its own patches (the Trainer seeds each rank's stream)
    run.set(device=str(device), world_size=dist.world_size)
    with run.stage("data"):
        data = load_detection_data(cfg, run.path)
    # pixel size, modality and augmentation resolved from the data: saved, so detect reads the same values
    cfg = data.cfg
    run.save_config(cfg)
    run.set(validation=data.validation_note)
    p = DetectionParams.from_config(cfg)
    tr, va, te = data.training, data.validation, data.test
    # provenance (issue 13): datalist + SHA-256, case ids per split, image statistics, OOD reference
    record_training_data(run, cfg, {"training": tr, "validation": va, "test": te})
    torch.manual_seed(cfg.seed)
    params = cfg.model.model_dump()
    model = build_model(**params)
    steps = cfg.train.steps_per_epoch or DEFAULT_STEPS_PER_EPOCH
    loader: MitosisPatches | ProximityBatches
    if p.method == "mitosis":
        if not isinstance(model, MitosisCNN):
            raise ConfigError(f"method 'mitosis' needs a patch CNN model such as 'mitosis_cnn', not {params['name']!r}")
        loader = MitosisPatches(tr, cfg, p, model.receptive_field, steps)
        loader.model, loader.device = model, device
    else:
        loader = ProximityBatches(tr, cfg, p, steps)
    val_refs = [c.points_of(p.target_ids) for c in va]

    def val_fn(m: nn.Module) -> dict[str, float]:
        dets = detect_cases(m, va, p, cfg, device, threshold=0.05)
        thr, f1 = select_threshold(dets, val_refs, p.match_px)
        ap = average_precision(dets, val_refs, p.match_px)
        # F1 alone ties often on small validation sets; the mean with AP also rewards better ranking
        return {"val_f1": f1, "val_ap": ap, "val_score": 0.5 * (f1 + ap), "val_threshold": thr}

    opt = build_optimizer(model.parameters(), cfg.train.optimizer, cfg.train.lr, cfg.train.weight_decay)
    sched = build_scheduler(opt, cfg.train.scheduler, cfg.train.epochs)
    trainer = Trainer.from_config(
        model,
        opt,
        loader,
        _step_fn(cfg),
        train=cfg.train,
        seed=cfg.seed,
        val_fn=val_fn,
        key_metric="val_score",
        mode="max",
        scheduler=sched,
        device=device,
        steps_per_epoch=steps,
        run_dir=run.path,
        model_meta={"model_params": params, "method": p.method},
    )
    if isinstance(loader, MitosisPatches):
        loader.epoch_fn = lambda: trainer.state.epoch
    with run.stage("train"):
        state = trainer.fit(resume=resume)
    run.set(compile=trainer.compile_status())  # asked for, and used or fell back (as segmentation records it)
    if not dist.is_main:  # rank 0 writes the outputs (threshold, test figures, model card)
        return {"rank": dist.rank, "epochs": state.epoch}
    # best weights -> threshold on validation -> test
    best = run.path / "checkpoints" / "best.pt"
    if best.is_file():
        model.load_state_dict(load_checkpoint(best, device)["model"])
    model.eval()
    with run.stage("threshold"):
        dets = detect_cases(model, va, p, cfg, device, threshold=0.02)
        if cfg.postprocess.threshold == "auto":
            thr, vf1 = select_threshold(dets, val_refs, p.match_px)
        else:
            thr = float(cfg.postprocess.threshold)
            per_val = [detection_scores(d[0][d[1] >= thr], r, p.match_px) for d, r in zip(dets, val_refs)]
            vf1 = pooled_scores(per_val)["f1"]
    info = {
        "method": p.method,
        "threshold": thr,
        "val_f1": vf1,
        "output_class": p.output_class,
        "pixel_size_um": cfg.data.pixel_size_um,
        "pixel_size_source": data.validation_note.get("pixel_size_source"),
        "modality": cfg.data.modality,
        "min_distance_px": p.min_distance_px,
        "sigma_px": p.sigma_px,
        "match_radius_px": p.match_px,
        "tile_size": cfg.infer.tile_size,
        "tile_margin": cfg.infer.tile_margin,
    }
    run.write_json("detection.json", info)
    summary: dict[str, Any] = {
        "method": p.method,
        "epochs": state.epoch,
        "best_epoch": state.best_epoch,
        "train_seconds": round(state.train_seconds, 1),
        "threshold": round(thr, 4),
        "val_f1": round(vf1, 4),
        "validation": data.validation_note["mode"],
        "modality": cfg.data.modality,
        "pixel_size_um": cfg.data.pixel_size_um,
        "stop_reason": state.stop_reason,
    }
    if te:
        with run.stage("test"):
            refs = [c.points_of(p.target_ids) for c in te]
            dets = detect_cases(model, te, p, cfg, device, threshold=0.02)
            per = [detection_scores(d[0][d[1] >= thr], r, p.match_px) for d, r in zip(dets, refs)]
            pooled = pooled_scores(per)
            ap = average_precision(dets, refs, p.match_px)
        run.write_json(
            "test_metrics.json",
            {
                "pooled": pooled,
                "average_precision": ap,
                "radius_px": p.match_px,
                "per_image": {c.name: s for c, s in zip(te, per)},
            },
        )
        summary.update(
            test_f1=round(pooled["f1"], 4),
            test_precision=round(pooled["precision"], 4),
            test_recall=round(pooled["recall"], 4),
            test_ap=round(ap, 4),
            test_images=len(te),
        )
    run.write_json("summary.json", summary)
    write_model_card(run, cfg, summary)  # issue 13
    return summary
