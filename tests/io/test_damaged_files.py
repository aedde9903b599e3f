"""Every failure is one file's MedsegError: damaged files beside a good series, decoder failures of
any kind, header values that cannot be converted, pixel data shorter than the header says, a zero
PixelSpacing through ``medseg convert``; and enhanced multi-frame MR with per-frame geometry."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import medseg.io as mio
from medseg.cli import main
from medseg.errors import FileFormatError, GeometryError, MedsegError

FUZZ = Path(__file__).resolve().parents[1] / "data" / "fuzz" / "dicom"


def _series(folder: Path, dicom_writer, nz: int = 6) -> tuple[list[Path], np.ndarray]:
    vol = (np.arange(8 * 6 * nz).reshape(8, 6, nz) % 300).astype(np.int16)
    return dicom_writer(folder, vol, spacing=(1.0, 1.0, 2.0), intercept=0.0), vol


@pytest.mark.parametrize(
    "damaged",
    [
        "unknown-vr-in-file-meta-0a1548.dcm",  # file meta pydicom cannot convert (NotImplementedError)
        "unknown-vr-ct-9dcbf4.dcm",
        "empty.dcm",
        "truncated.dcm",
    ],
)
def test_a_damaged_file_beside_a_good_series_does_not_block_it(tmp_path, dicom_writer, damaged):
    paths, vol = _series(tmp_path / "study", dicom_writer)
    target = tmp_path / "study" / damaged
    if damaged == "empty.dcm":
        target.write_bytes(b"")
    elif damaged == "truncated.dcm":
        target.write_bytes(paths[0].read_bytes()[:-100])
    else:
        shutil.copy(FUZZ / damaged, target)
    found = mio.discover(tmp_path / "study")  # never raises for one file
    good = [s for s in found if s.kind == "dicom" and s.ok and s.n_files == len(paths)]
    assert len(good) == 1
    img = mio.load(tmp_path / "study")  # the series, not "pick one" or the damaged file's error
    assert img.shape == (1, 8, 6, 6) and np.array_equal(img[0].numpy(), vol.astype(np.float32))
    assert any(damaged in p for p in img.meta["problems"])


def test_decoder_panic_is_a_file_format_error_naming_the_file(tmp_path):
    p = tmp_path / "x.dcm"
    shutil.copy(FUZZ / "rle-decoder-panic-0184bc.dcm", p)
    with pytest.raises(FileFormatError, match=r"x\.dcm: cannot decode pixel data \(PanicException"):
        mio.load(p)
    assert mio.discover(p)[0].kind == "dicom"  # its header is fine: listed, the error comes with the pixels


def test_rows_columns_larger_than_the_pixel_data_element_is_refused(tmp_path, dicom_writer):
    """Before: the bytes of the elements after Pixel Data became the last row (the file was long enough)."""
    paths, _ = _series(tmp_path / "s", dicom_writer, nz=1)
    ds = pydicom.dcmread(paths[0])
    ds.Rows = ds.Rows + 1  # the header claims one more row than the Pixel Data element holds
    ds.save_as(paths[0])
    with open(paths[0], "ab") as f:  # trailing elements: enough bytes in the file for the claimed size
        f.write(b"\xfe\xff\xfc\xff" + b"\x00\x00\x00\x00" * 20)  # data set trailing padding (FFFC,FFFC)
    with pytest.raises(FileFormatError, match="Pixel Data element holds 96 bytes.*needs 112"):
        mio.load(paths[0])


def test_zero_pixel_spacing_is_reported_not_a_crash_in_convert(tmp_path, dicom_writer, capsys):
    paths, _ = _series(tmp_path / "s", dicom_writer)
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.PixelSpacing = [0, 0]
        ds.save_as(p)
    assert main(["convert", str(tmp_path / "s"), str(tmp_path / "o.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert "PixelSpacing [0.0, 0.0] is not positive" in err and "Traceback" not in err
    assert not (tmp_path / "o.nii.gz").exists()
    # without patient geometry (CR, SC): loaded in pixel units, and said so
    for p in paths[1:]:
        p.unlink()
    ds = pydicom.dcmread(paths[0])
    del ds.ImagePositionPatient, ds.ImageOrientationPatient
    ds.save_as(paths[0])
    assert main(["convert", str(paths[0]), str(tmp_path / "o.nii.gz")]) == 0
    assert "1.0 mm used" in capsys.readouterr().out
    assert np.allclose(np.abs(np.diag(mio.load(tmp_path / "o.nii.gz").affine.numpy()))[:2], 1.0)


def test_header_values_that_cannot_be_read_are_one_files_error(tmp_path, dicom_writer):
    paths, _ = _series(tmp_path / "s", dicom_writer)
    data = bytearray(paths[2].read_bytes())
    i = data.index(b"\x20\x00\x32\x00DS")  # ImagePositionPatient: VR bytes made unknown
    data[i + 4 : i + 6] = b"\x00\x01"
    paths[2].write_bytes(bytes(data))
    found = mio.discover(tmp_path / "s")
    assert any(s.kind == "unreadable" and s.path == str(paths[2]) for s in found) or all(
        isinstance(s.problems, list) for s in found
    )
    with pytest.raises(MedsegError):
        mio.load(paths[2])


def _enhanced_mr(path: Path, frames: int = 5, order=(3, 0, 4, 1, 2)) -> tuple[np.ndarray, np.ndarray]:
    """An Enhanced MR Image Storage file: per-frame positions (stored in a shuffled order) and per-frame
    rescale in the functional groups, oblique orientation in the shared group. Returns (stored, values)."""
    rows, cols = 6, 7
    iop = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]  # sagittal
    normal = np.cross(iop[:3], iop[3:])
    stored = np.random.default_rng(1).integers(0, 1000, (frames, rows, cols)).astype(np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID = "MR", "ANON", "0"
    ds.PatientBirthDate, ds.PatientSex, ds.AccessionNumber, ds.ReferringPhysicianName = "", "O", "", ""
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "20240101", "120000", "1", 1, 1
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    shared = Dataset()
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = iop
    shared.PixelMeasuresSequence = [Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing = [0.5, 0.75]
    shared.PixelMeasuresSequence[0].SliceThickness = 3.0
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame, values = [], np.empty(stored.shape, float)
    for f in range(frames):
        k = order[f]  # the frame's slice index along the normal
        item = Dataset()
        item.PlanePositionSequence = [Dataset()]
        item.PlanePositionSequence[0].ImagePositionPatient = list(np.array([10.0, -5.0, 20.0]) + 2.5 * k * normal)
        item.PixelValueTransformationSequence = [Dataset()]
        item.PixelValueTransformationSequence[0].RescaleSlope = str(1 + f)
        item.PixelValueTransformationSequence[0].RescaleIntercept = str(-10 * f)
        item.PixelValueTransformationSequence[0].RescaleType = "US"
        per_frame.append(item)
        values[f] = stored[f].astype(float) * (1 + f) - 10 * f
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return stored, values


def test_enhanced_mr_per_frame_geometry_and_rescale(tmp_path):
    p = tmp_path / "emr.dcm"
    order = (3, 0, 4, 1, 2)
    _, values = _enhanced_mr(p, order=order)
    img = mio.load(p)
    assert img.shape == (1, 7, 6, 5) and img.meta["modality"] == "MR"
    vol = img[0].numpy()  # (X, Y, Z): Z sorted along the normal
    for f, k in enumerate(order):
        assert np.allclose(vol[:, :, k].T, values[f])
    np.testing.assert_allclose(img.meta["spacing"], (0.75, 0.5, 2.5), atol=1e-6)
    # geometry from the functional groups themselves (GDCM ignores this minimal file's groups): the first
    # voxel of slice k is the frame's ImagePositionPatient, rows run along the column cosine (0, 0, -1)
    ds = pydicom.dcmread(p)
    aff = img.affine.numpy()
    for f, k in enumerate(order):
        ipp = np.array(ds.PerFrameFunctionalGroupsSequence[f].PlanePositionSequence[0].ImagePositionPatient, float)
        assert np.allclose(mio.voxel_to_world(aff, [0, 0, k]) * [-1, -1, 1], ipp, atol=1e-6)
        assert np.allclose(mio.voxel_to_world(aff, [0, 5, k]) * [-1, -1, 1], ipp + [0, 0, -0.5 * 5], atol=1e-6)
    labels = np.zeros(img.shape[1:], np.uint8)
    labels[2:4, 1:3, 1] = 1  # on slice k = 1, stored as frame 3 (order[3] == 1)
    seg_path = mio.write_dicom_seg(labels, [p], tmp_path / "emr.seg.dcm", {1: "lesion"})
    seg = pydicom.dcmread(seg_path)
    ref = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    assert int(seg.NumberOfFrames) == 1 and int(ref.ReferencedFrameNumber) == 4  # frame 3, 1-based


def test_enhanced_frames_out_of_grid_are_a_geometry_error(tmp_path):
    p = tmp_path / "gap.dcm"
    _enhanced_mr(p, order=(0, 1, 2, 3, 5))  # a missing slice position
    with pytest.raises(GeometryError, match="missing slice"):
        mio.load(p)
