"""DICOM SEG writer: read back with highdicom and pydicom; frames sit on the right source instances."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from medseg.data.synthetic import CT_CLASSES, ct_phantom, write_phantom_dicom
from medseg.errors import GeometryError, LabelMismatchError
from medseg.io.seg import series_geometry, write_dicom_seg

NAMES = {k: v for k, v in CT_CLASSES.items() if k}


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    ph = ct_phantom(3, shape=(40, 32, 10), spacing=(4.0, 5.0, 6.0))
    c = np.round(np.argwhere(ph.label == 1).mean(axis=0)).astype(int)
    ph.label[c[0] - 1 : c[0] + 2, c[1] - 1 : c[1] + 2, c[2] : c[2] + 2] = (
        4  # a lesion (too small a grid for the phantom's)
    )
    folder = tmp_path_factory.mktemp("ct") / "series"
    paths = write_phantom_dicom(ph, folder)
    return ph, folder, paths


def test_seg_readback_frames_on_right_instances(series, tmp_path):
    import highdicom as hd

    ph, folder, paths = series
    out = write_dicom_seg(ph.label, folder, tmp_path / "seg" / "case.seg.dcm", NAMES, model_name="unet3d_test")
    assert [p.name for p in out.parent.iterdir()] == ["case.seg.dcm"]  # atomic: no temp file left

    src = {}
    for p in paths:
        ds = pydicom.dcmread(p)
        k = int(ds.InstanceNumber) - 1  # the phantom writer numbers slices by k
        src[ds.SOPInstanceUID] = (k, ds)

    # --- pydicom: every frame, its segment, its source instance, its position, its pixels
    seg = pydicom.dcmread(out)
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.SeriesDescription == "medseg segmentation"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "spleen", "kidney", "lesion"]
    liver = seg.SegmentSequence[0]
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"  # SCT Liver
    assert liver.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
    lesion = seg.SegmentSequence[3]
    assert lesion.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"  # morphologically abnormal
    algo = liver.SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmName == "medseg" and algo.AlgorithmVersion == __import__("medseg").__version__
    assert algo.AlgorithmSource == "unet3d_test"
    ref = seg.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == src[next(iter(src))][1].SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in ref.ReferencedInstanceSequence} == set(src)
    assert seg.FrameOfReferenceUID == src[next(iter(src))][1].FrameOfReferenceUID

    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    expected_frames = 0
    for v in NAMES:
        expected_frames += int(sum((ph.label[:, :, k] == v).any() for k in range(ph.label.shape[2])))
    assert int(seg.NumberOfFrames) == expected_frames  # empty frames omitted
    seen = set()
    for f, fg in enumerate(seg.PerFrameFunctionalGroupsSequence):
        segnum = int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        uid = fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        k, ds = src[uid]
        ipp = [float(x) for x in fg.PlanePositionSequence[0].ImagePositionPatient]
        assert ipp == pytest.approx([float(x) for x in ds.ImagePositionPatient])
        value = list(NAMES)[segnum - 1]
        assert np.array_equal(frames[f].astype(bool), ph.label[:, :, k].T == value), (segnum, k)
        assert frames[f].any()
        seen.add((value, k))
    assert len(seen) == expected_frames

    # --- highdicom: segments by source instance
    hseg = hd.seg.segread(out)
    uids = [uid for uid, _ in sorted(src.items(), key=lambda kv: kv[1][0])]
    vol = hseg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, combine_segments=True, skip_overlap_checks=True
    )
    assert np.array_equal(vol, ph.label.transpose(2, 1, 0))


def test_seg_from_shuffled_datasets_and_matching_metatensor(series, tmp_path):
    from monai.data import MetaTensor

    ph, folder, paths = series
    dss = [pydicom.dcmread(p) for p in paths][::-1]
    dss = dss[1::2] + dss[0::2]
    mt = MetaTensor(ph.label[None].astype(np.float32), affine=ph.affine)
    out = write_dicom_seg(mt, dss, tmp_path / "b.dcm", ["background", "liver", "spleen", "kidney", "lesion"])
    seg = pydicom.dcmread(out)
    k_of = {pydicom.dcmread(p).SOPInstanceUID: i for i, p in enumerate(paths)}
    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    for f, fg in enumerate(seg.PerFrameFunctionalGroupsSequence):
        k = k_of[fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        v = int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        assert np.array_equal(frames[f].astype(bool), ph.label[:, :, k].T == v)
    # the series geometry medseg derives is the phantom's affine
    _, aff = series_geometry(dss)
    assert np.allclose(aff, ph.affine)


def test_seg_label_mismatch_refused(series, tmp_path):
    from monai.data import MetaTensor

    ph, folder, _ = series
    with pytest.raises(LabelMismatchError, match="shape"):
        write_dicom_seg(ph.label[:, :, :-1], folder, tmp_path / "x.dcm", NAMES)
    flipped = ph.affine.copy()
    flipped[:3, 0] *= -1
    with pytest.raises(LabelMismatchError, match="affine"):
        write_dicom_seg(MetaTensor(ph.label[None], affine=flipped), folder, tmp_path / "x.dcm", NAMES)
    lab = ph.label.copy()
    lab[0, 0, 0] = 9
    with pytest.raises(LabelMismatchError, match=r"\[9\]"):
        write_dicom_seg(lab, folder, tmp_path / "x.dcm", NAMES)
    assert not (tmp_path / "x.dcm").exists()


def _rewrite(paths, dst, fn):
    dst.mkdir()
    for i, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        if fn(i, ds) is not False:
            ds.save_as(dst / p.name)
    return dst


def test_tilted_series_refused(series, tmp_path):
    ph, _, paths = series

    def tilt(k, ds):  # gantry tilt 15 deg: each slice shifted along y by dz * tan(15 deg)
        ipp = [float(x) for x in ds.ImagePositionPatient]
        ipp[1] += k * ph.spacing[2] * np.tan(np.radians(15))
        ds.ImagePositionPatient = [f"{x:.6g}" for x in ipp]

    folder = _rewrite(paths, tmp_path / "tilted", tilt)
    with pytest.raises(GeometryError, match=r"gantry-tilted.*15\.0 deg") as ei:
        write_dicom_seg(ph.label, folder, tmp_path / "t.dcm", NAMES)
    assert str(folder) in str(ei.value)  # the message names the folder
    assert not (tmp_path / "t.dcm").exists()


def test_non_uniform_series_refused(series, tmp_path):
    ph, _, paths = series
    folder = _rewrite(paths, tmp_path / "gap", lambda k, ds: False if k == 4 else None)  # a missing slice
    with pytest.raises(GeometryError, match="non-uniform slice spacing"):
        write_dicom_seg(ph.label[:, :, :-1], folder, tmp_path / "g.dcm", NAMES)


def test_empty_labels_and_custom_codes(series, tmp_path):
    ph, folder, _ = series
    lab = np.zeros_like(ph.label)
    lab[10:20, 10:20, 3] = 7
    out = write_dicom_seg(
        lab,
        folder,
        tmp_path / "c.dcm",
        {7: "hepatic cyst"},
        codes={
            "Hepatic cyst": (
                ("49755003", "SCT", "Morphologically Abnormal Structure"),
                ("85057007", "SCT", "Cyst of liver"),
            )
        },
    )
    seg = pydicom.dcmread(out)
    assert int(seg.NumberOfFrames) == 1
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "85057007"
    assert np.array_equal(seg.pixel_array.astype(bool), lab[:, :, 3].T == 7)
