"""2D images (PNG/TIFF) and the ``medseg info`` / ``medseg convert`` commands."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest
from skimage.io import imsave

from medseg import io as mio
from medseg.cli import main


def test_png_gray_and_rgb_axes(tmp_path):
    import skimage.io

    gray = (np.arange(12 * 20).reshape(12, 20) % 251).astype(np.uint8)  # H=12, W=20
    skimage.io.imsave(tmp_path / "g.png", gray, check_contrast=False)
    img = mio.load(tmp_path / "g.png")
    assert img.shape == (1, 20, 12)  # (C, X, Y) = (C, W, H), as MONAI LoadImage
    assert img[0, 7, 3].item() == gray[3, 7]
    rgb = np.zeros((10, 16, 3), np.uint8)
    rgb[2, 5] = (255, 10, 20)
    skimage.io.imsave(tmp_path / "c.png", rgb, check_contrast=False)
    c = mio.load(tmp_path / "c.png")
    assert c.shape == (3, 16, 10) and c.meta["rgb"]
    assert [c[k, 5, 2].item() for k in range(3)] == [255.0, 10.0, 20.0]


def test_monai_loadimage_agrees_on_png(tmp_path):
    import skimage.io
    from monai.transforms import LoadImage

    gray = (np.random.default_rng(0).integers(0, 255, (9, 14))).astype(np.uint8)
    skimage.io.imsave(tmp_path / "g.png", gray, check_contrast=False)
    ours = mio.load(tmp_path / "g.png")
    ref = LoadImage(image_only=True)(str(tmp_path / "g.png"))
    assert np.array_equal(ours[0].numpy(), np.asarray(ref, np.float32))


def test_tiff_16bit_preserved_with_pixel_size(tmp_path):
    import tifffile

    arr = np.array([[0, 1000], [40000, 65535]], np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", arr, resolution=(4000.0, 2000.0), resolutionunit="CENTIMETER")
    img = mio.load(tmp_path / "a.tif")
    assert img.meta["bit_depth"] == 16
    assert img[0, 0, 1].item() == 40000 and img[0, 1, 1].item() == 65535
    np.testing.assert_allclose(img.meta["spacing"], (10 / 4000, 10 / 2000))  # mm per pixel
    (info,) = mio.discover(tmp_path / "a.tif")
    assert info.kind == "image2d" and info.shape == (2, 2)


def test_bad_png(tmp_path):
    from medseg.errors import FileFormatError

    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(FileFormatError, match="x.png"):
        mio.load(tmp_path / "x.png")


def test_cli_info_and_convert(tmp_path, small_ct_series, capsys):
    folder, ph = small_ct_series
    assert main(["info", str(folder.parent)]) == 0
    out = capsys.readouterr().out
    assert "CT" in out and "32x28x12" in out and "PHANTOM" not in out and "SYN0001" not in out
    assert main(["info", str(folder), "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["kind"] == "dicom" and entry["shape"] == [32, 28, 12] and entry["ok"]
    assert entry["spacing"] == [2.0, 2.0, 3.0] and entry["orientation"] == "LPS"
    target = tmp_path / "out" / "ct.nii.gz"
    assert main(["convert", str(folder), str(target)]) == 0
    nii = nib.load(target)
    np.testing.assert_array_equal(np.asanyarray(nii.dataobj), ph.image)
    np.testing.assert_allclose(nii.affine, ph.affine, atol=1e-5)
    assert sorted(p.name for p in target.parent.iterdir()) == ["ct.nii.gz"]


def test_cli_errors_exit_2_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.dcm"
    bad.write_text("not dicom at all" * 30)
    assert main(["convert", str(bad), str(tmp_path / "o.nii.gz")]) == 2
    assert "bad.dcm" in capsys.readouterr().err
    assert not (tmp_path / "o.nii.gz").exists()


def test_discover_mixed_folder(tmp_path, small_ct_series):
    import shutil

    import skimage.io

    folder, ph = small_ct_series
    shutil.copytree(folder, tmp_path / "dicom")
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 3), np.float32), np.eye(4)), str(tmp_path / "fmri.nii.gz"))
    skimage.io.imsave(tmp_path / "slide.png", np.zeros((7, 9, 3), np.uint8), check_contrast=False)
    found = mio.discover(tmp_path)
    kinds = {s.kind: s for s in found}
    assert set(kinds) == {"dicom", "nifti", "image2d"}
    assert kinds["nifti"].n_channels == 3 and kinds["nifti"].shape == (4, 5, 6)
    assert kinds["image2d"].shape == (9, 7) and kinds["image2d"].n_channels == 3
    assert kinds["dicom"].shape == ph.image.shape
    assert mio.load(kinds["nifti"]).shape == (3, 4, 5, 6)
    table = mio.format_series_table(found)
    assert "fmri.nii.gz" in table and "slide.png" in table


def test_cli_max_pixels_bounds_every_2d_read_of_the_command(tmp_path, capsys):
    imsave(tmp_path / "a.png", np.zeros((100, 120), np.uint8), check_contrast=False)
    before = os.environ.get("MEDSEG_MAX_PIXELS")
    code = main(["--max-pixels", "10000", "convert", str(tmp_path / "a.png"), str(tmp_path / "a.nii.gz")])
    err = capsys.readouterr().err
    assert code == 2 and "12,000 pixels is over the limit of 10,000" in err and "a.png" in err
    assert not (tmp_path / "a.nii.gz").exists() and os.environ.get("MEDSEG_MAX_PIXELS") == before
    assert main(["--max-pixels", "0", "convert", str(tmp_path / "a.png"), str(tmp_path / "a.nii.gz")]) == 0
    with pytest.raises(SystemExit):
        main(["--max-pixels", "-1", "info", str(tmp_path)])
