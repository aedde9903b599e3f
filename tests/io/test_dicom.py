"""DICOM loading: world-coordinate correctness, SimpleITK agreement, series rules."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from medseg import io as mio
from medseg.errors import FileFormatError, GeometryError, MissingDependencyError
from medseg.io.geometry import LPS_TO_RAS

# the marker: 20 mm to the patient's LEFT, 30 mm ANTERIOR, 40 mm SUPERIOR (RAS: x=-20, y=+30, z=+40)
MARKER_RAS = np.array([-20.0, 30.0, 40.0])
MARKER_IJK = (5, 9, 3)
SHAPE = (20, 24, 8)


def _marker_volume() -> np.ndarray:
    """Asymmetric volume: air, an L-shaped block in one corner, a bright marker at MARKER_IJK."""
    v = np.full(SHAPE, -1000.0)
    v[12:18, 2:6, :] = 40.0
    v[12:14, 2:14, :] = 40.0
    v[MARKER_IJK] = 1500.0
    return v


def _origin_for_marker(iop, spacing) -> np.ndarray:
    """LPS position of voxel (0,0,0) such that voxel MARKER_IJK sits at MARKER_RAS (DICOM definition)."""
    r, c = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    n = np.cross(r, c)
    target_lps = MARKER_RAS * np.array([-1, -1, 1])
    i, j, k = MARKER_IJK
    return target_lps - (i * spacing[0] * r + j * spacing[1] * c + k * spacing[2] * n)


def _marker_world(img) -> np.ndarray:
    ijk = np.unravel_index(int(np.argmax(img[0].numpy())), img.shape[1:])
    return mio.voxel_to_world(img.affine.numpy(), ijk)


def _rot(ax, ay, az):
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


ORIENTATIONS = {
    "axial": (1, 0, 0, 0, 1, 0),
    "coronal": (1, 0, 0, 0, 0, -1),
    "sagittal": (0, 1, 0, 0, 0, -1),
    "oblique": tuple(np.concatenate([_rot(0.3, -0.2, 0.5)[:, 0], _rot(0.3, -0.2, 0.5)[:, 1]])),
    "flipped_axial": (-1, 0, 0, 0, -1, 0),
}


@pytest.mark.parametrize("name", sorted(ORIENTATIONS))
def test_marker_lands_at_its_world_position(tmp_path, name, dicom_writer):
    iop = ORIENTATIONS[name]
    spacing = (0.8, 1.1, 2.5)
    dicom_writer(tmp_path / "s", _marker_volume(), spacing=spacing, origin=_origin_for_marker(iop, spacing), iop=iop)
    img = mio.load(tmp_path / "s")
    assert img.shape == (1, *SHAPE)
    half_voxel = 0.5 * min(spacing)
    assert np.linalg.norm(_marker_world(img) - MARKER_RAS) < half_voxel
    np.testing.assert_allclose(img.meta["spacing"], spacing, atol=1e-6)  # z spacing from positions, not SliceThickness
    # the asymmetric block is where it was written (no flips)
    assert float(img[0, 15, 3, 4]) == 40.0 and float(img[0, 3, 15, 4]) == -1000.0


def test_marker_survives_nifti_roundtrip(tmp_path, dicom_writer):
    import nibabel as nib

    iop = ORIENTATIONS["oblique"]
    spacing = (0.8, 1.1, 2.5)
    dicom_writer(tmp_path / "s", _marker_volume(), spacing=spacing, origin=_origin_for_marker(iop, spacing), iop=iop)
    img = mio.load(tmp_path / "s")
    out = mio.save_nifti(img, tmp_path / "out.nii.gz")
    nii = nib.load(out)
    data = np.asanyarray(nii.dataobj)
    ijk = np.unravel_index(int(np.argmax(data)), data.shape)
    assert ijk == MARKER_IJK
    assert np.linalg.norm(mio.voxel_to_world(nii.affine, ijk) - MARKER_RAS) < 0.4
    # label written on the DICOM grid maps back to the same voxel
    lab = np.zeros(SHAPE, np.uint8)
    lab[MARKER_IJK] = 7
    lp = mio.save_label(lab, img, tmp_path / "lab.nii.gz")
    ln = nib.load(lp)
    assert np.asanyarray(ln.dataobj).dtype == np.uint8
    assert tuple(np.argwhere(np.asanyarray(ln.dataobj) == 7)[0]) == MARKER_IJK
    np.testing.assert_allclose(ln.affine, img.affine.numpy(), atol=1e-4)


def _sitk_series(folder):
    import SimpleITK as sitk

    r = sitk.ImageSeriesReader()
    r.SetFileNames(r.GetGDCMSeriesFileNames(str(folder)))
    return r.Execute()


def _assert_same_as_sitk(img, si, exact=True):
    """World geometry and values of a medseg image equal SimpleITK's (index order may differ by axis flips)."""
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(si)
    if si.GetNumberOfComponentsPerPixel() > 1:
        ref = np.moveaxis(arr, -1, 0)
        ref = ref.transpose(0, *range(ref.ndim - 1, 0, -1))
    else:
        ref = arr.transpose(*range(arr.ndim - 1, -1, -1))[None]
    if ref.ndim == 3:
        ref = ref[..., None]
    lps = LPS_TO_RAS @ img.affine.numpy()
    ours = img.numpy()
    d = np.array(si.GetDirection()).reshape(3, 3) * np.array(si.GetSpacing())
    o = np.array(si.GetOrigin())
    # flip our axes where the two readers index in opposite directions (ITK's third axis is not r x c)
    for ax in range(3):
        if ours.shape[ax + 1] > 1 and lps[:3, ax] @ d[:, ax] < 0:
            ours = np.flip(ours, axis=ax + 1)
            lps[:3, 3] = lps[:3, 3] + lps[:3, ax] * (ours.shape[ax + 1] - 1)
            lps[:3, ax] = -lps[:3, ax]
    assert ours.shape == ref.shape
    np.testing.assert_allclose(lps[:3, 3], o, atol=1e-4)
    np.testing.assert_allclose(lps[:3, :2], d[:, :2], atol=1e-4)
    if ours.shape[3] > 1:
        np.testing.assert_allclose(lps[:3, 2], d[:, 2], atol=1e-4)
    if exact:
        assert np.array_equal(ours, ref.astype(np.float32))
    else:
        np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-4)


def test_phantom_series_matches_simpleitk_and_hu(small_ct_series):
    folder, ph = small_ct_series
    img = mio.load(folder)
    _assert_same_as_sitk(img, _sitk_series(folder))
    assert np.array_equal(img[0].numpy(), ph.image.astype(np.float32))  # exact HU
    assert img[0, 0, 0, 0].item() == -1000.0  # CT air reads -1000 HU
    np.testing.assert_allclose(img.affine.numpy(), ph.affine, atol=1e-6)
    assert img.meta["orientation"] == "LPS"
    assert img.meta["modality"] == "CT" and img.meta["series_uid"]
    assert len(img.meta["source_paths"]) == ph.image.shape[2]


def test_oblique_series_matches_simpleitk(tmp_path, dicom_writer):
    iop = ORIENTATIONS["oblique"]
    dicom_writer(tmp_path / "s", _marker_volume(), spacing=(0.8, 1.1, 2.5), origin=(10, -20, 30), iop=iop)
    _assert_same_as_sitk(mio.load(tmp_path / "s"), _sitk_series(tmp_path / "s"))


REAL_FILES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_RLE.dcm",
    "rtdose.dcm",
    "693_J2KR.dcm",
    "SC_rgb.dcm",
    "US1_J2KR.dcm",
    "emri_small.dcm",
]


@pytest.mark.parametrize("name", REAL_FILES)
def test_pydicom_files_match_simpleitk(name, pydicom_file):
    import SimpleITK as sitk

    path = pydicom_file(name)
    _assert_same_as_sitk(mio.load(path), sitk.ReadImage(path))


def test_per_slice_rescale_float_slope_matches_simpleitk(pydicom_file):
    import SimpleITK as sitk

    path = pydicom_file("MR2_J2KR.dcm")  # RescaleSlope 3.774114, JPEG 2000
    _assert_same_as_sitk(mio.load(path, dtype=np.float64), sitk.ReadImage(path), exact=False)


def test_compressed_equal_uncompressed(pydicom_file):
    ref = mio.load(pydicom_file("MR_small.dcm"))
    for name in ("MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm"):
        img = mio.load(pydicom_file(name))
        assert np.array_equal(img.numpy(), ref.numpy()), name
        np.testing.assert_allclose(img.affine.numpy(), ref.affine.numpy())


def test_per_slice_rescale_applied(tmp_path, dicom_writer):
    vol = np.stack([np.full((6, 5), v) for v in (-1000.0, 0.0, 50.0, 1000.0)], axis=-1)
    dicom_writer(tmp_path / "s", vol, spacing=(1, 1, 2), slope=[1, 2, 0.5, 1], intercept=[-1024, -2000, 0, -3000])
    img = mio.load(tmp_path / "s")
    assert [float(img[0, 0, 0, k]) for k in range(4)] == [-1000.0, 0.0, 50.0, 1000.0]


def test_enhanced_multiframe_equals_classic_series(tmp_path, dicom_writer, pydicom_file):
    """pydicom-data's enhanced CT gives the same geometry and HU as the same frames written as a classic series."""
    import pydicom

    path = pydicom_file("eCT_Supplemental.dcm")
    img = mio.load(path)
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
    ps = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]
    pvt = shared.PixelValueTransformationSequence[0]
    slope, inter = float(pvt.RescaleSlope), float(pvt.RescaleIntercept)
    positions = [
        [float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient] for f in ds.PerFrameFunctionalGroupsSequence
    ]
    vol = np.stack([frames[k].T * slope + inter for k in range(len(positions))], axis=-1)
    dicom_writer(
        tmp_path / "classic",
        vol,
        spacing=(ps[1], ps[0], 1.0),
        positions=positions,
        iop=iop,
        slope=slope,
        intercept=inter,
    )
    classic = mio.load(tmp_path / "classic")
    np.testing.assert_allclose(img.affine.numpy(), classic.affine.numpy(), atol=1e-4)
    assert np.array_equal(img.numpy(), classic.numpy())
    assert img.meta["spacing"][2] == pytest.approx(10.0)
    assert float(img.min()) == -1024.0  # rescale intercept from the functional groups applied


def test_localizers_excluded_and_reported(tmp_path, caplog, dicom_writer):
    vol = _marker_volume()
    dicom_writer(tmp_path / "s", vol, spacing=(1, 1, 2), series_uid="1.2.3.4")

    def loc_type(ds, k):
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]

    def loc_orient(ds, k):
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImageType = ["ORIGINAL", "PRIMARY"]

    dicom_writer(tmp_path / "s" / "a", vol[:, :, :1], series_uid="1.2.3.4", per_slice=loc_type)
    dicom_writer(tmp_path / "s" / "b", vol[:, :20, :1], series_uid="1.2.3.4", per_slice=loc_orient)
    (info,) = mio.discover(tmp_path / "s")
    assert info.n_files == SHAPE[2] + 2 and info.n_slices == SHAPE[2] and info.ok
    assert len(info.excluded) == 2 and any("localizer" in p for p in info.problems)
    with caplog.at_level(logging.WARNING):
        img = mio.load(info)
    assert img.shape == (1, *SHAPE)
    assert len(img.meta["excluded"]) == 2 and "localizer" in caplog.text


def test_missing_slice_error_and_explicit_resample(tmp_path, dicom_writer):
    vol = np.stack([np.full((6, 5), float(10 * k)) for k in range(7)], axis=-1)
    paths = dicom_writer(tmp_path / "s", vol, spacing=(1, 1, 2), shuffle=False)
    paths[3].unlink()  # the middle slice
    with pytest.raises(GeometryError) as ei:
        mio.load(tmp_path / "s")
    msg = str(ei.value)
    assert "missing slice" in msg and paths[2].name in msg and paths[4].name in msg
    img = mio.load(tmp_path / "s", resample=True)
    assert img.shape[-1] == 7 and float(img[0, 0, 0, 3]) == pytest.approx(30.0)
    assert any(p.startswith("resampled") for p in img.meta["problems"])


def test_nonuniform_spacing_is_an_error(tmp_path, dicom_writer):
    vol = np.zeros((4, 4, 4))
    pos = [[0, 0, z] for z in (0.0, 2.0, 4.0, 7.0)]
    dicom_writer(tmp_path / "s", vol, positions=pos)
    with pytest.raises(GeometryError, match="non-uniform slice spacing"):
        mio.load(tmp_path / "s")


def test_float_jitter_is_not_a_missing_slice(tmp_path, dicom_writer):
    rng = np.random.default_rng(1)
    vol = np.zeros((4, 4, 10))
    pos = [[0.0 + rng.normal(0, 1e-4), 0.0, 1.25 * k + rng.normal(0, 2e-3)] for k in range(10)]
    dicom_writer(tmp_path / "s", vol, positions=pos)
    img = mio.load(tmp_path / "s")
    assert img.meta["spacing"][2] == pytest.approx(1.25, abs=1e-3) and not img.meta["problems"]


def test_duplicate_positions_are_an_error(tmp_path, dicom_writer):
    vol = np.zeros((4, 4, 4))
    pos = [[0, 0, z] for z in (0.0, 2.0, 2.0, 4.0)]
    paths = dicom_writer(tmp_path / "s", vol, positions=pos, shuffle=False)
    with pytest.raises(GeometryError, match="same position") as ei:
        mio.load(tmp_path / "s")
    assert paths[1].name in str(ei.value) and paths[2].name in str(ei.value)


def test_4d_series_gives_explicit_channels(tmp_path, dicom_writer):
    vol = np.zeros((4, 4, 6))
    pos = [[0, 0, 3.0 * (k % 3)] for k in range(6)]

    def tp(ds, k):
        ds.TemporalPositionIdentifier = k // 3 + 1
        ds.PixelData = (np.full((4, 4), 100 * (k // 3) + k % 3, np.int16) + 1024).tobytes()

    dicom_writer(tmp_path / "s", vol, positions=pos, per_slice=tp)
    img = mio.load(tmp_path / "s")
    assert img.shape == (2, 4, 4, 3)
    assert [float(img[t, 0, 0, k]) for t in range(2) for k in range(3)] == [0, 1, 2, 100, 101, 102]
    assert img.meta["channel_key"] == "TemporalPositionIdentifier"


def test_mixed_orientations_are_an_error(tmp_path, dicom_writer):
    vol = np.zeros((4, 4, 5))
    dicom_writer(tmp_path / "s", vol, series_uid="1.2.9")
    dicom_writer(tmp_path / "s/b", vol, series_uid="1.2.9", iop=(0, 1, 0, 0, 0, -1))
    with pytest.raises(GeometryError, match="mixed slice orientations"):
        mio.load(tmp_path / "s")


def test_gantry_tilt_detected_and_corrected_on_request(tmp_path, dicom_writer):
    spacing = (1.0, 1.0, 2.0)
    tilt = np.radians(15)
    vol = np.full((16, 16, 6), -1000.0)
    # a vertical rod at world (LPS) x=8, y=8 for every slice; tilted acquisition shifts each slice in y
    pos = []
    for k in range(6):
        dy = 2.0 * k * np.tan(tilt)
        pos.append([0.0, dy, 2.0 * k])
        j = int(round(8 - dy))
        vol[8, j, k] = 500.0
    dicom_writer(tmp_path / "s", vol, spacing=spacing, positions=pos)
    with pytest.raises(GeometryError, match="gantry tilt of 15"):
        mio.load(tmp_path / "s")
    img = mio.load(tmp_path / "s", resample=True)
    assert any("gantry tilt" in p for p in img.meta["problems"])
    # after correction the rod is at the same (i, j) in every slice, at world LPS (8, 8)
    for k in range(6):
        j = int(np.argmax(img[0, 8, :, k].numpy()))
        world_lps = LPS_TO_RAS[:3, :3] @ mio.voxel_to_world(img.affine.numpy(), (8, j, k))
        assert abs(world_lps[1] - 8.0) <= 1.0


def test_missing_decoder_names_the_package(monkeypatch, pydicom_file):
    import pydicom

    def boom(self):
        raise RuntimeError(
            "Unable to decompress 'JPEG 2000 Image Compression' pixel data because all plugins are "
            "missing dependencies:\n\tgdcm - requires gdcm"
        )

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(boom))
    path = pydicom_file("MR_small_jp2klossless.dcm")
    with pytest.raises(MissingDependencyError, match="pylibjpeg-openjpeg") as ei:
        mio.load(path)
    assert "MR_small_jp2klossless.dcm" in str(ei.value)


def test_undecodable_pixel_data_is_a_file_format_error(pydicom_file):
    # 12-bit JPEG extended: the installed decoders fail on this file; the error says so (not "install")
    with pytest.raises((FileFormatError, MissingDependencyError), match="JPEG-lossy.dcm"):
        mio.load(pydicom_file("JPEG-lossy.dcm"))


def test_positions_rounded_to_a_tenth_mm_are_jitter(tmp_path, dicom_writer):
    vol = np.zeros((4, 4, 12))
    pos = [[0.0, 0.0, round(0.625 * k, 1)] for k in range(12)]  # 0.0, 0.6, 1.2, 1.9, ...
    dicom_writer(tmp_path / "s", vol, positions=pos)
    img = mio.load(tmp_path / "s")
    assert img.meta["spacing"][2] == pytest.approx(0.627, abs=0.01)


@pytest.mark.parametrize("name", ["0.dcm", "1.dcm"])
def test_nibabel_dicom_files_match_simpleitk(name, nibabel_file):
    import SimpleITK as sitk

    path = nibabel_file(name)
    _assert_same_as_sitk(mio.load(path), sitk.ReadImage(path))


def test_monai_transforms_accept_loaded_series(tmp_path, dicom_writer):
    """MONAI's Orientation / Spacing work on the MetaTensor and keep the marker at its world position."""
    from monai.transforms import Orientation, Spacing

    iop = ORIENTATIONS["coronal"]
    spacing = (0.8, 1.1, 2.5)
    dicom_writer(tmp_path / "s", _marker_volume(), spacing=spacing, origin=_origin_for_marker(iop, spacing), iop=iop)
    img = mio.load(tmp_path / "s")
    ras = Orientation(axcodes="RAS")(img)
    assert mio.orientation_code(ras.affine.numpy()) == "RAS"
    assert np.linalg.norm(_marker_world(ras) - MARKER_RAS) < 0.4
    iso = Spacing(pixdim=(1.0, 1.0, 1.0), mode="nearest")(ras)
    # nearest-neighbour resampling: within half a source voxel plus half a target voxel per axis
    assert np.all(np.abs(_marker_world(iso) - MARKER_RAS) <= 0.5 * 2.5 + 0.5)


def test_enhanced_multiframe_per_frame_rescale(tmp_path, pydicom_file):
    """Per-frame PixelValueTransformation (different slope/intercept per frame) is applied frame by frame."""
    import copy

    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as Seq

    ds = pydicom.dcmread(pydicom_file("eCT_Supplemental.dcm"))
    raw = ds.pixel_array.astype(np.float64)
    shared = ds.SharedFunctionalGroupsSequence[0]
    del shared.PixelValueTransformationSequence
    rescale = [(1.0, -1024.0), (2.0, -2048.0)]
    for f, (slope, inter) in enumerate(rescale):
        pvt = Dataset()
        pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = slope, inter, "HU"
        ds.PerFrameFunctionalGroupsSequence[f].PixelValueTransformationSequence = Seq([copy.deepcopy(pvt)])
    ds.save_as(tmp_path / "mf.dcm")
    img = mio.load(tmp_path / "mf.dcm")
    # frames are sorted along the normal r x c = (0, 0, -1): frame 1 (z = -149) comes first
    order = np.argsort(
        [-float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in ds.PerFrameFunctionalGroupsSequence]
    )
    for k, f in enumerate(order):
        slope, inter = rescale[f]
        np.testing.assert_array_equal(img[0, :, :, k].numpy(), (raw[f] * slope + inter).T.astype(np.float32))
