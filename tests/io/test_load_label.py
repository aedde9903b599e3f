"""load_label: corrections come back (DICOM SEG binary / fractional, .seg.nrrd, NIfTI) onto the source grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest

import medseg.io as mio
from medseg.data.synthetic import CT_CLASSES, ct_phantom, write_phantom_dicom
from medseg.errors import LabelMismatchError

CLASSES = [CT_CLASSES[k] for k in sorted(CT_CLASSES)]  # background first, as a model's class names
NAMES = {k: v for k, v in CT_CLASSES.items() if k}


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    ph = ct_phantom(5, shape=(36, 30, 9), spacing=(3.0, 4.0, 5.0))
    folder = tmp_path_factory.mktemp("ll") / "CT"
    write_phantom_dicom(ph, folder)
    return ph, folder, mio.load(folder)


def _arr(label):
    return label.numpy()[0]


def test_seg_round_trip_identical(case, tmp_path):
    ph, folder, img = case
    assert len(np.unique(ph.label)) >= 3
    seg = mio.write_dicom_seg(ph.label, folder, tmp_path / "pred.dcm", NAMES)
    back = mio.load_label(seg, folder, classes=CLASSES)  # reference given as the series folder
    assert back.dtype.is_floating_point is False and back.shape == (1, *ph.label.shape)
    assert np.array_equal(_arr(back), ph.label)
    assert np.allclose(back.affine.numpy(), img.affine.numpy())
    assert [s["class"] for s in back.meta["segments"]] == [1, 2, 3, 4]
    # classes in another order: segments follow their labels, not their numbers
    swapped = mio.load_label(seg, img, classes={0: "background", 1: "lesion", 2: "kidney", 3: "spleen", 4: "liver"})
    assert np.array_equal(_arr(swapped), np.array([0, 4, 3, 2, 1], np.uint8)[ph.label])


def test_seg_mapped_by_coded_concept_and_unmappable_refused(case, tmp_path):
    from pydicom.sr.codedict import codes

    ph, folder, img = case
    liver = (ph.label == 1).astype(np.uint8)
    seg = mio.write_dicom_seg(
        liver,
        folder,
        tmp_path / "c.dcm",
        {1: "Segment_1"},
        codes={"Segment_1": (codes.cid7150.AnatomicalStructure, codes.SCT.Liver)},
    )
    back = mio.load_label(seg, img, classes=["background", "spleen", "liver"])  # by the SCT Liver code
    assert np.array_equal(_arr(back), liver * 2)
    with pytest.raises(LabelMismatchError, match=r"Segment_1.*10200004.*1=heart"):
        mio.load_label(seg, img, classes=["background", "heart"])


def test_fractional_seg_thresholded(case, tmp_path):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    ph, folder, img = case
    dss = sorted((pydicom.dcmread(p) for p in folder.iterdir()), key=lambda d: float(d.ImagePositionPatient[2]))
    frac = np.where(ph.label == 1, 0.8, np.where(ph.label == 2, 0.3, 0.0)).astype(np.float32)  # (X, Y, Z)
    desc = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="liver",
        segmented_property_category=codes.cid7150.AnatomicalStructure,
        segmented_property_type=codes.SCT.Liver,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=dss,
        pixel_array=np.ascontiguousarray(frac.transpose(2, 1, 0)),
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        segment_descriptions=[desc],
        series_instance_uid=hd.UID(),
        series_number=5,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
    )
    seg.save_as(tmp_path / "frac.dcm")
    back = mio.load_label(tmp_path / "frac.dcm", img, classes=CLASSES)
    assert np.array_equal(_arr(back), (ph.label == 1).astype(np.uint8))
    low = mio.load_label(tmp_path / "frac.dcm", img, classes=CLASSES, threshold=0.25)
    assert np.array_equal(_arr(low), np.isin(ph.label, (1, 2)).astype(np.uint8))


def test_seg_nrrd_and_nifti_onto_the_grid(case, tmp_path):
    ph, folder, img = case
    snrrd = mio.save_label(ph.label, img, tmp_path / "c.seg.nrrd", segments=NAMES)
    assert np.array_equal(_arr(mio.load_label(snrrd, img, classes=CLASSES)), ph.label)
    nii = mio.save_label(ph.label, img, tmp_path / "c.nii.gz")
    assert np.array_equal(_arr(mio.load_label(nii, img, classes=CLASSES)), ph.label)
    # reoriented to RAS and cropped to the labelled box (what other tools write): placed back exactly
    ras = nib.as_closest_canonical(nib.load(nii))
    data = np.asarray(ras.dataobj)
    box = np.argwhere(data > 0)
    lo, hi = box.min(0), box.max(0) + 1
    crop = ras.slicer[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    nib.save(nib.Nifti1Image(np.asarray(crop.dataobj).astype(np.uint8), crop.affine), tmp_path / "crop.nii.gz")
    assert np.array_equal(_arr(mio.load_label(tmp_path / "crop.nii.gz", img, classes=CLASSES)), ph.label)


def test_labels_that_do_not_overlay_are_refused(case, tmp_path):
    ph, folder, img = case
    aff = img.affine.numpy().copy()
    aff[:3, 3] += aff[:3, :3] @ np.array([0.5, 0.0, 0.0])  # half a voxel off
    nib.save(nib.Nifti1Image(ph.label.astype(np.uint8), aff), tmp_path / "shift.nii.gz")
    with pytest.raises(LabelMismatchError, match="do not overlay"):
        mio.load_label(tmp_path / "shift.nii.gz", img, classes=CLASSES)
    nib.save(nib.Nifti1Image(ph.label.astype(np.uint8) * 9, img.affine.numpy()), tmp_path / "bad.nii.gz")
    with pytest.raises(LabelMismatchError, match="not classes"):
        mio.load_label(tmp_path / "bad.nii.gz", img, classes=CLASSES)
    # a SEG of another scan (another frame of reference) does not overlay this one
    other = ct_phantom(6, shape=(36, 30, 9), spacing=(3.0, 4.0, 5.0))
    write_phantom_dicom(other, tmp_path / "other")
    seg = mio.write_dicom_seg(other.label, tmp_path / "other", tmp_path / "o.dcm", NAMES)
    with pytest.raises(LabelMismatchError, match="frame of reference|another series"):
        mio.load_label(seg, img, classes=CLASSES)
