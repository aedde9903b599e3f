"""Config schema of ``task: weak_supervision`` (Grad-CAM pseudo-masks -> segmenter).

Imports no torch, so validating a config is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from medseg.config.base import (
    DataSection,
    ModelSection,
    PipelineConfig,
    Section,
    TrainSection,
    register_task,
)

__all__ = ["WeakSection", "WeakSupervisionConfig"]


class WeakSection(Section):
    """How image-level labels become pseudo-masks (Grad-CAM -> threshold -> components)."""

    classifier_run: Path | None = Field(
        None, description="run folder of a trained classifier; null: train one on the data first"
    )
    classifier_epochs: int = Field(4, ge=1, description="epochs of the classifier trained when classifier_run is null")
    classifier_max_minutes: float | None = Field(None, gt=0, description="time budget of that classifier")
    method: Literal["gradcam", "gradcampp"] = "gradcam"
    layer: str | None = Field(None, description="Grad-CAM target layer (default: the model's)")
    threshold: Literal["otsu"] | float = Field("otsu", description="'otsu' or a value in [0, 1] on the normalised map")
    n_components: int = Field(1, ge=1, description="largest connected components kept per pseudo-mask")
    refine: bool = Field(True, description="restrict pseudo-masks to foreground by an Otsu intensity criterion")
    image_size: int = Field(96, ge=32, description="side of the synthetic lesion images (pixels)")
    compare_full_supervision: bool = Field(
        True, description="also train the same segmenter on the true masks and report the Dice ratio"
    )


@register_task("weak_supervision")
class WeakSupervisionConfig(PipelineConfig):
    """Train a 2D segmenter on Grad-CAM pseudo-masks from an image-level classifier.

    The data is a lesion datalist with image-level ``label`` and (for evaluation only) ``mask``
    per image (:func:`medseg.data.lesions.make_lesion_dataset`); with ``data.synthetic: true`` it is
    generated (``data.num_cases`` images of ``weak.image_size`` pixels).
    """

    task: Literal["weak_supervision"] = "weak_supervision"
    class_names: list[str] = Field(default_factory=lambda: ["benign", "malignant"], min_length=2)
    weak: WeakSection = Field(default_factory=WeakSection)
    data: DataSection = Field(default_factory=lambda: DataSection(synthetic=True, num_cases=160))
    model: ModelSection = Field(
        default_factory=lambda: ModelSection(
            name="unet", spatial_dims=2, in_channels=3, out_channels=2, channels=[16, 32, 64, 128], norm="batch"
        )
    )
    train: TrainSection = Field(
        default_factory=lambda: TrainSection(epochs=20, batch_size=16, lr=3e-3, scheduler="cosine")
    )
