"""medseg.transforms: MONAI dictionary transforms — modality presets, augmentation sets, loading pipelines."""

from medseg.transforms.augment import augmentation
from medseg.transforms.pipeline import CheckCased, loader, preprocess, train_transforms
from medseg.transforms.presets import CT_WINDOWS, intensity_transform

__all__ = [
    "augmentation",
    "CheckCased",
    "loader",
    "preprocess",
    "train_transforms",
    "CT_WINDOWS",
    "intensity_transform",
]
