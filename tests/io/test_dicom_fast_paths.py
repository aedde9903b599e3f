"""The shortcuts of the DICOM reader give what the plain paths give.

- :class:`HeaderValues` (each header value looked up once) answers like the pydicom Dataset of a
  fresh ``dcmread`` of the file, for every keyword medseg reads, on every pydicom / pydicom-data file;
- ``load`` of a discovered series (which reuses the plan that ``discover`` made) equals a load from
  the file list (headers read and planned again): voxels, affine, spacing, every ``meta`` entry; on
  CT series, the multi-file series of pydicom's DICOMDIR test set, and the multi-frame / enhanced files;
- the one-pass rescale and the in-place bit mask do the same float / integer operations as before.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import medseg.io as mio
from medseg.errors import MedsegError
from medseg.io.dicom.header import _USED_KEYWORDS, read_dicom_header
from medseg.io.dicom.pixels import _fix_bits, _rescale_into

#: keywords read besides _USED_KEYWORDS (functional groups, float pixel data, attributes, unknown names)
_OTHER_KEYS = (
    "PerFrameFunctionalGroupsSequence",
    "SharedFunctionalGroupsSequence",
    "DiffusionBValue",
    "FloatPixelData",
    "DoubleFloatPixelData",
    "SpecificCharacterSet",
    "file_meta",
    "NotADicomKeyword",
)
_NONE = object()


def _dicom_test_files() -> list[Path]:
    from pydicom.data import get_testdata_files

    return [Path(f) for f in sorted(set(get_testdata_files())) if Path(f).is_file() and Path(f).stat().st_size < 2e6]


def _answer(fn, *args):
    """What ``fn(*args)`` returns, or the type of what it raises."""
    try:
        return ("value", fn(*args))
    except Exception as e:
        return ("raises", type(e))


def test_header_values_answer_like_a_fresh_pydicom_dataset():
    import pydicom

    checked = 0
    for path in _dicom_test_files():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                h = read_dicom_header(path)
            except MedsegError:
                continue
            fresh = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            for key in (*_USED_KEYWORDS, *_OTHER_KEYS):
                assert (key in h.values) == (key in fresh), (path.name, key)
                for _ in range(2):  # the first answer and the remembered one
                    ours, ref = _answer(h.values.get, key, _NONE), _answer(fresh.get, key, _NONE)
                    if key == "file_meta":  # the Dataset's attribute: compare what medseg reads of it
                        ours, ref = _answer(ours[1].get, "TransferSyntaxUID"), _answer(ref[1].get, "TransferSyntaxUID")
                    else:
                        assert _answer(getattr, h.values, key) == _answer(getattr, fresh, key), (path.name, key)
                    assert ours == ref, (path.name, key, ours, ref)
            tag = (0x0018, 0x9087)  # a tag, not a keyword: goes to the Dataset as it is
            assert (tag in h.values) == (tag in fresh)
            checked += 1
    assert checked > 150


def _same_image(a, b, what: str) -> None:
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=what)
    assert a.dtype == b.dtype and a.shape == b.shape, what
    np.testing.assert_array_equal(a.affine.numpy(), b.affine.numpy(), err_msg=what)
    assert a.meta.keys() == b.meta.keys(), what
    for k in a.meta:
        x, y = a.meta[k], b.meta[k]
        if isinstance(x, np.ndarray) or hasattr(x, "numpy"):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f"{what}: meta[{k!r}]")
        else:
            assert x == y, (what, k, x, y)


def _discovered_equals_fresh(folder: Path) -> int:
    """Every loadable DICOM series under ``folder``: load(SeriesInfo) == load(its files); the plan is reused."""
    n = 0
    for info in mio.discover(folder):
        if info.kind != "dicom" or not info.ok:
            continue
        assert info._plan is not None  # discover planned the series; load reuses that plan
        from_info = mio.load(info)
        fresh = mio.load_dicom(info.files)  # headers read and the series planned again
        _same_image(from_info, fresh, info.path)
        from_info.affine[0, 3] += 100.0  # the result owns its affine: the kept plan is not changed
        _same_image(mio.load(info), fresh, f"{info.path} (second load)")
        n += 1
    return n


def test_a_discovered_ct_series_loads_equal_to_a_fresh_read(small_ct_series, dicom_writer, tmp_path):
    folder, _ = small_ct_series
    assert _discovered_equals_fresh(folder) == 1
    # per-slice rescale (slope != 1 on some slices, fractional intercepts) and an oblique orientation
    rng = np.random.default_rng(1)
    vol = rng.integers(-1000, 2000, (24, 20, 9)).astype(float)
    c, s = np.cos(0.3), np.sin(0.3)
    dicom_writer(
        tmp_path / "oblique",
        vol,
        spacing=(0.7, 0.8, 2.5),
        iop=(c, s, 0, -s, c, 0),
        slope=[1.0, 2.0, 0.5, 1.0, 1.0, 1.5, 1.0, 1.0, 1.0],
        intercept=[-1024.0, -1024.5, 0.0, -1000.25, -1024.0, 3.0, -1024.0, -7.5, -1024.0],
    )
    assert _discovered_equals_fresh(tmp_path / "oblique") == 1


def test_the_multi_file_series_of_pydicoms_dicomdir_set_load_equal_to_a_fresh_read():
    from pydicom.data import get_testdata_file

    dicomdir = Path(get_testdata_file("DICOMDIR"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _discovered_equals_fresh(dicomdir.parent) >= 5


def _multiframe_files() -> list[Path]:
    import pydicom

    out = []
    for path in _dicom_test_files():
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["NumberOfFrames"])
            if int(ds.get("NumberOfFrames") or 1) > 1:
                out.append(path)
        except Exception:
            continue
    return out


@pytest.mark.parametrize("path", _multiframe_files(), ids=lambda p: p.name)
def test_multiframe_and_enhanced_files_load_equal_through_discover(path):
    """A file discovered as a one-file series loads as the file named directly (enhanced MR / CT included)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            direct = mio.load(path)
        except MedsegError:
            return  # refused (the conformance table says why); nothing to compare
        (info,) = [s for s in mio.discover(path) if s.kind == "dicom"]
        via = mio.load(info)
    np.testing.assert_array_equal(via.numpy(), direct.numpy())
    np.testing.assert_array_equal(via.affine.numpy(), direct.affine.numpy())
    np.testing.assert_array_equal(via.meta["spacing"], direct.meta["spacing"])
    assert via.meta["problems"] == direct.meta["problems"]


class _Slice:
    def __init__(self, slope: float, intercept: float) -> None:
        self.slope, self.intercept = slope, intercept


@pytest.mark.parametrize("raw_dtype", [np.uint8, np.uint16, np.int16, np.int32, np.uint32])
@pytest.mark.parametrize("out_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("slope, intercept", [(1.0, -1024.0), (1.0, -1024.3), (1.0, 1e-3), (1.0, 0.0), (2.5, -7.1)])
def test_rescale_gives_the_bits_of_copy_then_add(raw_dtype, out_dtype, slope, intercept):
    info = np.iinfo(raw_dtype)
    rng = np.random.default_rng(0)
    raw = rng.integers(info.min, info.max, (16, 12), dtype=raw_dtype, endpoint=True)
    raw[0, :2] = info.min, info.max
    out = np.empty((1, 1, 16, 12), out_dtype)
    _rescale_into(out, 0, 0, raw, _Slice(slope, intercept), 1)  # type: ignore[arg-type]
    ref = np.empty((16, 12), out_dtype)  # the operations of the code before the one-pass rescale
    if slope != 1:
        np.multiply(raw, slope, out=ref, casting="unsafe")
    else:
        np.copyto(ref, raw, casting="unsafe")
    if intercept != 0:
        ref += intercept
    np.testing.assert_array_equal(out[0, 0], ref)
    assert out[0, 0].tobytes() == ref.tobytes()


def test_the_bit_mask_is_applied_in_place_only_to_an_array_of_its_own():
    class _Ds:
        def __init__(self, stored: int) -> None:
            self.stored = stored

        def get(self, key, default=None):
            return self.stored if key == "BitsStored" else default

    base = np.array([0xFFFF, 0x0FFF, 0x1234], np.uint16)
    view = base[:]
    masked = _fix_bits(view, _Ds(12))
    assert masked.tolist() == [0x0FFF, 0x0FFF, 0x0234] and base.tolist() == [0xFFFF, 0x0FFF, 0x1234]
    own = base.copy()
    assert _fix_bits(own, _Ds(12)) is own and own.tolist() == [0x0FFF, 0x0FFF, 0x0234]
    signed = np.array([0x0FFF, 0x0800, -1, 5], np.int16)  # 12-bit two's complement: -1, -2048, -1, 5
    assert _fix_bits(signed.copy(), _Ds(12)).tolist() == [-1, -2048, -1, 5]


def test_the_collector_pause_ends_with_the_outermost_block_and_keeps_a_switched_off_collector_off(small_ct_series):
    import gc
    import threading

    from medseg.io.dicom import collector_paused

    folder, _ = small_ct_series
    assert gc.isenabled()
    mio.load(folder)
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            pass
        t = threading.Thread(target=lambda: mio.load(folder))  # another thread's block shares the pause
        t.start()
        t.join()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        mio.load(folder)
        assert not gc.isenabled()  # the caller had switched it off: it stays off
    finally:
        gc.enable()
    with pytest.raises(MedsegError), collector_paused():
        mio.load(folder / "no such file")
    assert gc.isenabled()
