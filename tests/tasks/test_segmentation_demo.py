"""The segmentation demo stage (quick mode): trains briefly, segments held-out phantoms and the DICOM series."""

from pathlib import Path

import nibabel as nib
import numpy as np

from medseg.data.synthetic import ct_phantom, write_phantom_dicom
from medseg.demo.segmentation import run_demo


def test_run_demo_quick(tmp_path):
    ph = ct_phantom(seed=999, shape=(48, 48, 24), spacing=(4.0, 4.0, 6.0))
    write_phantom_dicom(ph, tmp_path / "data" / "ct_dicom" / "study1" / "series1")
    res = run_demo(tmp_path / "segmentation", quick=True)
    s = res["summary"]
    assert s["cases"] >= 2 and s["skipped"] == 0 and s["dicom_series_segmented"]
    assert s["mean_dice"] is not None and s["train_seconds"] > 0
    ids = [c.case_id for c in res["cases"]]
    assert "series1" in ids
    dicom_case = res["cases"][ids.index("series1")]
    out = nib.load(dicom_case.outputs["labels"])
    assert np.allclose(out.affine, ph.affine, atol=1e-4) and out.shape == ph.image.shape
    for c in res["cases"]:
        assert Path(c.outputs["labels"]).is_absolute()
        assert "liver" in c.volumes_ml and c.uncertainty is not None
    assert any("dice_mean" in c.metrics for c in res["cases"])
    # the DICOM input also got a DICOM SEG that references the source series and holds the same voxels
    import highdicom as hd
    import pydicom

    seg = hd.seg.segread(dicom_case.outputs["dicom_seg"])
    src = pydicom.dcmread(
        next((tmp_path / "data" / "ct_dicom" / "study1" / "series1").iterdir()), stop_before_pixels=True
    )
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
    assert seg.SegmentSequence[0].SegmentLabel == "liver"
    labels = np.asarray(out.dataobj)
    assert int(seg.pixel_array.sum()) == int((labels == 1).sum()) > 0
