"""Config schema of ``task: weak_supervision`` (Grad-CAM pseudo-masks -> segmenter).

Imports no torch, so validating a config is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from medseg.config.base import (
    DataSection,
    ModelSection,
    PipelineConfig,
    Section,
    register_task,
)
from medseg.config.classification import keys_set_in

__all__ = ["WeakSection", "WeakTrainSection", "WeakSupervisionConfig"]


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


class WeakTrainSection(Section):
    """Optimisation of the two segmenters (pseudo-masks, true masks): the same budget for both.

    The segmenters have no validation set (the training and validation images are both
    pseudo-labelled; the test images are only scored), so there is no ``val_every`` or
    ``early_stop_patience`` here.
    """

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    scheduler: Literal["cosine", "poly", "none"] = "cosine"
    max_minutes: float | None = Field(None, gt=0, description="stop training each segmenter after this wall time")
    grad_clip: float | None = Field(1.0, gt=0)
    amp: bool = Field(False, description="automatic mixed precision (CUDA only; ignored on CPU)")
    steps_per_epoch: int | None = Field(None, ge=1)


@register_task("weak_supervision")
class WeakSupervisionConfig(PipelineConfig):
    """Train a 2D segmenter on Grad-CAM pseudo-masks from an image-level classifier.

    The data is a lesion datalist with image-level ``label`` and (for evaluation only) ``mask``
    per image (:func:`medseg.data.lesions.make_lesion_dataset`); with ``data.synthetic: true`` it is
    generated (``data.num_cases`` images of ``weak.image_size`` pixels). ``data.val_fraction`` is
    the hold-out of the classifier trained here when the datalist has no ``validation`` list;
    ``data.num_workers`` the data-loading workers of that classifier and of the segmenters.
    """

    task: Literal["weak_supervision"] = "weak_supervision"
    class_names: list[str] = Field(default_factory=lambda: ["benign", "malignant"], min_length=2)
    weak: WeakSection = Field(default_factory=WeakSection)
    data: DataSection = Field(default_factory=lambda: DataSection(synthetic=True, num_cases=160))
    model: ModelSection = Field(
        default_factory=lambda: ModelSection.model_validate(
            {
                "name": "unet",
                "spatial_dims": 2,
                "in_channels": 3,
                "out_channels": 2,
                "channels": [16, 32, 64, 128],
                "norm": "batch",
            }
        )
    )
    train: WeakTrainSection = Field(default_factory=WeakTrainSection)

    @field_validator("train", mode="before")
    @classmethod
    def _train_keys(cls, value: Any) -> Any:
        return keys_set_in(value)
