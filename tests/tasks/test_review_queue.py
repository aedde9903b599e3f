"""medseg review-queue on a real `medseg segment` output: feedback first, then OOD, then uncertainty."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from medseg.cli import main
from medseg.data.synthetic import ct_phantom, write_phantom_nifti
from medseg.errors import InputError
from medseg.tasks.review_queue import review_queue

pytestmark = pytest.mark.slow  # trains a tiny model and segments 4 cases (~25 s on 2 cores)


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, tiny_seg_run) -> Path:
    tmp = tmp_path_factory.mktemp("queue")
    inputs = [
        write_phantom_nifti(ct_phantom(seed=40 + i, shape=(32, 32, 16), spacing=(6.0, 6.0, 9.0)), tmp / f"c{i}.nii.gz")[
            0
        ]
        for i in range(4)
    ]
    assert (
        main(
            ["segment", "--model", str(tiny_seg_run), *map(str, inputs), "--out", str(tmp / "pred"), "--device", "cpu"]
        )
        == 0
    )
    return tmp / "pred"


def test_queue_orders_feedback_then_ood_then_uncertainty(predicted, tmp_path, capsys):
    rows = json.loads((predicted / "segment.json").read_text())
    by_unc = sorted(rows, key=lambda r: -float(r["review_score"]))
    least = by_unc[-1]["case_id"]  # the least uncertain case, marked "needs correction" by the radiologist
    most = by_unc[0]["case_id"]  # the most uncertain one, accepted
    fb = tmp_path / "feedback.json"
    fb.write_text(json.dumps({"feedback": [
        {"case_id": least, "decision": "needs_correction", "comment": "missed a lesion"},
        {"case_id": most, "decision": "accept", "comment": ""},
    ]}))  # fmt: skip
    assert main(["review-queue", str(predicted), "--feedback", str(fb), "--out", str(tmp_path / "q.csv")]) == 0
    assert "4 cases" in capsys.readouterr().out
    with (tmp_path / "q.csv").open() as f:
        queue = list(csv.DictReader(f))
    assert [q["case_id"] for q in queue][0] == least and queue[0]["why"].startswith("needs correction")
    assert queue[-1]["case_id"] == most and queue[-1]["decision"] == "accept"
    middle = [q for q in queue[1:-1]]
    ood = [q for q in middle if "ood" in q["flags"]]
    assert middle[: len(ood)] == ood  # out-of-distribution cases before the in-distribution ones
    rest = [float(q["review_score"]) for q in middle[len(ood) :]]
    assert rest == sorted(rest, reverse=True)
    assert all(Path(q["labels"]).is_file() for q in queue)


def test_queue_without_feedback_and_bad_folder(predicted, tmp_path):
    queue = review_queue(predicted, out=tmp_path / "q.csv")
    scores = [(q["flags"].count("ood"), float(q["review_score"])) for q in queue]
    assert scores == sorted(scores, reverse=True)
    with pytest.raises(InputError, match="no case table"):
        review_queue(tmp_path)
