"""Segmentation transforms: case checks (bad input), RAS + spacing, patch sampling, presets."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medseg.errors import InputError, LabelMismatchError
from medseg.review.windowing import WINDOWS
from medseg.transforms import (
    CT_WINDOWS,
    CheckCased,
    augmentation,
    intensity_transform,
    preprocess,
    train_transforms,
)


def _case(shape=(20, 20, 10), label_values=(0, 1), affine=None, label_affine=None, nan=False):
    aff = np.diag([-2.0, -2.0, 3.0, 1.0]) if affine is None else affine
    img = np.random.default_rng(0).normal(0, 10, shape).astype(np.float32)
    if nan:
        img[3, 3, 3] = np.nan
    lab = np.zeros(shape, np.float32)
    for i, v in enumerate(label_values[1:]):
        lab[5 + 3 * i : 8 + 3 * i, 5:10, 3:6] = v
    meta = {"filename_or_obj": "/data/case_007.nii.gz"}
    lmeta = {"filename_or_obj": "/data/case_007_label.nii.gz"}
    return {
        "image": MetaTensor(img[None], affine=torch.as_tensor(aff), meta=meta),
        "label": MetaTensor(
            lab[None], affine=torch.as_tensor(aff if label_affine is None else label_affine), meta=lmeta
        ),
    }


def test_check_passes_and_maps_labels():
    d = CheckCased(2, {4: 1, 2: 0})(_case(label_values=(0, 1, 2, 4)))
    assert set(torch.unique(d["label"]).tolist()) == {0.0, 1.0}


def test_check_nan_names_file():
    with pytest.raises(InputError, match="case_007.nii.gz.*NaN"):
        CheckCased(2)(_case(nan=True))


def test_check_unexpected_label_values():
    with pytest.raises(LabelMismatchError, match=r"unexpected values \[7\]"):
        CheckCased(2)(_case(label_values=(0, 1, 7)))


def test_check_empty_label():
    with pytest.raises(InputError, match="empty"):
        CheckCased(2)(_case(label_values=(0,)))


def test_check_shape_and_affine_mismatch():
    d = _case()
    d["label"] = MetaTensor(torch.zeros(1, 20, 20, 9), affine=d["image"].affine, meta=d["label"].meta)
    with pytest.raises(LabelMismatchError, match="shape"):
        CheckCased(2)(d)
    shifted = np.diag([-2.0, -2.0, 3.0, 1.0])
    shifted[0, 3] = 5.0
    with pytest.raises(LabelMismatchError, match="affines differ"):
        CheckCased(2)(_case(label_affine=shifted))


def test_preprocess_ras_and_spacing():
    """An LPS-stored image comes out RAS-oriented at the target spacing."""
    d = _case(shape=(20, 20, 10))
    t = preprocess(
        ["image", "label"],
        spatial_dims=3,
        modality="other",
        target_spacing=(4.0, 4.0, 3.0),
        load=False,
        crop_foreground=False,
    )
    out = t(d)
    aff = np.asarray(out["image"].affine)
    assert np.allclose(np.diag(aff)[:3], [4.0, 4.0, 3.0])  # positive diagonal = RAS
    assert tuple(out["image"].shape[1:]) == (10, 10, 10)
    assert tuple(out["label"].shape) == tuple(out["image"].shape)


def test_train_patches_balanced_and_padded():
    """Patches have the patch size even when the volume is smaller; pos_fraction=1 centres on foreground."""
    d = _case(shape=(20, 20, 10))
    tr, _ = train_transforms(
        spatial_dims=3,
        modality="other",
        target_spacing=None,
        patch_size=(16, 16, 16),
        n_classes=2,
        augment="none",
        samples_per_image=4,
        pos_fraction=1.0,
    )
    # skip the loader: feed MetaTensors directly
    from monai.transforms import Compose

    t = Compose(tr.transforms[1:])
    patches = t(d)
    assert len(patches) == 4
    for p in patches:
        assert tuple(p["image"].shape) == (1, 16, 16, 16)
        assert p["label"].sum() > 0


def test_ct_preset_window():
    t = intensity_transform("CT", clip=(-100, 300), mean=100, std=200)
    out = t({"image": torch.tensor([[-1000.0, 100.0, 300.0, 2000.0]])})["image"]
    assert torch.allclose(torch.as_tensor(out), torch.tensor([[-1.0, 0.0, 1.0, 1.0]]))


def test_mr_preset_zscore_on_foreground():
    x = torch.zeros(1, 10, 10)
    x[0, 2:8, 2:8] = torch.linspace(50, 150, 36).reshape(6, 6)
    out = torch.as_tensor(intensity_transform("MR")({"image": x})["image"])
    fg = out[0, 2:8, 2:8]
    assert abs(float(fg.mean())) < 1e-4 and abs(float(fg.std(unbiased=False)) - 1) < 1e-3


def test_augmentation_levels_keep_label_values():
    d = {"image": torch.randn(1, 16, 16, 8), "label": (torch.rand(1, 16, 16, 8) > 0.5).float() * 2}
    aug = augmentation("heavy", 3, flip_axes=[0])
    aug.set_random_state(seed=1)
    for _ in range(3):
        out = aug(d)
        assert set(torch.unique(torch.as_tensor(out["label"])).tolist()) <= {0.0, 2.0}
    assert len(augmentation("none", 2).transforms) == 0


def test_ct_windows_agree_with_the_review_presets():
    """One set of CT windows: the intensity presets and the review pictures' windows are the same."""
    shared = set(WINDOWS) & set(CT_WINDOWS)
    assert shared == set(WINDOWS) == set(CT_WINDOWS)
    assert CT_WINDOWS["soft_tissue"] == (-160.0, 240.0) and CT_WINDOWS["brain"] == (0.0, 80.0)
    for name in shared:
        c, w = WINDOWS[name]
        assert CT_WINDOWS[name] == (c - w / 2, c + w / 2), name
