"""The embedded CT phantom: deterministic, anatomically asymmetric, realistic HU, correct DICOM geometry."""

from __future__ import annotations

import numpy as np
import pydicom

from medseg.data.synthetic import CT_CLASSES, ct_phantom, make_ct_dataset, write_phantom_dicom, write_phantom_nifti


def test_deterministic_from_seed():
    a, b, c = ct_phantom(3), ct_phantom(3), ct_phantom(4)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert not np.array_equal(a.image, c.image)


def test_hu_values_and_classes():
    ph = ct_phantom(0)
    assert ph.image.dtype == np.int16 and ph.label.dtype == np.uint8
    assert set(np.unique(ph.label)) <= set(CT_CLASSES)
    assert all((ph.label == k).sum() > 0 for k in (1, 2, 3))
    assert ph.image[0, 0, 0] == -1000  # air outside the body
    liver = ph.image[ph.label == 1].astype(float)
    spleen = ph.image[ph.label == 2].astype(float)
    assert 50 < np.median(liver) < 80 and 30 < np.median(spleen) < 60
    assert 8 < liver.std() < 40  # noisy, not flat
    if (ph.label == 4).any():
        assert np.median(ph.image[ph.label == 4]) < np.median(liver) - 20  # hypodense lesions


def test_asymmetric_anatomy():
    ph = ct_phantom(1)
    X = ph.label.shape[0]
    liver_x = np.argwhere(ph.label == 1)[:, 0].mean()
    spleen_x = np.argwhere(ph.label == 2)[:, 0].mean()
    # i runs to the patient's left: liver (patient's right) at low i, spleen at high i
    assert liver_x < X / 2 < spleen_x
    # RAS affine: voxel i increases -> R coordinate decreases
    assert ph.affine[0, 0] < 0 and ph.affine[2, 2] > 0


def test_dicom_series_geometry(tmp_path):
    ph = ct_phantom(2, shape=(40, 32, 10), spacing=(1.5, 1.0, 4.0))
    files = write_phantom_dicom(ph, tmp_path / "s", patient_name="A^B", patient_id="X1")
    assert len(files) == 10
    ds = [pydicom.dcmread(f) for f in files]
    assert len({d.SeriesInstanceUID for d in ds}) == 1 and len({d.SOPInstanceUID for d in ds}) == 10
    d0, d1 = ds[0], ds[1]
    assert (d0.Rows, d0.Columns) == (32, 40)
    assert [float(v) for v in d0.PixelSpacing] == [1.0, 1.5]
    assert float(d1.ImagePositionPatient[2]) - float(d0.ImagePositionPatient[2]) == 4.0
    hu = d0.pixel_array.astype(np.int32) * int(d0.RescaleSlope) + int(d0.RescaleIntercept)
    assert np.array_equal(hu.T, ph.image[:, :, 0])
    assert not any(str(f.name).startswith(("A^B", "X1")) for f in files)


def test_nifti_and_dataset(tmp_path):
    import nibabel as nib

    ph = ct_phantom(0, shape=(24, 24, 8))
    img, lab = write_phantom_nifti(ph, tmp_path / "i.nii.gz", tmp_path / "l.nii.gz")
    nii = nib.load(img)
    assert np.allclose(nii.affine, ph.affine) and np.array_equal(np.asarray(nii.dataobj), ph.image)
    assert np.array_equal(np.asarray(nib.load(lab).dataobj), ph.label)
    dl = make_ct_dataset(tmp_path / "ds", n_cases=3, n_test=1, shape=(16, 16, 8))
    import json

    d = json.loads(dl.read_text())
    assert len(d["training"]) == 2 and len(d["test"]) == 1
    assert (dl.parent / d["test"][0]["image"]).exists()
