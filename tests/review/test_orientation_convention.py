"""One radiological convention for every stored order: the same volume as a RAS NIfTI and as an LPS
DICOM series gives identical review pictures; 2D NIfTI (X, Y, 1) cases get their thumbnail."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medseg.data.synthetic import ct_phantom, write_phantom_dicom
from medseg.io import load
from medseg.review.overlay import orientation_letters, overlay_volume
from medseg.review.stack import slice_stack
from medseg.tasks.cohort import CaseOutputs
from medseg.tasks.segmentation.files import read_case_image, write_review_images


@pytest.fixture(scope="module")
def same_volume_two_files(tmp_path_factory):
    """(DICOM image, its labels), (RAS NIfTI image, its labels): one phantom, two stored orders."""
    tmp = tmp_path_factory.mktemp("orient")
    ph = ct_phantom(seed=4, shape=(40, 36, 14), spacing=(3.0, 3.5, 5.0))
    write_phantom_dicom(ph, tmp / "dicom")
    dcm = load(tmp / "dicom")
    assert dcm.meta["orientation"] == "LPS"
    lps = nib.Nifti1Image(ph.image, ph.affine)
    ras = nib.as_closest_canonical(lps)  # re-stored with the first two axes reversed: RAS order
    nib.save(ras, str(tmp / "ras.nii.gz"))
    nii = load(tmp / "ras.nii.gz")
    assert nii.meta["orientation"] == "RAS"
    lab_lps = (ph.label == 1).astype(np.uint8)
    lab_ras = lab_lps[::-1, ::-1, :]
    assert np.array_equal(np.asarray(nii)[0], np.asarray(dcm)[0][::-1, ::-1, :])
    return (dcm, lab_lps), (nii, lab_ras), tmp


def test_ras_nifti_and_lps_dicom_give_identical_views(same_volume_two_files):
    (dcm, lab_d), (nii, lab_n), _ = same_volume_two_files
    for view in ("axial", "coronal", "sagittal"):
        a = overlay_volume(np.asarray(dcm)[0], lab_d, affine=np.asarray(dcm.affine), view=view)
        b = overlay_volume(np.asarray(nii)[0], lab_n, affine=np.asarray(nii.affine), view=view)
        assert np.array_equal(a, b), view
    sa = slice_stack(np.asarray(dcm)[0], lab_d, np.asarray(dcm.affine), max_slices=6)
    sb = slice_stack(np.asarray(nii)[0], lab_n, np.asarray(nii.affine), max_slices=6)
    assert sa["images"] == sb["images"] and sa["overlays"] == sb["overlays"] and sa["letters"] == sb["letters"]
    assert sa["letters"] == {"top": "A", "bottom": "P", "left": "R", "right": "L"}  # radiological
    # the stored orders differ, and their own letters say so
    assert orientation_letters(np.asarray(nii.affine), "axial")["left"] == "L"


def test_segment_thumbnails_are_identical_for_both_files(same_volume_two_files):
    (dcm, lab_d), (nii, lab_n), tmp = same_volume_two_files
    names = ["background", "liver"]
    a = write_review_images(dcm, lab_d, CaseOutputs(tmp / "a", "case"), class_names=names, modality="CT")
    b = write_review_images(nii, lab_n, CaseOutputs(tmp / "b", "case"), class_names=names, modality="CT")
    from pathlib import Path

    assert Path(a["thumbnail"]).read_bytes() == Path(b["thumbnail"]).read_bytes()
    for pa, pb in zip(a["planes"], b["planes"]):
        assert Path(pa).read_bytes() == Path(pb).read_bytes()
    assert len(a["planes"]) == 3 and Path(a["stack"]).is_file()


def test_2d_nifti_case_gets_a_thumbnail(tmp_path):
    ph = ct_phantom(seed=2, shape=(40, 40, 9), spacing=(2.0, 2.0, 4.0))
    sl = ph.image[:, :, 4:5]
    nib.save(nib.Nifti1Image(sl, ph.affine), str(tmp_path / "slice.nii.gz"))
    img = read_case_image([tmp_path / "slice.nii.gz"], spatial_dims=2)
    assert tuple(img.shape) == (1, 40, 40)
    lab = (ph.label[:, :, 4] == 1).astype(np.uint8)
    files = CaseOutputs(tmp_path / "out", "slice")
    pics = write_review_images(img, lab, files, class_names=["background", "liver"], modality="CT")
    assert pics["thumbnail"] and (tmp_path / "out" / "overlays" / "slice.png").is_file()
    assert files.outputs["overlay"] == pics["thumbnail"]
