"""Config schema of ``task: detection`` (cells and mitoses in 2D microscopy).

Grouped into sections like the other tasks: ``data``, ``model``, ``train``, ``target`` (what the
detector learns), ``sampling`` (how training samples are drawn), ``augment``, ``infer`` (tiling),
``postprocess`` (smoothing, NMS, threshold) and ``evaluate`` (matching radius). Every key is read
by :mod:`medseg.tasks.detection`; the flat keys of earlier versions (``min_distance_um``, ...)
are refused with a message naming their new place.

Imports no torch, so validating a config is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from medseg.config.base import ModelSection, PipelineConfig, Section, TrainSection, check_one_source, register_task
from medseg.config.tune import TuneSection

__all__ = [
    "DetDataSection",
    "DetTargetSection",
    "DetSamplingSection",
    "DetAugmentSection",
    "DetInferSection",
    "DetPostSection",
    "DetEvaluateSection",
    "DetectionConfig",
    "MOVED_KEYS",
]

#: flat keys of earlier detection configs -> their section key now (refused with this hint)
MOVED_KEYS: dict[str, str] = {
    "pixel_size_um": "data.pixel_size_um",
    "annotations": "data.annotations",
    "synthetic_shape": "data.synthetic_shape",
    "synthetic_val": "data.synthetic_val",
    "synthetic_test": "data.synthetic_test",
    "target_classes": "target.classes",
    "output_class": "target.output_class",
    "proximity_radius_um": "target.radius_um",
    "proximity_alpha": "target.alpha",
    "proximity_weight": "target.loss_weight",
    "crop_size": "sampling.crop_size",
    "positive_fraction": "sampling.positive_fraction",
    "hard_negative_fraction": "sampling.hard_negative_fraction",
    "mine_every": "sampling.mine_every",
    "stain_jitter": "augment.stain_jitter",
    "tile_size": "infer.tile_size",
    "tile_margin": "infer.tile_margin",
    "min_distance_um": "postprocess.min_distance_um",
    "smooth_sigma_um": "postprocess.smooth_sigma_um",
    "threshold": "postprocess.threshold",
    "match_radius_um": "evaluate.match_radius_um",
}


class DetDataSection(Section):
    """Where the images and point annotations are, and their pixel size.

    No ``num_workers``: training batches are drawn in the main process (see
    :mod:`medseg.tasks.detection.sampling`).
    """

    datalist: Path | None = Field(None, description="MSD/MONAI datalist JSON file (optional 'points' key: CSV)")
    root: Path | None = Field(None, description="base folder of datalist paths (default: datalist's folder)")
    annotations: Path | None = Field(None, description="points CSV image,x,y[,class] (overrides the datalist's)")
    pixel_size_um: float | None = Field(
        None,
        gt=0,
        description="micrometres per pixel (every *_um distance is converted); default: read from the images' "
        "OME-TIFF / ImageJ / TIFF resolution tags, else 0.5 (a set value wins; a mismatch with the files warns)",
    )
    modality: Literal["auto", "he", "fluorescence", "brightfield"] = Field(
        "auto",
        description="microscopy preset: he (HED stain jitter), fluorescence (percentile 1-99.8 normalisation, "
        "no stain jitter), brightfield (percentile normalisation); auto = chosen from the first training "
        "image (channels, dtype, background), logged",
    )
    val_fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="fraction of training images held out when the datalist has no 'validation'"
    )
    synthetic: bool = Field(
        False, description="generate synthetic H&E tiles in the run folder instead of reading files"
    )
    num_cases: int = Field(12, ge=1, description="synthetic training tiles")
    synthetic_val: int = Field(2, ge=1, description="synthetic validation tiles")
    synthetic_test: int = Field(4, ge=0, description="synthetic held-out test tiles")
    synthetic_shape: tuple[int, int] = Field((256, 256), description="synthetic tile size (H, W) in pixels")
    folds: int | None = Field(
        None,
        ge=2,
        description="K-fold cross-validation over the training (+ validation) images: `medseg train --fold k|all` "
        "trains the folds into one parent run (see docs/model-selection.md)",
    )

    @model_validator(mode="after")
    def _one_source(self) -> DetDataSection:
        check_one_source(self)
        return self


class DetTargetSection(Section):
    """What the detector learns and how its training target (the proximity map, Xie 2015) looks."""

    classes: list[str] | None = Field(
        None,
        description="annotation classes the detector learns to find (default: all for proximity, "
        "['mitosis'] for mitosis)",
    )
    output_class: str | None = Field(
        None, description="class name written on detections (default: 'nucleus' for proximity, 'mitosis' for mitosis)"
    )
    radius_um: float = Field(3.5, gt=0, description="proximity: radius r of the proximity map")
    alpha: float = Field(3.0, gt=0, description="proximity: decay of the map exp(alpha (1 - d/r))")
    loss_weight: float = Field(5.0, ge=0, description="proximity: loss weight added where the target is high")


class DetSamplingSection(Section):
    """How training samples are drawn: proximity crops, class-balanced mitosis patches."""

    crop_size: int = Field(128, ge=32, description="proximity: training crop size in pixels")
    positive_fraction: float = Field(0.5, gt=0, lt=1, description="mitosis: share of positive patches per batch")
    hard_negative_fraction: float = Field(
        0.6, ge=0, le=1, description="mitosis: share of negatives centred on non-target nuclei"
    )
    mine_every: int = Field(
        2,
        ge=0,
        description="mitosis: every N epochs add the model's false positives on the "
        "training images to the hard negatives (0 = off)",
    )


class DetAugmentSection(Section):
    """Augmentation of training samples (flips and 90° rotations are always on)."""

    stain_jitter: float | None = Field(
        None, ge=0, description="HED stain augmentation strength (0 = off); default 0.05 for he, 0 otherwise"
    )
    intensity_jitter: float | None = Field(
        None,
        ge=0,
        description="brightness / contrast / gamma augmentation strength; default 0.1 for fluorescence and "
        "brightfield, 0 for he",
    )


class DetInferSection(Section):
    """Tiled inference (bounded memory). Tiles are scored one at a time, so there is no batch size."""

    tile_size: int = Field(512, ge=32, description="tile core size in pixels")
    tile_margin: int = Field(32, ge=0, description="context added around each tile; must cover NMS + receptive field")


class DetPostSection(Section):
    """Score map -> points: Gaussian smoothing, local maxima (NMS distance), score threshold."""

    min_distance_um: float = Field(3.0, gt=0, description="minimum distance between two detections (NMS)")
    smooth_sigma_um: float = Field(0.5, ge=0, description="Gaussian smoothing of the score map before NMS")
    threshold: Literal["auto"] | float = Field("auto", description="score threshold; 'auto' = best F1 on validation")


class DetEvaluateSection(Section):
    """How detections are matched to reference points (validation, threshold choice, test scores)."""

    match_radius_um: float = Field(3.0, gt=0, description="matching radius (~half a nucleus diameter)")


@register_task("detection")
class DetectionConfig(PipelineConfig):
    """Cell (proximity-map regression, Xie 2015) or mitosis (patch CNN, Ciresan 2013) detection in 2D images.

    Distances ending in ``_um`` are micrometres, turned into pixels with ``data.pixel_size_um``.
    Annotations: a points CSV ``image,x,y[,class]`` (``data.annotations``, or the datalist's
    ``"points"`` key), else instance masks in the datalist's ``label`` entries (centroids).
    """

    task: Literal["detection"] = "detection"
    method: Literal["proximity", "mitosis"] = "proximity"
    class_names: list[str] = Field(
        default_factory=lambda: ["nucleus", "mitosis"],
        description="annotation classes; a CSV row without class gets the first",
    )
    cpu_threads: int | None = Field(
        None,
        ge=1,
        description="torch CPU threads while training/detecting "
        "(None = torch's default); 1 avoids OpenMP slow-downs on a busy shared CPU",
    )
    data: DetDataSection = Field(default_factory=DetDataSection)
    model: ModelSection = Field(default_factory=lambda: ModelSection(name="proximity_unet"))
    train: TrainSection = Field(default_factory=TrainSection)
    target: DetTargetSection = Field(default_factory=DetTargetSection)
    sampling: DetSamplingSection = Field(default_factory=DetSamplingSection)
    augment: DetAugmentSection = Field(default_factory=DetAugmentSection)
    infer: DetInferSection = Field(default_factory=DetInferSection)
    postprocess: DetPostSection = Field(default_factory=DetPostSection)
    evaluate: DetEvaluateSection = Field(default_factory=DetEvaluateSection)
    tune: TuneSection | None = Field(None, description="search space of `medseg tune` (not read by train)")

    @model_validator(mode="before")
    @classmethod
    def _refuse_moved_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            moved = [k for k in data if k in MOVED_KEYS]
            if moved:
                raise ValidationError.from_exception_data(
                    cls.__name__,
                    [
                        InitErrorDetails(
                            type=PydanticCustomError(
                                "moved_key", "'{old}' moved to '{new}'", {"old": k, "new": MOVED_KEYS[k]}
                            ),
                            loc=(k,),
                            input=data[k],
                        )
                        for k in moved
                    ],
                )
        return data

    @model_validator(mode="after")
    def _stain_jitter_needs_he(self) -> DetectionConfig:
        if self.data.modality in ("fluorescence", "brightfield") and self.augment.stain_jitter:
            raise ValueError(
                f"augment.stain_jitter is H&E stain augmentation; data.modality is {self.data.modality}: "
                "remove it (augment.intensity_jitter is the augmentation for this modality)"
            )
        return self

    @model_validator(mode="after")
    def _method_defaults(self) -> DetectionConfig:
        # the model follows the method unless the config names one explicitly
        if "model" not in self.model_fields_set or "name" not in self.model.model_fields_set:
            name = "mitosis_cnn" if self.method == "mitosis" else "proximity_unet"
            if self.model.name != name:
                object.__setattr__(self, "model", ModelSection(name=name, **(self.model.model_extra or {})))
        return self
