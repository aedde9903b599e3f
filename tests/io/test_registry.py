"""The format registry: each format declares its suffixes once; discover and load ask the registry."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest

import medseg.io
from medseg import io as mio
from medseg.errors import FileFormatError
from medseg.io import registry
from medseg.io.registry import FORMATS, case_id, format_of, reader_for, suffix_of, suffixes
from medseg.io.series import SeriesInfo

IO_DIR = Path(medseg.io.__file__).parent


def test_every_suffix_belongs_to_one_format():
    seen: dict[str, str] = {}
    for name, fmt in FORMATS.items():
        assert fmt.name == name and fmt.read is not None
        for s in fmt.suffixes:
            assert s == s.lower() and s.startswith(".") and s not in seen, (s, name, seen.get(s))
            seen[s] = name
    assert set(seen).isdisjoint(registry.NON_IMAGE_SUFFIXES)


def test_each_suffix_is_written_in_one_module_only():
    """No second suffix list anywhere in medseg.io: a suffix literal lives in its format's module."""
    where: dict[str, set[str]] = {s: set() for s in suffixes()}
    for path in IO_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in where:
                where[node.value].add(str(path.relative_to(IO_DIR)))
    assert all(len(mods) == 1 for mods in where.values()), where
    assert where[".png"] == {"image2d.py"} and where[".nii.gz"] == {"nifti.py"} and where[".dcm"] == {"dicom/load.py"}


@pytest.mark.parametrize(
    "name, fmt, suffix, case",
    [
        ("CT.NII.GZ", "nifti", ".nii.gz", "CT"),
        ("a.b.nii", "nifti", ".nii", "a.b"),
        ("slide.TIFF", "image2d", ".tiff", "slide"),
        ("x.bmp", "image2d", ".bmp", "x"),
        ("IM0001.dcm", "dicom", ".dcm", "IM0001"),
        ("1.2.840.113619.2.55", None, ".55", "1.2.840.113619.2.55"),
        ("notes.txt", None, ".txt", "notes.txt"),
    ],
)
def test_format_suffix_and_case_id(name, fmt, suffix, case):
    assert format_of(name) == fmt and suffix_of(name) == suffix and case_id(name) == case


def test_files_no_format_claims_are_read_as_dicom():
    assert reader_for("study/IM0001").name == "dicom"
    assert reader_for("a.nii.gz").name == "nifti" and reader_for("b.jpeg").name == "image2d"


def test_suffixes_of_named_formats():
    assert suffixes("nifti") == (".nii.gz", ".nii", ".hdr")
    assert set(suffixes()) == {s for f in FORMATS.values() for s in f.suffixes}


def test_load_reads_through_the_registry(tmp_path, monkeypatch):
    calls = []

    def fake(source, options):
        calls.append((Path(source), options.nan_value, np.dtype(options.dtype)))
        return "loaded"

    monkeypatch.setitem(FORMATS, "nifti", dataclasses.replace(FORMATS["nifti"], read=fake))
    (tmp_path / "a.nii.gz").write_bytes(b"not read")
    assert mio.load(tmp_path / "a.nii.gz", nan_value=-5.0, dtype=np.float64) == "loaded"
    assert calls == [(tmp_path / "a.nii.gz", -5.0, np.dtype(np.float64))]


def test_discover_describes_files_through_the_registry(tmp_path, monkeypatch):
    def fake(path):
        return SeriesInfo(kind="image2d", path=str(path), description="described by the registry")

    monkeypatch.setitem(FORMATS, "image2d", dataclasses.replace(FORMATS["image2d"], describe=fake))
    (tmp_path / "a.bmp").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not an image")
    (info,) = mio.discover(tmp_path)
    assert info.description == "described by the registry" and info.path == str(tmp_path / "a.bmp")


def test_a_series_info_is_loaded_by_its_kinds_reader(tmp_path, monkeypatch):
    monkeypatch.setitem(FORMATS, "image2d", dataclasses.replace(FORMATS["image2d"], read=lambda s, o: s))
    info = SeriesInfo(kind="image2d", path=str(tmp_path / "x.png"))
    assert mio.load(info) is info
    bad = SeriesInfo(kind="unreadable", path="x.png", problems=["error: x.png: not a readable image"])
    with pytest.raises(FileFormatError, match="not a readable"):
        mio.load(bad)


def test_public_api_and_documented_paths():
    for name in mio.__all__:
        assert getattr(mio, name) is not None, name
    from medseg.io.geometry import LPS_TO_RAS  # noqa: F401
    from medseg.io.seg import series_geometry, write_dicom_seg  # noqa: F401

    assert mio.write_dicom_seg is write_dicom_seg
