"""Demo stage ``data``: generate the embedded synthetic data sets (deterministic)."""

from __future__ import annotations

from pathlib import Path

from medseg.data.synthetic import ct_phantom, make_ct_dataset, write_phantom_dicom


def run_demo(out: Path, quick: bool = False) -> dict:
    """Write the synthetic CT phantom cohort (NIfTI + dataset.json) and one DICOM series."""
    out = Path(out)
    n = 4 if quick else 8
    datalist = make_ct_dataset(out / "ct_phantoms", n_cases=n, seed=0, n_test=2)
    dicom_files = write_phantom_dicom(ct_phantom(seed=999), out / "ct_dicom" / "study1" / "series1")
    return {"summary": {"ct_datalist": str(datalist), "ct_cases": n, "dicom_series": str(dicom_files[0].parent),
                        "dicom_slices": len(dicom_files)}, "cases": []}
