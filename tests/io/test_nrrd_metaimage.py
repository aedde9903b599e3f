"""NRRD (.nrrd, .nhdr), 3D Slicer segmentations (.seg.nrrd) and MetaImage (.mha, .mhd) through load,
discover, info, convert, save_label and the segmentation task's writer.

Geometry is checked against SimpleITK reading the same file (the grid's corner voxel centres, LPS mm,
within 1e-4 mm) on files written by SimpleITK and by pynrrd in several orientations (3D Slicer's
sample data are not available offline).
"""

from __future__ import annotations

import nibabel as nib
import nrrd
import numpy as np
import pytest
import SimpleITK as sitk
from dicom_reference import grid_corners, same_corners, sitk_corners
from scipy.spatial.transform import Rotation

import medseg.io as mio
from medseg.cli import main
from medseg.errors import FileFormatError

rng = np.random.default_rng(3)
VOL = rng.integers(-1000, 1000, (6, 5, 4)).astype(np.int16)  # (X, Y, Z)
ROTATIONS = {
    "axial": np.eye(3),
    "oblique": Rotation.from_euler("xyz", [30, 10, -50], degrees=True).as_matrix(),
    "flipped": np.diag([-1.0, 1.0, -1.0]),
    "coronal": np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]),
}


def _agrees_with_simpleitk(path, img) -> bool:
    pts, size = sitk_corners(path)
    return tuple(size) == tuple(img.shape[1:4]) and same_corners(grid_corners(img.affine.numpy(), img.shape[1:4]), pts)


@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr", ".mha", ".mhd"])
@pytest.mark.parametrize("orient", list(ROTATIONS))
def test_files_written_by_simpleitk(tmp_path, suffix, orient):
    im = sitk.GetImageFromArray(VOL.transpose(2, 1, 0))
    im.SetSpacing((0.7, 0.8, 2.5))
    im.SetOrigin((10.0, -20.0, 30.0))
    im.SetDirection(ROTATIONS[orient].ravel().tolist())
    path = tmp_path / f"img{suffix}"
    sitk.WriteImage(im, str(path))
    img = mio.load(path)
    assert img.shape == (1, 6, 5, 4) and np.array_equal(img[0].numpy(), VOL.astype(np.float32))
    assert _agrees_with_simpleitk(path, img)
    np.testing.assert_allclose(img.meta["spacing"], (0.7, 0.8, 2.5), atol=1e-6)
    info = mio.discover(path)[0]
    assert info.kind == ("nrrd" if "nr" in suffix or "nh" in suffix else "metaimage") and info.ok
    assert info.shape == (6, 5, 4) and info.orientation == img.meta["orientation"]


@pytest.mark.parametrize("space", ["left-posterior-superior", "right-anterior-superior", "left-anterior-superior"])
@pytest.mark.parametrize("orient", ["axial", "oblique"])
def test_files_written_by_pynrrd_in_each_space(tmp_path, space, orient):
    dirs = ROTATIONS[orient] @ np.diag([0.5, 0.6, 3.0])
    path = tmp_path / "p.nrrd"
    header = {"space": space, "space directions": dirs.T, "space origin": [1.0, 2.0, 3.0], "kinds": ["domain"] * 3}
    nrrd.write(str(path), VOL, header)
    img = mio.load(path)
    assert np.array_equal(img[0].numpy(), VOL.astype(np.float32))
    assert _agrees_with_simpleitk(path, img)
    assert img.meta["nrrd_space"] == space


def _slicer_seg(path, labels, names: list[tuple[int, str]], layers=None):
    """A .seg.nrrd as 3D Slicer writes it (LPS, one segment per label value, Segment<i>_* fields)."""
    header = {
        "space": "left-posterior-superior",
        "space directions": np.diag([0.8, 0.8, 2.0]),
        "space origin": [-50.0, -60.0, 10.0],
        "kinds": ["domain"] * 3,
        "Segmentation_MasterRepresentation": "Binary labelmap",
    }
    data = labels
    if layers is not None:
        data = np.stack(layers)
        header["kinds"] = ["list"] + ["domain"] * 3
        header["space directions"] = np.vstack([[np.nan] * 3, np.diag([0.8, 0.8, 2.0])])
    for i, (value, name) in enumerate(names):
        header[f"Segment{i}_Name"] = name
        header[f"Segment{i}_LabelValue"] = str(value)
        header[f"Segment{i}_Layer"] = str(0 if layers is None else i)
        header[f"Segment{i}_ID"] = f"Segment_{value}"
        header[f"Segment{i}_Color"] = "0.5 0.2 0.1"
    nrrd.write(str(path), data, header)
    return path


def test_slicer_segmentation_keeps_segment_names_and_values(tmp_path):
    labels = np.zeros((6, 5, 4), np.uint8)
    labels[1:3, 1:3, 1:3] = 1
    labels[4, 3, 2] = 2
    path = _slicer_seg(tmp_path / "seg.seg.nrrd", labels, [(1, "liver"), (2, "tumour")])
    img = mio.load(path)
    assert np.array_equal(img[0].numpy(), labels)
    segs = img.meta["segments"]
    assert [(s["name"], s["label_value"], s["layer"]) for s in segs] == [("liver", 1, 0), ("tumour", 2, 0)]
    assert _agrees_with_simpleitk(path, img)
    info = mio.discover(tmp_path)[0]
    assert info.kind == "nrrd" and "2 segments" in info.description
    assert mio.registry.case_id(path) == "seg"


def test_overlapping_segments_are_layers_as_channels(tmp_path):
    a = np.zeros((6, 5, 4), np.uint8)
    b = np.zeros((6, 5, 4), np.uint8)
    a[1:4] = 1
    b[2:5] = 1  # overlaps a
    path = _slicer_seg(tmp_path / "two.seg.nrrd", None, [(1, "liver"), (1, "tumour")], layers=[a, b])
    img = mio.load(path)
    assert img.shape == (2, 6, 5, 4) and np.array_equal(img[0].numpy(), a) and np.array_equal(img[1].numpy(), b)
    assert [(s["name"], s["label_value"], s["layer"]) for s in img.meta["segments"]] == [
        ("liver", 1, 0),
        ("tumour", 1, 1),
    ]


def test_save_label_seg_nrrd_roundtrip_in_slicer_fields(tmp_path):
    ref_path = tmp_path / "ct.nrrd"
    im = sitk.GetImageFromArray(VOL.transpose(2, 1, 0))
    im.SetSpacing((0.7, 0.8, 2.5))
    im.SetDirection(ROTATIONS["oblique"].ravel().tolist())
    sitk.WriteImage(im, str(ref_path))
    ref = mio.load(ref_path)
    labels = (VOL > 0).astype(np.uint8) + (VOL > 500)
    out = mio.save_label(labels, ref, tmp_path / "out" / "ct.seg.nrrd", segments={1: "liver", 2: "tumour"})
    back = mio.load(out)
    assert np.array_equal(back[0].numpy(), labels) and np.allclose(back.affine, ref.affine, atol=1e-9)
    assert [(s["name"], s["label_value"]) for s in back.meta["segments"]] == [("liver", 1), ("tumour", 2)]
    header = nrrd.read_header(str(out))
    assert header["space"] == "left-posterior-superior" and header["Segmentation_MasterRepresentation"]
    assert _agrees_with_simpleitk(out, back)
    mio.check_image_label(ref, back)
    # a plain .nrrd label volume from a NIfTI reference: the NIfTI's geometry
    nii = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(VOL, np.diag([-0.7, -0.8, 2.5, 1.0])), str(nii))
    lab = mio.save_label(labels, nii, tmp_path / "from_nifti.nrrd")
    assert np.allclose(mio.load(lab).affine, mio.load(nii).affine, atol=1e-9)


def test_segment_task_writes_seg_nrrd_for_nrrd_inputs(tmp_path):
    from medseg.tasks.segmentation.files import write_case_outputs

    aff = np.diag([-0.8, -0.8, 2.0, 1.0])
    labels = np.zeros((6, 5, 4), np.uint8)
    labels[2:4, 1:3, 1:3] = 1
    res = {"labels": labels, "affine": aff, "class_names": ["background", "liver"], "source_format": "nrrd"}
    out = write_case_outputs(res, "case1", tmp_path, save_probs=False)
    assert out["labels"].endswith("labels/case1.seg.nrrd")
    back = mio.load(out["labels"])
    assert np.array_equal(back[0].numpy(), labels) and np.allclose(back.affine, aff)
    assert back.meta["segments"][0]["name"] == "liver"
    res["source_format"] = "nifti"
    assert write_case_outputs(res, "case2", tmp_path, save_probs=False)["labels"].endswith("case2.nii.gz")


def test_info_and_convert_read_the_new_formats(tmp_path, capsys):
    im = sitk.GetImageFromArray(VOL.transpose(2, 1, 0))
    im.SetSpacing((0.7, 0.8, 2.5))
    sitk.WriteImage(im, str(tmp_path / "a.mha"))
    sitk.WriteImage(im, str(tmp_path / "b.nrrd"))
    assert main(["info", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "metaimage" in table and "nrrd" in table and "6x5x4" in table and "no images" not in table
    assert main(["convert", str(tmp_path / "b.nrrd"), str(tmp_path / "b.nii.gz")]) == 0
    nii = mio.load(tmp_path / "b.nii.gz")
    assert np.allclose(nii.affine, mio.load(tmp_path / "b.nrrd").affine, atol=1e-5)


def test_damaged_headers_are_file_format_errors(tmp_path):
    im = sitk.GetImageFromArray(VOL.transpose(2, 1, 0))
    sitk.WriteImage(im, str(tmp_path / "t.mha"))
    data = (tmp_path / "t.mha").read_bytes()
    (tmp_path / "short.mha").write_bytes(data[:-50])  # truncated voxels
    (tmp_path / "huge.mha").write_bytes(data.replace(b"DimSize = 6 5 4", b"DimSize = 60000 50000 40000"))
    for name in ("short.mha", "huge.mha"):
        with pytest.raises(FileFormatError, match="truncated data") as ei:
            mio.load(tmp_path / name)
        assert name in str(ei.value)
    nrrd.write(str(tmp_path / "flat.nrrd"), VOL, {"space": "LPS", "space directions": np.diag([1.0, 0.0, 1.0])})
    with pytest.raises(FileFormatError, match="singular"):
        mio.load(tmp_path / "flat.nrrd")
    (tmp_path / "junk.nrrd").write_bytes(b"NRRD0004\ntype: what\n\n")
    with pytest.raises(FileFormatError, match="junk.nrrd"):
        mio.load(tmp_path / "junk.nrrd")
    kinds = {s.path.rsplit("/", 1)[-1]: s.kind for s in mio.discover(tmp_path)}
    assert kinds["junk.nrrd"] == "unreadable" and kinds["flat.nrrd"] == "unreadable" and kinds["t.mha"] == "metaimage"
