"""Config schema of ``task: segmentation`` (U-Net / FCN, 2D or 3D).

Every key is read by the task (:mod:`medseg.tasks.segmentation`); a key that would be ignored in
its context is refused here, at load time (e.g. ``synthetic:`` without ``data.synthetic: true``,
``plan.clip`` for MR, an unknown class in ``postprocess.largest_component``).
Imports no torch, so validating a config is instant.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from medseg.config.base import (
    _COMPILE_HELP,
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
    "SegDataSection",
    "SegSyntheticSection",
    "SegPlanSection",
    "SegTrainSection",
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
    # -- configurations and normalisation layer (issue 17)
    configuration: Literal["auto", "2d", "3d"] = Field(
        "auto",
        description="network configuration of a 3D data set: 3d, 2d (slice-wise in the plane of highest "
        "resolution) or auto (chosen from the data and the time budget; the reason is in plan.json)",
    )
    norm_layer: Literal["auto", "batch", "instance"] = Field(
        "auto", description="U-Net normalisation layer; auto = batch (a constant window cannot emit labels)"
    )


class SegTrainSection(TrainSection):
    """Optimisation of a segmenter: the shared train keys, with the segmentation defaults.

    ``lr`` defaults to 0.01 (AdamW): the rate the phantom configs reach their target with, and what a
    short CPU budget needs (1e-3 left a 1.5-minute MR run far from converged). With
    ``max_minutes`` set and ``epochs`` not set, the budget ends training (see the Trainer).
    """

    lr: float = Field(0.01, gt=0)


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
    """Data of a segmentation run, plus how the preprocessed cases are cached.

    Either ``synthetic: true`` (phantoms generated into the run folder) or a ``datalist``
    (with an optional ``root``), not both.
    """

    cache: Literal["none", "memory", "disk"] = Field(
        "memory", description="MONAI CacheDataset (memory) or PersistentDataset (disk)"
    )

    @model_validator(mode="after")
    def _root_needs_datalist(self) -> SegDataSection:
        if self.root is not None and self.datalist is None:
            raise ValueError("data.root is only read with data.datalist (the base folder of its paths)")
        return self


class SegSyntheticSection(Section):
    """Phantom arguments of the synthetic data (``data.synthetic: true``); unset = the phantom's default.

    ``modality: MR`` generates skull-stripped MR heads (``mr_phantom``: ``shape``, ``spacing``), any
    other modality CT abdomens (``ct_phantom``: also ``noise_hu``, ``n_lesions``).
    """

    shape: list[int] | None = Field(None, min_length=3, max_length=3, description="(X, Y, Z) voxels")
    spacing: list[float] | None = Field(None, min_length=3, max_length=3, description="(sx, sy, sz) mm")
    noise_hu: float | None = Field(None, ge=0.0, description="correlated noise (HU)")
    n_lesions: list[int] | None = Field(
        None, min_length=2, max_length=2, description="[min, max] liver lesions per phantom"
    )


class SegInferSection(InferSection):
    """Inference: sliding window (Gaussian blending), flip TTA, probabilities, uncertainty and review flag."""

    overlap: float = Field(0.5, ge=0.0, lt=1.0, description="sliding-window overlap of neighbouring windows")
    compile: bool = Field(False, description=_COMPILE_HELP + " (the sliding window's network)")
    tta: bool = Field(False, description="flip test-time augmentation")
    sigma_scale: float = Field(0.125, gt=0, description="Gaussian blending sigma as a fraction of the window")
    save_probabilities: bool = Field(False, description="also write float32 class probabilities (source geometry)")
    uncertainty: Literal["entropy", "tta"] = Field(
        "entropy",
        description="entropy: mean normalised entropy in predicted foreground; tta: flip disagreement (needs tta)",
    )
    review_threshold: float | None = Field(
        None,
        ge=0.0,
        description="needs_review when the uncertainty exceeds this; null: the run's threshold calibrated "
        "at training on its validation cases (their review_percentile), 0.2 when it has none",
    )
    review_percentile: float = Field(
        95.0, gt=0.0, le=100.0, description="percentile of the validation cases' uncertainty that calibrates it"
    )
    ood: Literal["warn", "refuse", "off"] = Field(
        "warn",
        description="cases unlike the training data: warn (flag them), refuse (skip them) or off (no check)",
    )
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
    modality: Literal["CT", "MR", "RGB", "he", "fluorescence", "brightfield", "other"] = Field(
        "CT",
        description="intensity preset and cropping rule: CT (HU), MR, RGB / he (0..255), fluorescence / "
        "brightfield (percentiles 1-99.8), other (z-score)",
    )
    data: SegDataSection = Field(default_factory=SegDataSection)
    model: ModelSection = Field(default_factory=ModelSection)
    train: SegTrainSection = Field(default_factory=SegTrainSection)
    infer: SegInferSection = Field(default_factory=SegInferSection)
    plan: SegPlanSection = Field(default_factory=SegPlanSection)
    augment: SegAugmentSection = Field(default_factory=SegAugmentSection)
    postprocess: SegPostSection = Field(default_factory=SegPostSection)
    synthetic: SegSyntheticSection = Field(
        default_factory=SegSyntheticSection,
        description="ct_phantom keyword arguments when data.synthetic is true (e.g. shape, spacing)",
    )
    tune: TuneSection | None = Field(None, description="search space of `medseg tune` (not read by train)")

    # ------------------------------------------------------------------ keys the task would ignore
    @field_validator("label_map")
    @classmethod
    def _targets_are_classes(cls, v: dict[int, int], info: ValidationInfo) -> dict[int, int]:
        names = info.data.get("class_names")
        if names is not None:
            bad = sorted({t for t in v.values() if not 0 <= t < len(names)})
            if bad:
                raise ValueError(
                    f"label_map maps to {bad}, which are not training classes (0..{len(names) - 1}: {names})"
                )
        return v

    @field_validator("plan")
    @classmethod
    def _plan_fits(cls, v: SegPlanSection, info: ValidationInfo) -> SegPlanSection:
        sd, modality = info.data.get("spatial_dims"), info.data.get("modality")
        value = v.target_spacing
        if sd is not None and value is not None and len(value) != sd:
            raise ValueError(f"plan.target_spacing needs {sd} values (spatial_dims: {sd}), got {value}")
        if sd is not None and v.patch_size is not None:
            # a 3D data set's 2D configuration takes an in-plane (2-value) patch
            want = 2 if (sd == 2 or v.configuration == "2d") else 3
            if len(v.patch_size) != want:
                raise ValueError(
                    f"plan.patch_size needs {want} values (spatial_dims: {sd}, configuration: "
                    f"{v.configuration}), got {v.patch_size}"
                )
        if sd == 2 and v.configuration == "3d":
            raise ValueError("plan.configuration: 3d needs spatial_dims: 3 (2D images have the 2d configuration only)")
        if modality is not None and modality != "CT":
            given = [k for k in ("clip", "norm_mean", "norm_std") if getattr(v, k) is not None]
            if given:
                keys = "plan." + ", plan.".join(given)
                raise ValueError(f"{keys} only apply to modality CT (this config: {modality}); remove them")
        return v

    @field_validator("augment")
    @classmethod
    def _flip_axes_exist(cls, v: SegAugmentSection, info: ValidationInfo) -> SegAugmentSection:
        _check_axes("augment.flip_axes", v.flip_axes, info.data.get("spatial_dims"))
        return v

    @field_validator("infer")
    @classmethod
    def _tta_settings_need_tta(cls, v: SegInferSection, info: ValidationInfo) -> SegInferSection:
        _check_axes("infer.tta_axes", v.tta_axes, info.data.get("spatial_dims"))
        if not v.tta and v.uncertainty == "tta":
            raise ValueError("infer.uncertainty: tta needs infer.tta: true (or use uncertainty: entropy)")
        if not v.tta and v.tta_axes is not None:
            raise ValueError("infer.tta_axes is only read with infer.tta: true")
        return v

    @field_validator("postprocess")
    @classmethod
    def _post_classes_exist(cls, v: SegPostSection, info: ValidationInfo) -> SegPostSection:
        names = info.data.get("class_names")
        if names is not None:
            for c in v.largest_component:
                if c not in names[1:]:
                    hint = difflib.get_close_matches(c, names[1:], n=1, cutoff=0.6)
                    raise ValueError(
                        f"postprocess.largest_component: {c!r} is not a class"
                        + (f" (did you mean {hint[0]!r}?)" if hint else "")
                        + f"; classes: {', '.join(names[1:])}"
                    )
        return v

    @field_validator("synthetic")
    @classmethod
    def _synthetic_needs_synthetic_data(cls, v: SegSyntheticSection, info: ValidationInfo) -> SegSyntheticSection:
        data = info.data.get("data")
        given = [k for k, x in v.model_dump().items() if x is not None]
        ct_only = [k for k in ("noise_hu", "n_lesions") if k in given]
        if ct_only and info.data.get("modality") == "MR":
            keys = "synthetic." + ", synthetic.".join(ct_only)
            raise ValueError(f"{keys}: CT phantom settings; the MR phantom (modality: MR) takes shape and spacing")
        if given and data is not None and not data.synthetic:
            keys = "synthetic." + ", synthetic.".join(given)
            raise ValueError(f"{keys}: only read with data.synthetic: true; remove the synthetic section")
        return v


def _check_axes(key: str, axes: Sequence[int] | None, spatial_dims: int | None) -> None:
    if axes is not None and spatial_dims is not None and any(not 0 <= a < spatial_dims for a in axes):
        raise ValueError(f"{key} = {list(axes)}: spatial axes are 0..{spatial_dims - 1}")
