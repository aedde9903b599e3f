"""Bad input: each case raises a medseg error naming the file (never the patient); discover carries on."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest

from medseg import io as mio
from medseg.errors import FileFormatError, GeometryError, MedsegError, MissingFileError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the corrupt values we make

SECRET_NAME = "SECRET^PATIENTNAME"
SECRET_ID = "SECRETID123"


def _series(tmp_path, dicom_writer, name="s", uid=None, nz=6):
    vol = np.stack([np.full((8, 6), float(10 * k)) for k in range(nz)], axis=-1)
    return dicom_writer(
        tmp_path / name,
        vol,
        spacing=(1, 1, 2),
        patient_name=SECRET_NAME,
        patient_id=SECRET_ID,
        series_uid=uid,
        shuffle=False,
    )


def _no_phi(msg: str) -> None:
    assert "SECRET" not in msg and SECRET_ID not in msg


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.dcm"
    p.write_bytes(b"")
    with pytest.raises(FileFormatError, match="empty file") as ei:
        mio.load(p)
    assert str(p) in str(ei.value)


def test_text_file_named_dcm(tmp_path):
    p = tmp_path / "notes.dcm"
    p.write_text("this is not an image\n" * 20)
    with pytest.raises(FileFormatError, match="not a DICOM file") as ei:
        mio.load(p)
    assert str(p) in str(ei.value)


def test_truncated_file(tmp_path, dicom_writer):
    paths = _series(tmp_path, dicom_writer)
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) - 40])
    with pytest.raises(FileFormatError, match="truncated") as ei:
        mio.load(paths[2])
    assert str(paths[2]) in str(ei.value)
    _no_phi(str(ei.value))
    # the series folder: discover reports the bad file and the series without it (now missing a slice)
    found = mio.discover(tmp_path / "s")
    bad = [s for s in found if s.kind == "unreadable"]
    assert len(bad) == 1 and str(paths[2]) in bad[0].problems[0]
    with pytest.raises(MedsegError):
        mio.load(tmp_path / "s")


def test_truncated_real_file(pydicom_file):
    p = pydicom_file("MR_truncated.dcm")
    with pytest.raises(FileFormatError, match="truncated") as ei:
        mio.load(p)
    assert "MR_truncated.dcm" in str(ei.value)


@pytest.mark.parametrize("where", ["preamble_marker", "element_length", "transfer_syntax"])
def test_bit_flipped_header(tmp_path, dicom_writer, where):
    paths = _series(tmp_path, dicom_writer)
    data = bytearray(paths[0].read_bytes())
    if where == "preamble_marker":
        data[128] ^= 0x04  # 'DICM' -> 'DICI'... no marker any more
    elif where == "element_length":
        i = data.find(b"\x28\x00\x10\x00")  # (0028,0010) Rows: corrupt its length field
        data[i + 6] ^= 0xFF
    else:
        i = data.find(b"1.2.840.10008.1.2.1")
        data[i + 6] ^= 0x10  # transfer syntax UID no longer known
    paths[0].write_bytes(bytes(data))
    try:
        img = mio.load(paths[0])
    except MedsegError as e:
        assert str(paths[0]) in str(e)
        _no_phi(str(e))
    else:  # a flip that leaves a readable file must still give the right pixels
        assert float(img[0, 0, 0, 0]) == 0.0


def test_missing_middle_slice_names_neighbours_not_patient(tmp_path, dicom_writer):
    paths = _series(tmp_path, dicom_writer, nz=7)
    paths[3].unlink()
    with pytest.raises(GeometryError) as ei:
        mio.load(tmp_path / "s")
    msg = str(ei.value)
    assert str(tmp_path / "s") in msg and paths[2].name in msg and paths[4].name in msg
    _no_phi(msg)


def test_missing_path():
    with pytest.raises(MissingFileError, match="nope"):
        mio.load("/nonexistent/nope.nii.gz")


def test_discover_keeps_good_series_when_others_are_bad(tmp_path, dicom_writer):
    _series(tmp_path, dicom_writer, "good", uid="1.2.3.1")
    bad_paths = _series(tmp_path, dicom_writer, "gap", uid="1.2.3.2", nz=7)
    bad_paths[3].unlink()
    (tmp_path / "junk.dcm").write_bytes(b"")
    (tmp_path / "readme.txt").write_text("ignored")
    found = mio.discover(tmp_path)
    dicom = {s.series_uid: s for s in found if s.kind == "dicom"}
    assert dicom["1.2.3.1"].ok and dicom["1.2.3.1"].shape == (8, 6, 6)
    assert not dicom["1.2.3.2"].ok and any("missing slice" in p for p in dicom["1.2.3.2"].problems)
    unreadable = [s for s in found if s.kind == "unreadable"]
    assert len(unreadable) == 1 and "junk.dcm" in unreadable[0].path
    img = mio.load(dicom["1.2.3.1"])  # the good one still loads
    assert img.shape == (1, 8, 6, 6)
    with pytest.raises(ValueError, match="pick one"):
        mio.load(tmp_path)  # several images: must pick one
    assert mio.load(tmp_path, series="1.2.3.1").shape == (1, 8, 6, 6)
    for s in found:  # no PHI anywhere in what discover reports
        _no_phi(str(s.to_dict()))
    _no_phi(mio.format_series_table(found))


def test_dicomdir(pydicom_file, tmp_path):
    import os

    root = os.path.join(os.path.dirname(pydicom_file("CT_small.dcm")), "dicomdirtests")
    dicomdir = os.path.join(root, "DICOMDIR")
    if not os.path.exists(dicomdir):
        pytest.skip("pydicom dicomdirtests not installed")
    via_dir = mio.discover(dicomdir)
    via_walk = mio.discover(root)
    uids_dir = {s.series_uid for s in via_dir if s.kind == "dicom"}
    assert len(uids_dir) >= 3
    assert uids_dir <= {s.series_uid for s in via_walk if s.kind == "dicom"}
    first = next(s for s in via_dir if s.kind == "dicom" and s.ok)
    img = mio.load(dicomdir, series=first.series_uid)
    assert img.shape[1:3] == first.shape[:2]
    # loading the DICOMDIR itself without choosing a series: a clear error listing them
    with pytest.raises(ValueError, match="pick one"):
        mio.load(dicomdir)


def test_zip_archive(tmp_path, dicom_writer):
    paths = _series(tmp_path, dicom_writer, "s", uid="1.2.3.7")
    z = tmp_path / "study.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in paths:
            zf.write(p, f"study/series/{p.name}")
        zf.writestr("study/broken.dcm", b"garbage" * 10)
    found = mio.discover(z)
    dicom = [s for s in found if s.kind == "dicom"]
    assert len(dicom) == 1 and dicom[0].n_slices == 6 and dicom[0].files[0].startswith(str(z) + "!")
    assert any(s.kind == "unreadable" and "broken.dcm" in s.path for s in found)
    img = mio.load(z, series=0)
    ref = mio.load(tmp_path / "s")
    assert np.array_equal(img.numpy(), ref.numpy())
    np.testing.assert_allclose(img.affine.numpy(), ref.affine.numpy())


def test_output_names_never_come_from_dicom_values(tmp_path, dicom_writer):
    """A hostile SOPInstanceUID / PatientName cannot make medseg write outside the output folder."""

    def hostile(ds, k):
        ds.SOPInstanceUID = "../../escape"
        ds.PatientName = "../../../x/y"
        ds.SeriesDescription = "../../desc"

    vol = np.zeros((4, 4, 3))
    dicom_writer(tmp_path / "in", vol, per_slice=hostile)
    out_dir = tmp_path / "out"
    img = mio.load(tmp_path / "in")
    mio.save_nifti(img, out_dir / "image.nii.gz")
    mio.save_label(np.zeros((4, 4, 3), np.uint8), img, out_dir / "label.nii.gz")
    assert sorted(p.name for p in out_dir.iterdir()) == ["image.nii.gz", "label.nii.gz"]
    assert not (tmp_path / "escape").exists() and not list(tmp_path.parent.glob("escape*"))


def test_copied_file_is_ignored_not_a_duplicate(tmp_path, dicom_writer):
    paths = _series(tmp_path, dicom_writer)
    shutil.copy(paths[2], tmp_path / "s" / "copy_of_2.dcm")
    img = mio.load(tmp_path / "s")
    assert img.shape == (1, 8, 6, 6)
    assert any("duplicate" in p for p in img.meta["problems"])


def test_random_header_bit_flips_give_medseg_errors_only(tmp_path, dicom_writer):
    """200 random single-bit flips in the header: each file either loads or raises a MedsegError naming it."""
    paths = _series(tmp_path, dicom_writer, nz=2)
    orig = paths[0].read_bytes()
    rng = np.random.default_rng(0)
    n_err = 0
    for _ in range(200):
        data = bytearray(orig)
        data[int(rng.integers(132, 700))] ^= 1 << int(rng.integers(8))
        paths[0].write_bytes(bytes(data))
        try:
            mio.load(paths[0])
        except MedsegError as e:
            n_err += 1
            assert str(paths[0]) in str(e)
            _no_phi(str(e))
    assert n_err > 0


def test_corrupt_uid_swallowing_patient_name_stays_out_of_the_message(tmp_path):
    """A length-corrupted SOPClassUID can swallow the PatientName bytes: the error must not echo them."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    with pydicom.config.disable_value_validation():
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2 PN SECRET^PATIENTNAME"
    ds.SOPInstanceUID = "1.2.3.4"
    ds.Modality = "CT"
    p = tmp_path / "noimage.dcm"
    with pydicom.config.disable_value_validation():
        pydicom.dcmwrite(p, ds, enforce_file_format=True)
    with pytest.raises(MedsegError) as ei:
        mio.load(p)
    assert str(p) in str(ei.value) and "SECRET" not in str(ei.value)
