"""NIfTI layouts and headers medseg refuses or converts (the NIfTI rows of the table in docs/io.md)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

import medseg.io as mio
from medseg.errors import FileFormatError, InputError


def _save(path, data, affine=None, **header):
    img = nib.Nifti1Image(data, np.diag([1.0, 2.0, 3.0, 1.0]) if affine is None else affine)
    for k, v in header.items():
        img.header[k] = v
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize(
    "affine, match",
    [
        (np.diag([1.0, np.nan, 1.0, 1.0]), "NaN or infinite"),
        (np.diag([1.0, 1.0, np.inf, 1.0]), "NaN or infinite"),
        (np.diag([1.0, 0.0, 1.0, 1.0]), "singular"),
        (np.array([[1.0, 1.0, 0, 0], [1.0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]), "singular"),
    ],
)
def test_non_finite_or_singular_affine_is_refused(tmp_path, affine, match):
    p = tmp_path / "bad.nii.gz"
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4))
    img.set_qform(None, code=0)
    img.header.set_sform(np.eye(4), code=1)
    for i, row in enumerate(("srow_x", "srow_y", "srow_z")):  # written as they are (nibabel would not take NaN)
        img.header[row] = affine[i]
    nib.Nifti1Image(img.dataobj, None, header=img.header).to_filename(str(p))
    with pytest.raises(FileFormatError, match=match) as ei:
        mio.load(p)
    assert "bad.nii.gz" in str(ei.value)
    info = mio.discover(p)[0]
    assert not info.ok and match.split()[0] in info.problems[0]


def test_zero_size_dimension_is_refused(tmp_path):
    p = _save(tmp_path / "empty.nii", np.zeros((4, 0, 3), np.float32))
    with pytest.raises(FileFormatError, match="zero-size dimension"):
        mio.load(p)
    assert not mio.discover(p)[0].ok


def test_complex_voxels_are_refused_not_truncated(tmp_path):
    p = _save(tmp_path / "c.nii", (np.ones((3, 3, 3)) * (1 + 2j)).astype(np.complex64))
    with pytest.raises(FileFormatError, match="complex-valued.*imaginary"):
        mio.load(p)


def test_rgb24_becomes_three_channels(tmp_path):
    rgb = np.zeros((4, 5, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rng = np.random.default_rng(0)
    for c in "RGB":
        rgb[c] = rng.integers(0, 255, (4, 5, 2))
    p = _save(tmp_path / "rgb.nii.gz", rgb)
    ref = np.asanyarray(nib.load(str(p)).dataobj)  # nibabel's records: the reference
    img = mio.load(p)
    assert img.shape == (3, 4, 5, 2)
    for i, c in enumerate("RGB"):
        assert np.array_equal(img[i].numpy(), ref[c].astype(np.float32))
    assert any("RGB voxels" in q for q in img.meta["problems"])


def test_inf_is_counted_and_replaced_like_nan(tmp_path, caplog):
    data = np.zeros((4, 4, 4), np.float32)
    data[0, 0, 0], data[1, 1, 1], data[2, 2, 2] = np.nan, np.inf, -np.inf
    p = _save(tmp_path / "nf.nii.gz", data)
    img = mio.load(p)
    assert img.meta["nan_voxels"] == 1 and img.meta["inf_voxels"] == 2
    assert any("1 NaN and 2 infinite" in q for q in img.meta["problems"]) and "infinite" in caplog.text
    clean = mio.load(p, nan_value=-1024.0)
    assert np.isfinite(clean.numpy()).all() and (clean.numpy() == -1024).sum() == 3


def test_save_nifti_refuses_a_singular_affine_before_writing(tmp_path):
    out = tmp_path / "o.nii.gz"
    with pytest.raises(InputError, match="not finite and invertible"):
        mio.save_nifti(np.zeros((1, 3, 3, 3), np.float32), out, affine=np.diag([1.0, 0.0, 1.0, 1.0]))
    assert not out.exists()
