"""NIfTI: qform/sform choice, scaling, NaN, 4D channels, writers keep the geometry, image/label check."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pytest

from medseg import io as mio
from medseg.errors import FileFormatError, LabelMismatchError

MARKER_RAS = np.array([-20.0, 30.0, 40.0])  # left, anterior, superior
MARKER_IJK = (5, 9, 3)
SHAPE = (20, 24, 8)


def _volume():
    v = np.full(SHAPE, -1000, np.int16)
    v[12:18, 2:6, :] = 40
    v[MARKER_IJK] = 1500
    return v


def _affine(rot=None, spacing=(0.8, 1.1, 2.5)):
    rot = np.eye(3) if rot is None else rot
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(spacing)
    a[:3, 3] = MARKER_RAS - a[:3, :3] @ np.array(MARKER_IJK, float)
    return a


def _write(path, data, affine, qform=True, sform=True):
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine if qform else None, code=1 if qform else 0)
    img.set_sform(affine if sform else None, code=2 if sform else 0)
    nib.save(img, str(path))
    return path


def _raw_scl(path):
    """(scl_slope, scl_inter) as stored in the file's bytes (nibabel reports 1/0 as NaN = 'no scaling')."""
    import gzip
    import struct

    raw = gzip.open(path).read(352) if str(path).endswith(".gz") else open(path, "rb").read(352)
    return struct.unpack("<ff", raw[112:120])


def _marker_world(img):
    ijk = np.unravel_index(int(np.argmax(img[0].numpy())), img.shape[1:])
    return mio.voxel_to_world(img.affine.numpy(), ijk)


@pytest.mark.parametrize("mode", ["qform_only", "sform_only", "both", "oblique"])
def test_marker_at_world_position(tmp_path, mode, rotation_matrix):
    rot = rotation_matrix(0.3, -0.2, 0.5) if mode == "oblique" else np.diag([-1.0, 1.0, 1.0])
    aff = _affine(rot)
    p = _write(tmp_path / "img.nii.gz", _volume(), aff, qform=mode != "sform_only", sform=mode != "qform_only")
    img = mio.load(p)
    assert img.shape == (1, *SHAPE)
    assert np.linalg.norm(_marker_world(img) - MARKER_RAS) < 0.4
    np.testing.assert_allclose(img.meta["spacing"], (0.8, 1.1, 2.5), atol=1e-5)
    # written back: same voxel, same world position
    out = mio.save_nifti(img, tmp_path / "out.nii.gz")
    back = nib.load(out)
    data = np.asanyarray(back.dataobj)
    assert tuple(np.unravel_index(int(np.argmax(data)), data.shape)) == MARKER_IJK
    assert data.dtype == np.int16  # integer HU stay integer
    assert _raw_scl(out) == (1.0, 0.0)
    np.testing.assert_allclose(back.affine, img.affine.numpy(), atol=1e-4)


def test_qform_sform_disagreement_warns_and_uses_sform(tmp_path, caplog):
    q = _affine(np.diag([-1.0, 1.0, 1.0]))
    s = q.copy()
    s[:3, 3] += [5.0, 0, 0]
    img = nib.Nifti1Image(_volume(), s)
    img.set_qform(q, code=1)
    img.set_sform(s, code=2)
    nib.save(img, str(tmp_path / "x.nii"))
    with caplog.at_level(logging.WARNING):
        out = mio.load(tmp_path / "x.nii")
    assert "disagree" in caplog.text
    np.testing.assert_allclose(out.affine.numpy(), s, atol=1e-5)
    assert any("disagree" in p for p in out.meta["problems"])
    (info,) = mio.discover(tmp_path / "x.nii")
    assert any("disagree" in p for p in info.problems)


def test_scl_slope_applied_and_output_unscaled(tmp_path):
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(2.5, -10.0)
    nib.save(img, str(tmp_path / "s.nii.gz"))
    out = mio.load(tmp_path / "s.nii.gz")
    np.testing.assert_allclose(out[0].numpy(), data * 2.5 - 10.0)
    back = nib.load(mio.save_nifti(out, tmp_path / "o.nii.gz"))
    assert _raw_scl(tmp_path / "o.nii.gz") == (1.0, 0.0)
    np.testing.assert_allclose(np.asanyarray(back.dataobj), data * 2.5 - 10.0)


def test_nan_kept_by_default_or_replaced(tmp_path, caplog):
    data = np.zeros((3, 3, 3), np.float32)
    data[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "n.nii"))
    with caplog.at_level(logging.WARNING):
        a = mio.load(tmp_path / "n.nii")
    assert np.isnan(a[0, 1, 1, 1].item()) and a.meta["nan_voxels"] == 1 and "NaN" in caplog.text
    b = mio.load(tmp_path / "n.nii", nan_value=-1024)
    assert b[0, 1, 1, 1].item() == -1024 and not np.isnan(b.numpy()).any()


def test_4d_is_channels_not_space(nibabel_file):
    p = nibabel_file("example4d.nii.gz")
    ref = nib.load(p)
    img = mio.load(p)
    assert img.shape == (ref.shape[3], *ref.shape[:3])
    np.testing.assert_allclose(img[1].numpy(), np.asanyarray(ref.dataobj)[..., 1], rtol=1e-6)


@pytest.mark.parametrize("name", ["anatomical.nii", "example4d.nii.gz", "standard.nii.gz"])
def test_nibabel_files_match_simpleitk(name, nibabel_file):
    import SimpleITK as sitk

    p = nibabel_file(name)
    img = mio.load(p)
    si = sitk.ReadImage(p)
    if si.GetDimension() == 4:
        si = sitk.Extract(si, list(si.GetSize()[:3]) + [0], [0, 0, 0, 0])
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine.numpy()
    d = np.array(si.GetDirection()).reshape(3, 3) * np.array(si.GetSpacing())
    np.testing.assert_allclose(lps[:3, 3], si.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(lps[:3, :3], d, atol=1e-4)
    ref = sitk.GetArrayFromImage(si).transpose(2, 1, 0)
    np.testing.assert_array_equal(img[0].numpy(), ref.astype(np.float32))


def test_save_label_keeps_source_header_exactly(tmp_path, rotation_matrix):
    aff = _affine(rotation_matrix(0.1, 0.2, 0.3))
    p = _write(tmp_path / "img.nii.gz", _volume(), aff)
    img = mio.load(p)
    lab = (img[0].numpy() > 0).astype(np.uint8)
    out = mio.save_label(lab, img, tmp_path / "lab.nii.gz")
    src, got = nib.load(p).header, nib.load(out).header
    for key in (
        "qform_code",
        "sform_code",
        "quatern_b",
        "quatern_c",
        "quatern_d",
        "qoffset_x",
        "srow_x",
        "srow_y",
        "srow_z",
        "pixdim",
    ):
        np.testing.assert_array_equal(got[key], src[key], err_msg=key)
    assert got.get_data_dtype() == np.uint8
    mio.check_image_label(img, mio.load(out), p, out)  # they overlay
    # the label writer refuses a wrong shape and out-of-range values
    with pytest.raises(LabelMismatchError):
        mio.save_label(lab[:-1], img, tmp_path / "bad.nii.gz")
    with pytest.raises(LabelMismatchError):
        mio.save_label(lab.astype(np.int32) * 300, img, tmp_path / "bad.nii.gz")
    assert not (tmp_path / "bad.nii.gz").exists()


def test_check_image_label_names_both_files(tmp_path):
    aff = _affine()
    a = _write(tmp_path / "image.nii.gz", _volume(), aff)
    shifted = aff.copy()
    shifted[0, 3] += 0.5 * 0.8  # half a voxel
    b = _write(tmp_path / "label.nii.gz", np.zeros(SHAPE, np.uint8), shifted)
    c = _write(tmp_path / "small.nii.gz", np.zeros((4, 4, 4), np.uint8), aff)
    with pytest.raises(LabelMismatchError) as ei:
        mio.check_image_label(mio.load(a), mio.load(b), a, b)
    assert "image.nii.gz" in str(ei.value) and "label.nii.gz" in str(ei.value)
    with pytest.raises(LabelMismatchError, match="shape"):
        mio.check_image_label(mio.load(a), mio.load(c), a, c)
    # float32 header round-off is within tolerance
    d = _write(tmp_path / "same.nii.gz", np.zeros(SHAPE, np.uint8), aff.astype(np.float32).astype(float) + 1e-6)
    mio.check_image_label(mio.load(a), mio.load(d), a, d)


def test_bad_nifti_files(tmp_path):
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(FileFormatError, match="empty"):
        mio.load(tmp_path / "empty.nii.gz")
    data = np.zeros((10, 10, 10), np.int16)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "t.nii"))
    raw = (tmp_path / "t.nii").read_bytes()
    (tmp_path / "t.nii").write_bytes(raw[:600])
    with pytest.raises(FileFormatError) as ei:
        mio.load(tmp_path / "t.nii")
    assert "t.nii" in str(ei.value)
    (tmp_path / "text.nii").write_text("hello" * 100)
    with pytest.raises(FileFormatError, match="text.nii"):
        mio.load(tmp_path / "text.nii")


def test_save_nifti_is_atomic(tmp_path, monkeypatch):
    img = mio.load(_write(tmp_path / "img.nii.gz", _volume(), _affine()))
    target = tmp_path / "out.nii.gz"

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", fail)
    with pytest.raises(OSError):
        mio.save_nifti(img, target)
    assert not target.exists() and not list(tmp_path.glob(".out.nii.gz*"))
