"""Config schema of ``task: classification`` (transfer-learned image classifiers).

Imports no torch, so validating a config is instant.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from medseg.config.base import (
    DataSection,
    InferSection,
    ModelSection,
    PipelineConfig,
    Section,
    TrainSection,
    register_task,
)
from medseg.config.tune import TuneSection

__all__ = [
    "ClassifierModelSection",
    "FinetuneSection",
    "OperatingPointSection",
    "LesionVolumeSection",
    "ClassificationConfig",
    "keys_set_in",
]


def keys_set_in(value: Any) -> Any:
    """A section instance -> the dict of the keys set in it (other values pass unchanged).

    Lets a task-specific section field accept an instance of the generic section it narrows
    (``ModelSection(...)`` for ``ClassifierModelSection``): the keys it sets are validated again,
    so a key the task does not read is refused there too.
    """
    return value.model_dump(exclude_unset=True) if isinstance(value, Section) else value


class ClassifierModelSection(ModelSection):
    """The network: ``name`` from the model registry plus its own parameters.

    ``num_classes``, ``in_channels`` and ``image_size`` follow from ``class_names``, the images'
    channel mode and the top-level ``image_size``; ``image_size`` here is refused (one image size
    per config: the one the images are resized to is the one the network is built for).
    """

    @model_validator(mode="before")
    @classmethod
    def _one_image_size(cls, data: Any) -> Any:
        if isinstance(data, dict) and "image_size" in data:
            raise ValueError(
                "model.image_size is not a classification key: the network is built for the top-level "
                "image_size (the size every image is resized to); remove it from the model section"
            )
        return data


class FinetuneSection(Section):
    """How the (pretrained) network is fine-tuned."""

    strategy: Literal["full", "linear_probe", "gradual_unfreeze", "discriminative"] = Field(
        "full",
        description="full: every layer at train.lr; linear_probe: frozen backbone, only the head trains; "
        "gradual_unfreeze: head first, then one backbone stage more every `unfreeze_every` epochs (top first); "
        "discriminative: every layer trains, each stage's LR = the next-higher stage's x lr_decay",
    )
    lr_decay: float = Field(0.5, gt=0, le=1, description="discriminative: LR factor per stage going down to the stem")
    unfreeze_every: int = Field(1, ge=1, description="gradual_unfreeze: epochs between unfreezing two stages")
    head_lr_mult: float = Field(1.0, gt=0, description="LR multiplier of the new classifier head")
    freeze_bn: bool = Field(True, description="keep BatchNorm statistics of frozen layers fixed")


class OperatingPointSection(Section):
    """Clinical operating points, chosen on the validation set and reported on the test set."""

    sensitivity_target: float = Field(0.95, gt=0, le=1, description="high-sensitivity point (screening)")
    specificity_target: float = Field(0.95, gt=0, le=1, description="high-specificity point (confirmation)")
    use: Literal["youden", "high_sensitivity", "high_specificity", "default"] = Field(
        "youden", description="point used by `medseg classify` for the predicted class (default: p >= 0.5)"
    )
    temperature_scaling: bool = Field(True, description="fit a softmax temperature on validation logits")
    n_bootstrap: int = Field(1000, ge=50, description="bootstrap resamples of the AUC 95% CI")


class LesionVolumeSection(Section):
    """Volumes: classify lesions of CT / MR volumes from a crop around each (``volume:`` set).

    Each datalist entry is one lesion: ``image`` (the volume), ``mask`` (a label map on its grid),
    ``mask_value`` (the lesion's value in it; default: every non-zero voxel), ``label`` (its class).
    The crop is a cube ``size_mm`` wide around the lesion's centroid, resampled to ``grid`` voxels a
    side (RAS-aligned: the last axis is axial), intensities windowed to 0..255.
    """

    size_mm: float = Field(40.0, gt=0, description="side of the cube cropped around each lesion (mm)")
    grid: int = Field(32, ge=8, le=128, description="voxels per side of the crop (resampled)")
    mask_channel: bool = Field(False, description="add the lesion mask as a second input channel (3D models)")
    window: list[float] | None = Field(
        [-1000.0, 400.0],
        min_length=2,
        max_length=2,
        description="intensity window [low, high] mapped to 0..255 (CT: HU); null = per-crop 0.5/99.5 percentiles (MR)",
    )
    augment: bool = Field(True, description="random flips of the three axes and axial 90-degree rotations")

    @field_validator("window")
    @classmethod
    def _window_order(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and not v[0] < v[1]:
            raise ValueError(f"window must be [low, high] with low < high, got {v}")
        return v

    @property
    def scan_modality(self) -> str:
        """The scans' modality as the OOD check reads it: ``CT`` with a HU window, else ``MR``."""
        return "CT" if self.window is not None else "MR"


@register_task("classification")
class ClassificationConfig(PipelineConfig):
    """Fine-tune a (pretrained) classifier on image-level labels (2D images, PNG/JPEG/TIFF)."""

    task: Literal["classification"] = "classification"
    class_names: list[str] = Field(default_factory=lambda: ["benign", "malignant"], min_length=2)
    positive_class: str | None = Field(None, description="binary tasks: the 'disease' class (default: the 2nd)")
    image_size: int | None = Field(
        128, ge=16, description="resize every image to this square size; null = keep (all images must match)"
    )
    channels: Literal["auto", "rgb", "gray"] = Field(
        "auto", description="auto: all images must agree (a gray/RGB mixture is an error); rgb/gray: convert"
    )
    augmentation: Literal["none", "dermoscopy", "histology", "xray"] = "dermoscopy"
    imbalance: Literal["none", "weighted_loss", "sampler"] = Field(
        "weighted_loss", description="class imbalance: inverse-frequency loss weights or a balanced sampler"
    )
    finetune: FinetuneSection = Field(default_factory=FinetuneSection)
    operating_points: OperatingPointSection = Field(default_factory=OperatingPointSection)
    data: DataSection = Field(default_factory=DataSection)
    model: ClassifierModelSection = Field(default_factory=lambda: ClassifierModelSection(name="efficientnet_lite0"))
    train: TrainSection = Field(
        default_factory=lambda: TrainSection(epochs=15, batch_size=16, lr=1e-3, early_stop_patience=5)
    )
    infer: InferSection = Field(default_factory=InferSection)
    tune: TuneSection | None = Field(None, description="search space of `medseg tune` (not read by train)")
    volume: LesionVolumeSection | None = Field(
        None, description="classify lesions of volumes (3D crops) instead of 2D images; see docs/lesions.md"
    )

    @field_validator("model", mode="before")
    @classmethod
    def _model_keys(cls, value: Any) -> Any:
        return keys_set_in(value)
