"""Config classes of each task (``task:`` key of a pipeline config).

Each class extends :class:`medseg.config.PipelineConfig` and is registered by name. They import
no torch, so validating a config is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

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


class SegInferSection(InferSection):
    """Inference: sliding window (Gaussian blending), flip TTA, probabilities, uncertainty and review flag."""

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
    data: DataSection = Field(default_factory=DataSection)
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


# --- detection (issue: cell and mitosis detection) ------------------------------------------


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


# --- classification (issue: transfer-learned lesion classifiers) ----------------------------


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
    model: ModelSection = Field(default_factory=lambda: ModelSection(name="efficientnet_lite0"))
    train: TrainSection = Field(
        default_factory=lambda: TrainSection(epochs=15, batch_size=16, lr=1e-3, early_stop_patience=5)
    )
    infer: InferSection = Field(default_factory=InferSection)


# --- weak supervision (issue: Grad-CAM) ------------------------------------------------------


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
