"""Fixtures for the review tests: a small run folder with real overlays and a mix of cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.data.synthetic import CT_CLASSES, ct_phantom
from medseg.review import overlay as ov
from medseg.review.cases import ReviewCase

#: a case id that would run as script if the report did not escape it
EVIL = "<script>window.__pwned = 1</script>\"'&"


@pytest.fixture
def evil_case_id() -> str:
    """The hostile case id that :func:`build_sample_run` gives one of its cases."""
    return EVIL


def build_sample_run(run_dir: Path) -> list[ReviewCase]:
    """Overlays for a tiny phantom + 5 cases: segmentation (2, one evil id), detection, classification, skipped."""
    ph = ct_phantom(1, shape=(48, 48, 16), spacing=(4.0, 4.0, 6.0))
    ov_dir = run_dir / "segmentation" / "overlays"
    ax = ov.save_png(
        ov.overlay_volume(ph.image, ph.label, affine=ph.affine, class_names=CT_CLASSES), ov_dir / "case 000_axial.png"
    )  # a space: links must be URL-encoded
    mt = ov.save_png(
        ov.montage(ph.image, ph.label, affine=ph.affine, class_names=CT_CLASSES, max_slices=4),
        ov_dir / "case 000_montage.png",
    )
    sl = ph.image[:, :, 8].T
    cam = ov.save_png(
        ov.heatmap_2d(sl, np.outer(np.hanning(48), np.hanning(48)), window="soft_tissue"),
        run_dir / "classification" / "cam_0.png",
    )
    det = ov.save_png(
        ov.markers_2d(sl, np.array([[10, 10], [30, 20]]), classes=[1, 2], window="soft_tissue"),
        run_dir / "detection" / "det_0.png",
    )
    cases = [
        ReviewCase(
            "case_000",
            "segmentation",
            thumbnail=str(ax),
            overlays=[str(ax), str(mt)],
            volumes_ml={"liver": 1234.5, "spleen": 210.25, "lesion": 3.5},
            metrics={"dice_liver": 0.931},
            uncertainty=0.12,
            outputs={"DICOM SEG": str(run_dir / "segmentation" / "case_000.seg.dcm")},
        ),
        ReviewCase(
            EVIL,
            "segmentation",
            thumbnail="segmentation/overlays/case 000_axial.png",  # relative path
            volumes_ml={"liver": 1000.0},
            uncertainty=0.81,
            needs_review=True,
        ),
        ReviewCase(
            "tile_007",
            "detection",
            thumbnail=str(det),
            counts={"nucleus": 132, "mitosis": 3},
            density_per_mm2={"nucleus": 410.0},
            metrics={"f1": 0.88},
            uncertainty=0.4,
        ),
        ReviewCase(
            "img_003",
            "classification",
            thumbnail=str(cam),
            cam=str(cam),
            prediction="malignant",
            probability=0.73,
            uncertainty=0.54,
            needs_review=True,
        ),
        ReviewCase(
            "case_bad",
            "segmentation",
            status="skipped",
            error="input/case_bad: FileFormatError: truncated pixel data <b>not bold</b>",
        ),
    ]
    return cases


@pytest.fixture
def sample_run(tmp_path) -> tuple[Path, list[ReviewCase]]:
    run_dir = tmp_path / "run"
    return run_dir, build_sample_run(run_dir)
