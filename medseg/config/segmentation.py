"""Config schema of ``task: segmentation`` (U-Net / FCN, 2D or 3D).

Imports no torch, so validating a config is instant.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from medseg.config.base import (
    DataSection,
    InferSection,
    ModelSection,
    PipelineConfig,
    Section,
    TrainSection,
    register_task,
)

__all__ = [
    "SegDataSection",
    "SegPlanSection",
    "SegAugmentSection",
    "SegPostSection",
    "SegInferSection",
    "SegmentationConfig",
]


class SegPlanSection(Section):
    """Overrides of the self-configured plan (``None`` = take the value the dataset fingerprint suggests)."""

    target_spacing: list[float] | None = Field(
        None, description="resampling spacing (mm) per axis; default: median spacing of the training set"
    )
    patch_size: list[int] | None = Field(
        None,
        description="training patch / inference window (voxels); default: fitted to median shape and max_patch_voxels",
    )
    max_patch_voxels: int = Field(64 * 64 * 48, ge=256, description="memory budget for the patch (voxels per sample)")
    clip: list[float] | None = Field(
        None, description="CT: intensity clip [low, high] (HU); default: 0.5/99.5 percentiles of the foreground"
    )
    norm_mean: float | None = Field(None, description="CT: mean subtracted after clipping; default: foreground mean")
    norm_std: float | None = Field(None, description="CT: std divided by after clipping; default: foreground std")
    fingerprint_cases: int = Field(16, ge=1, description="cases read for the fingerprint")


class SegAugmentSection(Section):
    """Augmentation of training patches (MONAI random dict transforms)."""

    level: Literal["none", "light", "default", "heavy"] = Field(
        "default",
        description="none | light (flips) | default (flips, rotation, scaling, intensity) | heavy (+ elastic, noise)",
    )
    flip_axes: list[int] | None = Field(
        None, description="spatial axes to flip; default: none for CT/MR (left/right matters), all for RGB"
    )
    samples_per_image: int = Field(
        2, ge=1, description="patches drawn per volume per step (RandCropByPosNegLabeld num_samples)"
    )
    pos_fraction: float = Field(0.67, ge=0.0, le=1.0, description="fraction of patches centred on foreground")


class SegPostSection(Section):
    """Post-processing of predicted label maps (MONAI / scikit-image)."""

    largest_component: list[str] = Field(
        default_factory=list, description="classes reduced to their largest connected component"
    )
    min_component_ml: float = Field(
        0.0, ge=0.0, description="remove connected components smaller than this (mL; pixel area mm^2/1000 in 2D)"
    )
    fill_holes: bool = Field(False, description="fill enclosed holes of each class")


class SegDataSection(DataSection):
    """Data of a segmentation run, plus how the preprocessed cases are cached."""

    cache: Literal["none", "memory", "disk"] = Field(
        "memory", description="MONAI CacheDataset (memory) or PersistentDataset (disk)"
    )


class SegInferSection(InferSection):
    """Inference: sliding window (Gaussian blending), flip TTA, probabilities, uncertainty and review flag."""

    overlap: float = Field(0.5, ge=0.0, lt=1.0, description="sliding-window overlap of neighbouring windows")
    tta: bool = Field(False, description="flip test-time augmentation")
    sigma_scale: float = Field(0.125, gt=0, description="Gaussian blending sigma as a fraction of the window")
    save_probabilities: bool = Field(False, description="also write float32 class probabilities (source geometry)")
    uncertainty: Literal["entropy", "tta"] = Field(
        "entropy",
        description="entropy: mean normalised entropy in predicted foreground; tta: flip disagreement (needs tta)",
    )
    review_threshold: float = Field(0.2, ge=0.0, description="needs_review when the uncertainty exceeds this")
    tta_axes: list[int] | None = Field(None, description="spatial axes flipped for TTA; default: all")


@register_task("segmentation")
class SegmentationConfig(PipelineConfig):
    """Train / infer a U-Net or FCN segmenter (2D or 3D).

    ``class_names[i]`` names training class ``i`` (0 = background). ``label_map`` maps values found
    in the label files to training classes (e.g. ``{4: 1}`` merges phantom lesions into the liver,
    ``{2: 0}`` drops a class); any other value outside ``0..len(class_names)-1`` is an error.
    """

    task: Literal["segmentation"] = "segmentation"
    spatial_dims: Literal[2, 3] = 3
    class_names: list[str] = Field(default_factory=lambda: ["background", "foreground"])
    label_map: dict[int, int] = Field(default_factory=dict, description="label-file value -> training class")
    modality: Literal["CT", "MR", "RGB", "other"] = "CT"
    data: SegDataSection = Field(default_factory=SegDataSection)
    model: ModelSection = Field(default_factory=ModelSection)
    train: TrainSection = Field(default_factory=TrainSection)
    infer: SegInferSection = Field(default_factory=SegInferSection)
    plan: SegPlanSection = Field(default_factory=SegPlanSection)
    augment: SegAugmentSection = Field(default_factory=SegAugmentSection)
    postprocess: SegPostSection = Field(default_factory=SegPostSection)
    synthetic: dict[str, Any] = Field(
        default_factory=dict,
        description="ct_phantom keyword arguments when data.synthetic is true (e.g. shape, spacing)",
    )
