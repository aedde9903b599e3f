"""Demo stage ``data``: generate the embedded synthetic CT data and check it with ``medseg.io``."""

from __future__ import annotations

from pathlib import Path

from medseg.data.synthetic import ct_phantom, make_ct_dataset, write_phantom_dicom
from medseg.io import discover, format_series_table, load
from medseg.utils import atomic_write_text


def run_demo(out: Path, quick: bool = False) -> dict:
    """Write the synthetic CT phantom cohort (NIfTI + dataset.json) and one DICOM CT series.

    The DICOM series is then discovered and loaded back with :mod:`medseg.io` (as a user's study
    would be) and its series table saved as ``out/series.txt``.
    """
    out = Path(out)
    n = 4 if quick else 8
    datalist = make_ct_dataset(out / "ct_phantoms", n_cases=n, seed=0, n_test=2)
    ph = ct_phantom(seed=999)
    series_dir = out / "ct_dicom" / "study1" / "series1"
    dicom_files = write_phantom_dicom(ph, series_dir)
    series = discover(out / "ct_dicom")
    atomic_write_text(out / "series.txt", format_series_table(series) + "\n")
    img = load(series_dir)
    air_hu = float(img[0, 0, 0, 0])
    return {
        "summary": {
            "ct_datalist": str(datalist),
            "ct_cases": n,
            "dicom_series": str(series_dir),
            "dicom_slices": len(dicom_files),
            "series_found": len(series),
            "series_problems": sum(len(s.problems) for s in series),
            "loaded_shape": list(img.shape[1:]),
            "air_hu": air_hu,
        },
        "cases": [],
    }
