"""DICOM: read headers, plan and check the geometry of a series, build it as one volume.

Why medseg builds the volume itself from pydicom (and not with SimpleITK's ``ImageSeriesReader`` or
MONAI's ``LoadImage``): those readers sort and stack whatever files they are given. They do not
exclude localizers, do not detect missing slices, gantry tilt or duplicate positions, and apply one
rescale slope/intercept to the whole series. medseg parses the headers with pydicom (GDCM-grade
parsing, every transfer syntax through pydicom's pixel plugins), checks the geometry, and then
reads uncompressed pixel data straight from the file offsets that pydicom found: about as fast as
SimpleITK's C++ reader on the benchmark (``benchmarks/io_load.py``; figures in ``docs/benchmarks.md``).
Files are read serially by default (measured fastest on local disks); ``MEDSEG_IO_THREADS=N`` reads
them with N threads, which helps only on network storage. Compressed pixel data decode through
``pydicom``'s plugins (pylibjpeg).

Geometry rules (``docs/io.md``): slices are sorted by their position projected on the slice normal,
the slice spacing comes from the positions (never SliceThickness), rescale slope/intercept are
applied per slice (per frame for enhanced multi-frame), and every irregularity is either an error
or an explicit, reported resample.

Modules, one job each:

- :mod:`.source`: where bytes come from (file or zip member), serial / threaded reading;
- :mod:`.header`: one file's header and pixel offset; many headers with a progress bar;
- :mod:`.slices`: the 2D frames of a file with their position, orientation, spacing and rescale;
- :mod:`.plan`: from headers to a checked volume plan (:mod:`.stacking`: duplicate positions and
  4D channels; :mod:`.spacing`: slice spacing, missing slices, gantry tilt);
- :mod:`.pixels`: pixel decoding and filling the volume;
- :mod:`.load`: :func:`load_dicom`, :func:`describe_series` and the registry entry ``FORMAT``.

pydicom, torch/MONAI and scipy are imported inside the functions that need them, so that
``import medseg.io`` stays light (numpy only).
"""

from __future__ import annotations

from medseg.io.dicom.header import Header, is_dicomdir_record, read_dicom_header, read_headers
from medseg.io.dicom.load import FORMAT, describe_series, load_dicom
from medseg.io.dicom.source import Source, collector_paused, has_dicm_marker, looks_like_dicom

__all__ = [
    "FORMAT",
    "Header",
    "Source",
    "collector_paused",
    "describe_series",
    "has_dicm_marker",
    "is_dicomdir_record",
    "load_dicom",
    "looks_like_dicom",
    "read_dicom_header",
    "read_headers",
]
