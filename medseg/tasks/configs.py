"""Config classes of each task (``task:`` key of a pipeline config).

Each class extends :class:`medseg.config.PipelineConfig` and is registered by name. They import
no torch, so validating a config is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field

from medseg.config import (
    DataSection,
    InferSection,
    ModelSection,
    PipelineConfig,
    Section,
    TrainSection,
    register_task,
)

__all__ = ["SegmentationConfig", "DetectionConfig", "ClassificationConfig", "WeakSupervisionConfig"]


# --- segmentation (issue: segmentation) ------------------------------------------------------


@register_task("segmentation")
class SegmentationConfig(PipelineConfig):
    """Train / infer a U-Net or FCN segmenter (2D or 3D)."""

    task: Literal["segmentation"] = "segmentation"
    spatial_dims: Literal[2, 3] = 3
    class_names: list[str] = Field(default_factory=lambda: ["background", "foreground"])
    modality: Literal["CT", "MR", "RGB", "other"] = "CT"
    data: DataSection = Field(default_factory=DataSection)
    model: ModelSection = Field(default_factory=ModelSection)
    train: TrainSection = Field(default_factory=TrainSection)
    infer: InferSection = Field(default_factory=InferSection)


# --- detection (issue: cell and mitosis detection) ------------------------------------------


@register_task("detection")
class DetectionConfig(PipelineConfig):
    """Cell (proximity-map regression) or mitosis (patch classifier) detection in 2D images."""

    task: Literal["detection"] = "detection"
    method: Literal["proximity", "mitosis"] = "proximity"
    pixel_size_um: float = Field(0.5, gt=0, description="micrometres per pixel")
    data: DataSection = Field(default_factory=DataSection)
    model: ModelSection = Field(default_factory=lambda: ModelSection(name="unet"))
    train: TrainSection = Field(default_factory=TrainSection)
    infer: InferSection = Field(default_factory=InferSection)


# --- classification (issue: transfer-learned lesion classifiers) ----------------------------


@register_task("classification")
class ClassificationConfig(PipelineConfig):
    """Fine-tune a (pretrained) classifier on image-level labels."""

    task: Literal["classification"] = "classification"
    class_names: list[str] = Field(default_factory=lambda: ["benign", "malignant"])
    data: DataSection = Field(default_factory=DataSection)
    model: ModelSection = Field(default_factory=lambda: ModelSection(name="efficientnet_lite0"))
    train: TrainSection = Field(default_factory=TrainSection)
    infer: InferSection = Field(default_factory=InferSection)


# --- weak supervision (issue: Grad-CAM) ------------------------------------------------------


class WeakSection(Section):
    classifier_run: Optional[Path] = Field(None, description="run folder of a trained classifier")
    method: Literal["gradcam", "gradcampp"] = "gradcam"
    threshold: Literal["otsu"] | float = "otsu"


@register_task("weak_supervision")
class WeakSupervisionConfig(PipelineConfig):
    """Train a segmenter on Grad-CAM pseudo-masks from an image-level classifier."""

    task: Literal["weak_supervision"] = "weak_supervision"
    weak: WeakSection = Field(default_factory=WeakSection)
    data: DataSection = Field(default_factory=DataSection)
    model: ModelSection = Field(default_factory=ModelSection)
    train: TrainSection = Field(default_factory=TrainSection)
