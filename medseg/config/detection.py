"""Config schema of ``task: detection`` (cells and mitoses in 2D microscopy).

Imports no torch, so validating a config is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from medseg.config.base import (
    DataSection,
    InferSection,
    ModelSection,
    PipelineConfig,
    TrainSection,
    register_task,
)

__all__ = ["DetectionConfig"]


@register_task("detection")
class DetectionConfig(PipelineConfig):
    """Cell (proximity-map regression, Xie 2015) or mitosis (patch CNN, Ciresan 2013) detection in 2D images.

    Distances ending in ``_um`` are micrometres, turned into pixels with ``pixel_size_um``.
    Annotations: a points CSV ``image,x,y[,class]`` (``annotations``, or the datalist's
    ``"points"`` key), else instance masks in the datalist's ``label`` entries (centroids).
    """

    task: Literal["detection"] = "detection"
    method: Literal["proximity", "mitosis"] = "proximity"
    pixel_size_um: float = Field(0.5, gt=0, description="micrometres per pixel")
    class_names: list[str] = Field(
        default_factory=lambda: ["nucleus", "mitosis"],
        description="annotation classes; a CSV row without class gets the first",
    )
    target_classes: list[str] | None = Field(
        None,
        description="annotation classes the detector learns to find (default: all for proximity, "
        "['mitosis'] for mitosis)",
    )
    output_class: str | None = Field(
        None, description="class name written on detections (default: 'nucleus' for proximity, 'mitosis' for mitosis)"
    )
    annotations: Path | None = Field(None, description="points CSV image,x,y[,class] (overrides the datalist's)")
    proximity_radius_um: float = Field(3.5, gt=0, description="radius r of the proximity map (Xie 2015)")
    proximity_alpha: float = Field(3.0, gt=0, description="decay of the proximity map exp(alpha (1 - d/r))")
    proximity_weight: float = Field(5.0, ge=0, description="loss weight added where the target is high")
    min_distance_um: float = Field(3.0, gt=0, description="minimum distance between two detections (NMS)")
    smooth_sigma_um: float = Field(0.5, ge=0, description="Gaussian smoothing of the score map before NMS")
    threshold: Literal["auto"] | float = Field("auto", description="score threshold; 'auto' = best F1 on validation")
    match_radius_um: float = Field(3.0, gt=0, description="matching radius for evaluation (~half a nucleus diameter)")
    crop_size: int = Field(128, ge=32, description="training crop size in pixels (proximity)")
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
    stain_jitter: float = Field(0.05, ge=0, description="HED stain augmentation strength (0 = off)")
    tile_size: int = Field(512, ge=32, description="inference tile core size in pixels (bounded memory)")
    tile_margin: int = Field(32, ge=0, description="context added around each tile; must cover NMS + receptive field")
    cpu_threads: int | None = Field(
        None,
        ge=1,
        description="torch CPU threads while training/detecting "
        "(None = torch's default); 1 avoids OpenMP slow-downs on a busy shared CPU",
    )
    synthetic_shape: tuple[int, int] = Field((256, 256), description="synthetic tile size (H, W)")
    synthetic_val: int = Field(2, ge=1, description="synthetic validation images")
    synthetic_test: int = Field(4, ge=0, description="synthetic held-out test images")
    data: DataSection = Field(default_factory=DataSection)
    model: ModelSection = Field(default_factory=lambda: ModelSection(name="proximity_unet"))
    train: TrainSection = Field(default_factory=TrainSection)
    infer: InferSection = Field(default_factory=InferSection)

    @model_validator(mode="after")
    def _method_defaults(self) -> DetectionConfig:
        # the model follows the method unless the config names one explicitly
        if "model" not in self.model_fields_set or "name" not in self.model.model_fields_set:
            name = "mitosis_cnn" if self.method == "mitosis" else "proximity_unet"
            if self.model.name != name:
                object.__setattr__(self, "model", ModelSection(name=name, **(self.model.model_extra or {})))
        return self
