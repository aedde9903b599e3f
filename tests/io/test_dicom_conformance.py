"""Conformance over real files: every file of ``pydicom.data`` and ``pydicom-data`` loads equal to the
reference readers, or is refused for a reason in the reviewed table below.

Loaded: pixel values equal pydicom's decoded ``pixel_array`` after the modality transform (rescale
slope / intercept per frame, from the functional groups of enhanced multi-frame files; Modality LUT;
palette colour expanded through its LUTs), frame by frame matched by position; geometry equal to
SimpleITK's (GDCM) within 1e-4 mm wherever SimpleITK reads the file (the grid's corner voxel centres,
so an equivalent grid stored in the opposite slice order agrees). MONOCHROME1 is compared with
pydicom (stored values kept); SimpleITK inverts it (see docs/io.md), so only its geometry is compared.

Files over 2 MB (and one that SimpleITK takes ~10 s to read) run in the slow suite (``make test-slow``);
the fast part stays under ~40 s.
"""

from __future__ import annotations

import fnmatch
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from dicom_reference import grid_corners, our_frames, reference, same_corners, sitk_corners

import medseg.io as mio
from medseg.errors import MedsegError

pytest.importorskip("data_store", reason="pydicom-data (test extra) not installed")

# (pattern of the file's path under its data folder, substring of the refusal, why refusing is right)
REFUSALS: list[tuple[str, str, str]] = [
    ("*README*", "not a DICOM file", "a text file shipped beside the test data"),
    ("*.json", "not a DICOM file", "DICOM JSON (PS3.18), not a Part 10 file"),
    ("*.dump", "not a DICOM file", "a text dump of a dataset"),
    ("crayons.icc", "not a DICOM file", "an ICC colour profile"),
    ("zipMR.gz", "not a DICOM file", "a gzip archive: decompress it first"),
    ("no_meta.dcm", "not a DICOM file", "one non-image element, no file meta and no DICM marker"),
    ("rtplan*.dcm", "not an image", "RT Plan: no pixel data"),
    ("ExplVR_*NoMeta.dcm", "not an image", "RT Ion Plan datasets: no pixel data"),
    ("rtstruct.dcm", "not an image", "RT Structure Set: contours, no pixel data"),
    ("reportsi*.dcm", "not an image", "Structured Report: no pixel data"),
    ("test-SR.dcm", "not an image", "Structured Report: no pixel data"),
    ("waveform_ecg.dcm", "not an image", "ECG waveform: no pixel data"),
    (
        "*[!A]_SQ.dcm",
        "not an image",
        "a few private / sequence elements for pydicom's parser tests: no image",
    ),
    ("UN_sequence.dcm", "not an image", "one UN sequence element: no image"),
    ("empty_charset_LEI.dcm", "not an image", "two elements for a character-set test: no image"),
    ("meta_missing_tsyntax.dcm", "not an image", "one element for a file-meta test: no image"),
    ("no_meta_group_length.dcm", "not an image", "three elements for a file-meta test: no image"),
    ("dicomdirtests/DICOMDIR-*", "not an image", "DICOMDIR indexes under other names: no image"),
    ("dicomdirtests/DICOMDIR", "images found; pick one", "a DICOMDIR of 13 series: load asks which (series=)"),
    ("dicomdirtests/TINY_ALPHA/DICOMDIR", "not an image", "indexes the TINY_ALPHA files, which have no pixel data"),
    ("dicomdirtests/TINY_ALPHA/*/IM*", "not an image", "CT headers whose pixel data were removed (DICOMDIR test)"),
    ("MR_truncated.dcm", "truncated file", "the pixel data are cut short: 8130 of 8192 bytes (a damaged copy)"),
    ("emri_small_jpeg_2k_lossless_too_short.dcm", "no Pixel Data element", "the file ends before its pixel data"),
    (
        "JPEG-lossy.dcm",
        "could not decode",
        "12-bit lossy JPEG the installed decoders (pylibjpeg-libjpeg, Pillow) cannot decode; pydicom fails too",
    ),
    (
        "JPEG2000-embedded-sequence-delimiter.dcm",
        "could not decode",
        "a J2K codestream with a sequence delimiter inside, which openjpeg rejects; pydicom fails too",
    ),
]
#: files whose SimpleITK geometry is not a reference (file -> why); their pixels are still compared with pydicom
SITK_DIFFERS = {
    "badVR.dcm": "NumberOfFrames is '1A' (invalid): SimpleITK reads 1 frame; medseg reads the 15 frames that the "
    "pixel data length and GridFrameOffsetVector hold, as pydicom does (reported in problems)",
}
#: refusals that are decoder failures: pydicom's own decoding must fail on these files as well
DECODER_REFUSALS = {"JPEG-lossy.dcm", "JPEG2000-embedded-sequence-delimiter.dcm"}
SLOW_BYTES = 2_000_000
#: small files SimpleITK needs ~10 s to read (its JPEG path): in the slow suite too
SLOW_FILES = {"SC_rgb_jpeg.dcm"}


def _files() -> list[tuple[str, Path]]:
    from pydicom.data import get_testdata_files

    out = []
    for f in sorted(set(get_testdata_files())):
        p = Path(f)
        if not p.is_file():
            continue
        parts = p.parts
        root = max(i for i, part in enumerate(parts) if part in ("test_files", "data"))  # the data folder
        out.append(("/".join(parts[root + 1 :]), p))
    return out


FILES = _files()


def _refusal(rel: str) -> tuple[str, str] | None:
    for pattern, reason, why in REFUSALS:
        if fnmatch.fnmatchcase(rel, pattern) or ("/" not in pattern and fnmatch.fnmatchcase(Path(rel).name, pattern)):
            return reason, why
    return None


def _params():
    for rel, p in FILES:
        marks = [pytest.mark.slow] if p.stat().st_size > SLOW_BYTES or p.name in SLOW_FILES else []
        yield pytest.param(rel, p, id=rel, marks=marks)


def test_every_file_is_covered_and_the_table_has_no_stale_rows():
    assert len(FILES) > 200, "pydicom and pydicom-data test files expected"
    for pattern, _, why in REFUSALS:
        assert why and any(
            fnmatch.fnmatchcase(rel, pattern) or fnmatch.fnmatchcase(Path(rel).name, pattern) for rel, _ in FILES
        ), pattern


@pytest.mark.parametrize("rel, path", list(_params()))
def test_file_loads_like_the_references_or_is_refused_for_a_listed_reason(rel, path):
    import SimpleITK as sitk

    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    expected = _refusal(rel)
    try:
        img = mio.load(path)
    except MedsegError as e:
        assert expected is not None, f"{rel} refused but not in the table: {e}"
        assert expected[0] in str(e), (rel, str(e))
        assert str(path) in str(e) or str(path.parent) in str(e)  # names the file
        if path.name in DECODER_REFUSALS:
            import pydicom

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    pydicom.dcmread(path).pixel_array  # noqa: B018
                    decoded = True
                except Exception:
                    decoded = False
            assert not decoded, f"pydicom decodes {rel}: refusing it is not right"
        return
    assert expected is None, f"{rel} loads, but the table says it is refused ({expected[0]})"
    ref, positions = reference(path)
    ours = our_frames(img, positions)
    assert ours.shape == ref.shape, (rel, ours.shape, ref.shape)
    np.testing.assert_allclose(ours, ref.astype(np.float32), rtol=1e-6, atol=1e-3, err_msg=rel)
    sitk_ref = sitk_corners(path)
    if (
        sitk_ref is not None and path.name not in SITK_DIFFERS
    ):  # geometry: the corner voxel centres (LPS mm) agree within 1e-4 mm
        pts, size = sitk_ref
        assert sorted(size) == sorted(img.shape[1:4]), (rel, size, tuple(img.shape))
        assert same_corners(grid_corners(img.affine.numpy(), tuple(img.shape[1:4])), pts), rel


def test_no_valid_file_is_refused_as_truncated():
    """'truncated' rows must be files that really are short: their pixel data end before Rows x Columns."""
    for rel, path in FILES:
        r = _refusal(rel)
        if r and "truncated" in r[0]:
            assert os.path.getsize(path) < 10_000 and rel.endswith("MR_truncated.dcm")
