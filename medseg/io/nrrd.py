"""NRRD (``.nrrd``, detached ``.nhdr``) and 3D Slicer segmentations (``.seg.nrrd``) through pynrrd.

Geometry (the NRRD spec, as ITK / SimpleITK and 3D Slicer read it):

- ``space directions`` give one vector per axis (mm per voxel step), ``space origin`` the centre of the
  first voxel, both in the named ``space``: ``left-posterior-superior`` (LPS, what Slicer writes),
  ``right-anterior-superior`` (RAS), ``left-anterior-superior`` (LAS); ``scanner-xyz`` and
  ``3D-right-handed`` are read as LPS (as ITK does). medseg converts to its RAS affine.
- An axis whose direction is ``none`` (kind ``list`` / ``vector`` / ``RGB-color`` ...) is the channel
  axis: ``(C, X, Y, Z)``. A ``.seg.nrrd`` with overlapping segments stores one layer per channel.
- Without ``space directions``: ``spacings`` (or 1 mm) along the axes, origin 0, reported (not patient
  coordinates). Non-finite or singular directions, complex data, left-handed or time spaces are refused.
- Slicer's segment metadata (``Segment<i>_Name``, ``_LabelValue``, ``_Layer``, ``_Color``, ``_ID``) are
  kept in ``meta["segments"]`` (names cleaned: :func:`medseg.io.safety.clean_text`), and written back
  by :func:`save_label_nrrd` for a ``.seg.nrrd`` output.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import DTypeLike

from medseg.errors import FileFormatError, InputError, MedsegError, MissingDependencyError, MissingFileError
from medseg.io.base import (
    ImageFormat,
    LoadOptions,
    label_array,
    nonfinite_voxels,
    reference_grid,
    source_path,
    volume_meta,
)
from medseg.io.geometry import orientation_code, spacing_from_affine
from medseg.io.safety import PASS_THROUGH, clean_text, safe_reason, third_party_quiet
from medseg.io.series import SeriesInfo, unreadable
from medseg.palette import class_color
from medseg.utils import atomic_write

if TYPE_CHECKING:  # annotations only: monai (torch) is imported when an image is loaded
    from monai.data import MetaTensor

__all__ = ["load_nrrd", "nrrd_info", "nrrd_geometry", "save_label_nrrd", "is_seg_nrrd", "FORMAT"]

log = logging.getLogger(__name__)

#: named NRRD spaces -> the matrix taking that space's coordinates to RAS
_SPACES = {
    "right-anterior-superior": np.diag([1.0, 1.0, 1.0]),
    "ras": np.diag([1.0, 1.0, 1.0]),
    "left-anterior-superior": np.diag([-1.0, 1.0, 1.0]),
    "las": np.diag([-1.0, 1.0, 1.0]),
    "left-posterior-superior": np.diag([-1.0, -1.0, 1.0]),
    "lps": np.diag([-1.0, -1.0, 1.0]),
    "scanner-xyz": np.diag([-1.0, -1.0, 1.0]),  # ITK's reading (LPS)
    "3d-right-handed": np.diag([-1.0, -1.0, 1.0]),  # ITK's reading (LPS)
}
_SEGMENT_KEY = re.compile(r"^Segment(\d+)_(Name|LabelValue|Layer|Color|ID)$")


def _nrrd() -> Any:
    try:
        import nrrd  # lazy: optional reader (pynrrd)
    except ImportError:  # pragma: no cover - pynrrd is a dependency
        raise MissingDependencyError("reading NRRD needs pynrrd: pip install pynrrd") from None
    return nrrd


def _read_header(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise MissingFileError("file not found", path=str(path))
    if path.stat().st_size == 0:
        raise FileFormatError("empty file (0 bytes)", path=str(path))
    try:
        with third_party_quiet(str(path)):
            return dict(_nrrd().read_header(str(path)))
    except MedsegError:
        raise
    except PASS_THROUGH:
        raise
    except BaseException as e:
        raise FileFormatError(f"not a readable NRRD header ({safe_reason(e)})", path=str(path)) from None


def nrrd_geometry(
    header: Mapping[str, Any], path: str | Path = ""
) -> tuple[np.ndarray, list[int], int | None, list[str]]:
    """``(RAS affine 4x4, spatial axes, channel axis or None, problems)`` of a NRRD header.

    Raises
    ------
    FileFormatError : more than one non-spatial axis, no 2 or 3 spatial axes, a space medseg does not
        read (left-handed, time), non-finite or singular directions.
    """
    name = str(path)
    dim = int(header.get("dimension", 0))
    sizes = [int(v) for v in np.atleast_1d(header.get("sizes", []))]
    if dim < 1 or len(sizes) != dim or any(v <= 0 for v in sizes):
        raise FileFormatError(f"invalid sizes {sizes} for dimension {dim}", path=name)
    problems: list[str] = []
    dirs = header.get("space directions")
    if dirs is not None:
        dirs = np.asarray(dirs, float)
        if dirs.ndim != 2 or dirs.shape[0] != dim:
            raise FileFormatError("space directions do not give one vector per axis", path=name)
        spatial = [i for i in range(dim) if not np.all(np.isnan(dirs[i]))]
        space = str(header.get("space", "")).strip().lower()
        if dirs.shape[1] != 3:
            raise FileFormatError(f"{dirs.shape[1]}D space directions: medseg reads 3D spaces", path=name)
        if space and space not in _SPACES:
            raise FileFormatError(
                f"NRRD space {clean_text(space, 40)!r} is not one medseg reads (LPS, RAS, LAS)", path=name
            )
        to_ras = _SPACES.get(space, _SPACES["lps"])
        if not space:
            problems.append("no NRRD 'space' field: directions read as LPS (as ITK does)")
        vectors = dirs[spatial].T  # (3, n spatial) in the file's space
        origin = np.asarray(header.get("space origin", np.zeros(3)), float).reshape(-1)
        if origin.size != 3 or not np.all(np.isfinite(origin)):
            problems.append("no valid space origin: origin 0")
            origin = np.zeros(3)
    else:
        spatial = [i for i in range(dim) if str((header.get("kinds") or ["domain"] * dim)[i]).lower() in _DOMAIN]
        spacings = np.asarray(header.get("spacings", [np.nan] * dim), float).reshape(-1)
        steps = [float(spacings[i]) if i < spacings.size and np.isfinite(spacings[i]) else 1.0 for i in spatial]
        vectors = np.zeros((3, len(spatial)))
        for j, step in enumerate(steps[:3]):
            vectors[j, j] = step
        origin = np.zeros(3)
        to_ras = _SPACES["lps"]
        problems.append("no space directions: axis-aligned grid, origin 0 (not patient coordinates)")
    others = [i for i in range(dim) if i not in spatial]
    if len(spatial) not in (2, 3) or len(others) > 1:
        raise FileFormatError(
            f"{len(spatial)} spatial and {len(others)} other axes (sizes {sizes}); medseg reads 2D / 3D images "
            "with at most one channel axis",
            path=name,
        )
    lin = np.zeros((3, 3))
    lin[:, : len(spatial)] = to_ras @ vectors
    if len(spatial) == 2:  # a 2D image in 3D space: the third axis along the normal, 1 mm
        n = np.cross(lin[:, 0], lin[:, 1])
        lin[:, 2] = n / max(float(np.linalg.norm(n)), 1e-12)
    if not np.all(np.isfinite(lin)) or abs(float(np.linalg.det(lin))) <= 1e-12:
        raise FileFormatError("space directions are not finite or are singular (zero spacing?)", path=name)
    affine = np.eye(4)
    affine[:3, :3] = lin
    affine[:3, 3] = to_ras @ origin
    return affine, spatial, (others[0] if others else None), problems


_DOMAIN = {"domain", "space", "time"}


def segments_of(header: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Slicer's segments of a ``.seg.nrrd`` header: ``[{"name", "label_value", "layer", "color", "id"}]``."""
    found: dict[int, dict[str, Any]] = {}
    for key, value in header.items():
        m = _SEGMENT_KEY.match(str(key))
        if m is None:
            continue
        seg = found.setdefault(int(m.group(1)), {"index": int(m.group(1))})
        field_, text = m.group(2), str(value)
        try:
            if field_ == "Name":
                seg["name"] = clean_text(text)
            elif field_ == "ID":
                seg["id"] = clean_text(text)
            elif field_ == "LabelValue":
                seg["label_value"] = int(float(text))
            elif field_ == "Layer":
                seg["layer"] = int(float(text))
            elif field_ == "Color":
                seg["color"] = [round(float(v), 4) for v in text.split()[:3]]
        except ValueError:
            continue  # a damaged value: left out
    return [found[i] for i in sorted(found)]


def nrrd_info(path: str | Path) -> SeriesInfo:
    """A :class:`~medseg.io.series.SeriesInfo` for a NRRD / ``.seg.nrrd`` file (header only; never raises)."""
    path = Path(path)
    try:
        header = _read_header(path)
        affine, spatial, chan, problems = nrrd_geometry(header, path)
        if str(header.get("type", "")).lower() in ("block",):
            raise FileFormatError("NRRD 'block' data are not images", path=str(path))
    except (FileFormatError, MissingFileError, MissingDependencyError) as e:
        return unreadable(str(path), str(e))
    sizes = [int(v) for v in header["sizes"]]
    shape = tuple(sizes[i] for i in spatial)
    segments = segments_of(header)
    return SeriesInfo(
        kind="nrrd",
        path=str(path),
        description=path.name + (f" ({len(segments)} segments)" if segments else ""),
        n_files=1,
        n_slices=shape[2] if len(shape) > 2 else 1,
        shape=shape,
        n_channels=sizes[chan] if chan is not None else 1,
        spacing=tuple(round(v, 6) for v in spacing_from_affine(affine)[: len(shape)]),
        orientation=orientation_code(affine),
        problems=problems,
        files=[str(path)],
    )


def load_nrrd(path: str | Path, *, nan_value: float | None = None, dtype: DTypeLike = np.float32) -> MetaTensor:
    """Load a ``.nrrd`` / ``.nhdr`` / ``.seg.nrrd`` file as a MetaTensor.

    Parameters
    ----------
    path : NRRD file (a ``.nhdr`` reads its detached data file).
    nan_value : replace NaN and infinite voxels by this value; ``None`` keeps them (and warns).
    dtype : output dtype.

    Returns
    -------
    MetaTensor (C, X, Y, Z) (Z = 1 for a 2D image); ``affine`` voxel -> RAS mm (from ``space
    directions`` / ``space origin``); ``meta["segments"]`` for a Slicer segmentation (names, label
    values, layers, colours), ``meta["nrrd_space"]``.

    Raises
    ------
    MissingFileError, FileFormatError : naming the file.
    """
    import torch  # lazy: keeps `import medseg.io` light (torch, MONAI)
    from monai.data import MetaTensor

    path = Path(path)
    header = _read_header(path)
    affine, spatial, chan, problems = nrrd_geometry(header, path)
    try:
        with third_party_quiet(str(path)):
            data, _ = _nrrd().read(str(path), index_order="F")
    except MedsegError:
        raise
    except PASS_THROUGH:
        raise
    except MemoryError:
        raise FileFormatError("not enough memory to read the voxel data", path=str(path)) from None
    except BaseException as e:
        raise FileFormatError(
            f"cannot read the NRRD data ({safe_reason(e)}); truncated file?", path=str(path)
        ) from None
    data = np.asarray(data)
    if data.dtype.kind == "c":
        raise FileFormatError(
            f"complex-valued voxels ({data.dtype}); save magnitude or parts separately", path=str(path)
        )
    if data.dtype.kind not in "uifb" or data.ndim != len(header["sizes"]):
        raise FileFormatError(f"unsupported NRRD data ({data.dtype}, shape {data.shape})", path=str(path))
    order = ([chan] if chan is not None else []) + spatial
    data = np.transpose(data, order)
    if chan is None:
        data = data[None]
    if data.ndim == 3:  # 2D image
        data = data[..., None]
    data = np.asarray(data, dtype=dtype) if np.dtype(dtype).kind == "f" or data.dtype.kind != "f" else data
    nan, inf = nonfinite_voxels(data, nan_value, path, problems)
    segments = segments_of(header)
    meta = volume_meta(
        path,
        "nrrd",
        affine,
        data.shape,
        problems,
        (nan, inf),
        segments=segments,
        nrrd_space=str(header.get("space", "")),
    )
    t = torch.from_numpy(np.ascontiguousarray(data))
    return MetaTensor(t, affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)


def _segment_fields(values: list[int], names: Mapping[int, str], shape: tuple[int, ...]) -> dict[str, str]:
    """Slicer's ``Segment<i>_*`` and ``Segmentation_*`` fields (one segment per label value, all in layer 0)."""
    extent = " ".join(f"0 {n - 1}" for n in shape)
    out: dict[str, str] = {}
    for i, v in enumerate(values):
        r, g, b = class_color(v)
        name = clean_text(names.get(v, f"Segment_{v}")) or f"Segment_{v}"
        out.update(
            {
                f"Segment{i}_Color": f"{r / 255:.6g} {g / 255:.6g} {b / 255:.6g}",
                f"Segment{i}_ColorAutoGenerated": "0",
                f"Segment{i}_Extent": extent,
                f"Segment{i}_ID": f"Segment_{v}",
                f"Segment{i}_LabelValue": str(v),
                f"Segment{i}_Layer": "0",
                f"Segment{i}_Name": name.replace("\\", "/"),
                f"Segment{i}_NameAutoGenerated": "0" if v in names else "1",
                f"Segment{i}_Tags": "|",
            }
        )
    out.update(
        {
            "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
            "Segmentation_MasterRepresentation": "Binary labelmap",
            "Segmentation_ReferenceImageExtentOffset": "0 0 0",
        }
    )
    return out


def save_label_nrrd(labels: Any, reference: Any, path: str | Path, segments: Mapping[int, str] | None = None) -> Path:
    """Write a label map (uint8) as NRRD on the reference image's grid (atomic write).

    Parameters
    ----------
    labels : (X, Y, Z) or (1, X, Y, Z) integer array / tensor, values 0..255.
    reference : the image the labels belong to: a MetaTensor from :func:`medseg.io.load`, or a NRRD path.
    path : ``.nrrd`` (a label volume) or ``.seg.nrrd`` (a 3D Slicer segmentation: one segment per
        label value, named from ``segments``, else from the reference's own segments, else
        ``Segment_<value>``). Written in the reference's NRRD space when it was LPS or RAS, else LPS.
    segments : ``{label value: name}``.

    Raises
    ------
    LabelMismatchError : the spatial shape differs from the reference, or values are not integers in 0..255.
    """
    path = Path(path)
    if isinstance(reference, (str, Path)):
        reference = load_nrrd(reference)  # other formats: medseg.io.save_label loads them first
    ref_shape, ref_aff, meta = reference_grid(reference)
    data = label_array(labels, ref_shape, path, str(meta.get("filename_or_obj", "")))
    if data.shape[2] == 1 and len(ref_shape) == 2:
        data = data[:, :, 0]
    space = str(meta.get("nrrd_space", "")).strip().lower()
    space = space if space in ("right-anterior-superior", "ras") else "left-posterior-superior"
    to_space = _SPACES[space]  # its own inverse (a diagonal of +-1)
    dirs = (to_space @ ref_aff[:3, :3])[:, : data.ndim].T
    header: dict[str, Any] = {
        "type": "unsigned char",
        "space": space,
        "space directions": dirs,
        "space origin": to_space @ ref_aff[:3, 3],
        "kinds": ["domain"] * data.ndim,
        "encoding": "gzip",
    }
    if is_seg_nrrd(path):
        names = dict(segments or {})
        for seg in meta.get("segments") or []:
            if "label_value" in seg and "name" in seg:
                names.setdefault(int(seg["label_value"]), str(seg["name"]))
        values = sorted({int(v) for v in np.unique(data) if v != 0} | {v for v in names if v > 0})
        header.update(_segment_fields(values, names, data.shape))
    elif not path.name.lower().endswith(".nrrd"):
        raise InputError("NRRD label output must end in .nrrd or .seg.nrrd", path=str(path))
    with atomic_write(path) as tmp:
        _nrrd().write(str(tmp), np.ascontiguousarray(data), header, index_order="F")
    return path


def is_seg_nrrd(path: str | Path) -> bool:
    """True for a 3D Slicer segmentation file (``.seg.nrrd``)."""
    return Path(path).name.lower().endswith(".seg.nrrd")


def _reader(source: Path | SeriesInfo, options: LoadOptions) -> MetaTensor:
    return load_nrrd(source_path(source), nan_value=options.nan_value, dtype=options.dtype)


#: the NRRD entry of :mod:`medseg.io.registry` (``.seg.nrrd`` is matched before ``.nrrd``)
FORMAT = ImageFormat(
    name="nrrd",
    suffixes=(".seg.nrrd", ".nrrd", ".nhdr"),
    kind="volume",
    description="NRRD (.nrrd, .nhdr) and 3D Slicer segmentations (.seg.nrrd)",
    read=_reader,
    describe=nrrd_info,
    write_label=save_label_nrrd,
    write_suffixes=(".seg.nrrd", ".nrrd"),
)
