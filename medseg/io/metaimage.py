"""MetaImage (``.mha``, ``.mhd`` + raw data) through SimpleITK, ITK's own reader of its format.

The geometry is ITK's (``Offset`` / ``TransformMatrix`` / ``ElementSpacing`` in LPS), converted to
medseg's RAS affine. Vector pixels (``ElementNumberOfChannels`` > 1) become channels; a 4D image
becomes T channels (like NIfTI); complex pixels are refused. Before SimpleITK allocates the image,
the size the header declares is checked against the data actually on disk (uncompressed data), so a
damaged header cannot make it allocate gigabytes for a small file.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import DTypeLike

from medseg.errors import FileFormatError, MedsegError, MissingFileError
from medseg.io.base import ImageFormat, LoadOptions, nonfinite_voxels, source_path, volume_meta
from medseg.io.geometry import LPS_TO_RAS, orientation_code, spacing_from_affine
from medseg.io.safety import PASS_THROUGH, safe_reason
from medseg.io.series import SeriesInfo, unreadable

if TYPE_CHECKING:  # annotations only: monai (torch) is imported when an image is loaded
    from monai.data import MetaTensor

__all__ = ["load_metaimage", "metaimage_info", "FORMAT"]

log = logging.getLogger(__name__)

_HEADER_BYTES = 64 * 1024  # a MetaImage header is a few hundred bytes of text


def _header_fields(path: Path) -> dict[str, str]:
    """The ``Key = Value`` lines of a MetaImage header (up to ``ElementDataFile``)."""
    with open(path, "rb") as f:
        head = f.read(_HEADER_BYTES)
    fields: dict[str, str] = {}
    for raw in head.split(b"\n"):
        key, sep, value = raw.partition(b"=")
        if not sep:
            continue
        k = key.strip().decode("latin-1")
        fields[k] = value.strip().decode("latin-1")
        if k == "ElementDataFile":
            break
    return fields


def _pixel_type(reader: Any) -> str:
    """SimpleITK's name of the pixel type (``"vector of 16-bit signed integer"``, ``"complex of 32-bit float"``)."""
    import SimpleITK as sitk  # lazy: keeps `import medseg.io` light

    return str(sitk.GetPixelIDValueAsString(reader.GetPixelIDValue()))


def _declared_bytes(reader: Any) -> int:
    """Bytes of voxel data the header declares: voxels x components x bytes per component."""
    n = int(np.prod([int(v) for v in reader.GetSize()], dtype=np.int64))
    bits = re.search(r"(\d+)-bit", _pixel_type(reader))
    return n * int(reader.GetNumberOfComponents()) * (int(bits.group(1)) // 8 if bits else 1)


def _open_info(path: Path) -> Any:
    """A SimpleITK ``ImageFileReader`` with the header read, after checking the declared size against the file."""
    import SimpleITK as sitk  # lazy: keeps `import medseg.io` light

    if not path.exists():
        raise MissingFileError("file not found", path=str(path))
    if path.stat().st_size == 0:
        raise FileFormatError("empty file (0 bytes)", path=str(path))
    fields = _header_fields(path)
    if "ElementDataFile" not in fields or not any(k in fields for k in ("DimSize", "NDims")):
        raise FileFormatError("not a MetaImage header (no NDims / DimSize / ElementDataFile)", path=str(path))
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO("MetaImageIO")
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise FileFormatError(f"not a readable MetaImage header ({safe_reason(e)})", path=str(path)) from None
    if "complex" in _pixel_type(reader).lower():
        raise FileFormatError("complex-valued voxels; save magnitude or parts separately", path=str(path))
    compressed = fields.get("CompressedData", "False").strip().lower() == "true"
    data_file = fields["ElementDataFile"].strip()
    if not compressed and data_file.upper() != "LIST":
        if data_file.upper() == "LOCAL":  # the data follow the ElementDataFile line
            with open(path, "rb") as f:
                head = f.read(_HEADER_BYTES)
            end = head.find(b"\n", head.find(b"ElementDataFile"))
            available = path.stat().st_size - (end + 1) if end >= 0 else 0
        else:
            target = path.parent / data_file
            available = target.stat().st_size if target.is_file() else -1
            if available < 0:
                raise FileFormatError(
                    f"the data file {data_file!r} named by ElementDataFile is missing", path=str(path)
                )
        need = _declared_bytes(reader)
        if available < need:
            raise FileFormatError(
                f"truncated data: the header declares {need} bytes of voxels, the file holds {available}",
                path=str(path),
            )
    return reader


def _affine(reader_or_image: Any) -> np.ndarray:
    """Voxel -> RAS affine from ITK's spacing, direction and origin (LPS); 2D padded to 3D."""
    dim = int(reader_or_image.GetDimension())
    d = min(dim, 3)
    direction = np.asarray(reader_or_image.GetDirection(), float).reshape(dim, dim)[:d, :d]
    spacing = np.asarray(reader_or_image.GetSpacing(), float)[:d]
    origin = np.asarray(reader_or_image.GetOrigin(), float)[:d]
    lps = np.eye(4)
    lps[:d, :d] = direction * spacing
    lps[:d, 3] = origin
    if not np.all(np.isfinite(lps)) or abs(float(np.linalg.det(lps[:3, :3]))) <= 1e-12:
        raise FileFormatError("spacing / direction are not finite or are singular")
    return LPS_TO_RAS @ lps


def metaimage_info(path: str | Path) -> SeriesInfo:
    """A :class:`~medseg.io.series.SeriesInfo` for a ``.mha`` / ``.mhd`` file (header only; never raises)."""
    path = Path(path)
    try:
        reader = _open_info(path)
        affine = _affine(reader)
    except MedsegError as e:
        msg = str(e) if str(path) in str(e) else f"{path}: {e}"
        return unreadable(str(path), msg)
    size = tuple(int(v) for v in reader.GetSize())
    spatial = size[:3]
    chans = int(reader.GetNumberOfComponents()) * (int(np.prod(size[3:])) if len(size) > 3 else 1)
    return SeriesInfo(
        kind="metaimage",
        path=str(path),
        description=path.name,
        n_files=1,
        n_slices=spatial[2] if len(spatial) > 2 else 1,
        shape=spatial,
        n_channels=chans,
        spacing=tuple(round(v, 6) for v in spacing_from_affine(affine)[: len(spatial)]),
        orientation=orientation_code(affine),
        files=[str(path)],
    )


def load_metaimage(path: str | Path, *, nan_value: float | None = None, dtype: DTypeLike = np.float32) -> MetaTensor:
    """Load a MetaImage file as a MetaTensor.

    Parameters
    ----------
    path : ``.mha`` (header and data in one file) or ``.mhd`` (header; data in the file it names).
    nan_value : replace NaN and infinite voxels by this value; ``None`` keeps them (and warns).
    dtype : output dtype.

    Returns
    -------
    MetaTensor (C, X, Y, Z) (Z = 1 for 2D; C = components x T for vector / 4D images); ``affine``
    voxel -> RAS mm (SimpleITK's LPS geometry converted).

    Raises
    ------
    MissingFileError, FileFormatError : naming the file.
    """
    import SimpleITK as sitk  # lazy: keeps `import medseg.io` light
    import torch
    from monai.data import MetaTensor

    path = Path(path)
    reader = _open_info(path)
    try:
        image = reader.Execute()
        arr = sitk.GetArrayFromImage(image)  # (..., Z, Y, X[, comps]) in C order
        affine = _affine(image)
    except MedsegError as e:
        raise type(e)(str(e), path=str(path)) from None
    except PASS_THROUGH:
        raise
    except MemoryError:
        raise FileFormatError("not enough memory to read the voxel data", path=str(path)) from None
    except BaseException as e:
        raise FileFormatError(f"cannot read the MetaImage data ({safe_reason(e)})", path=str(path)) from None
    dim = int(image.GetDimension())
    comps = int(image.GetNumberOfComponentsPerPixel())
    if comps == 1:
        arr = arr[..., None]
    # (T?, Z?, Y, X, comps) -> (comps * T, X, Y, Z)
    spatial_nd = min(dim, 3)
    lead = arr.ndim - 1 - spatial_nd  # the axes before the spatial ones (4D: time)
    a = np.moveaxis(arr, -1, 0)  # (comps, [T,] [Z,] Y, X)
    a = a.reshape((comps * int(np.prod(a.shape[1 : 1 + lead], dtype=np.int64)),) + a.shape[1 + lead :])
    data = np.transpose(a, (0,) + tuple(range(a.ndim - 1, 0, -1)))  # (C, X, Y[, Z])
    if data.ndim == 3:
        data = data[..., None]
    problems: list[str] = []
    if data.shape[0] > 1:
        problems.append(f"{data.shape[0]} channels ({comps} components per voxel" + (", 4D" if lead else "") + ")")
    if data.dtype.kind == "c":
        raise FileFormatError("complex-valued voxels; save magnitude or parts separately", path=str(path))
    data = np.asarray(data, dtype=dtype) if np.dtype(dtype).kind == "f" or data.dtype.kind != "f" else data
    nan, inf = nonfinite_voxels(data, nan_value, path, problems)
    meta = volume_meta(path, "metaimage", affine, data.shape, problems, (nan, inf))
    t = torch.from_numpy(np.ascontiguousarray(data))
    return MetaTensor(t, affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)


def _reader(source: Path | SeriesInfo, options: LoadOptions) -> MetaTensor:
    return load_metaimage(source_path(source), nan_value=options.nan_value, dtype=options.dtype)


#: the MetaImage entry of :mod:`medseg.io.registry`
FORMAT = ImageFormat(
    name="metaimage",
    suffixes=(".mha", ".mhd"),
    kind="volume",
    description="MetaImage (.mha, .mhd + raw data; ITK / SimpleITK)",
    read=_reader,
    describe=metaimage_info,
)
