"""HTML review report: content, escaping, relative links, PHI keys, atomic write."""

from __future__ import annotations

import base64
import json
import re

import pytest

from medseg.errors import InputError
from medseg.review.cases import ReviewCase
from medseg.review.report import write_report


def _data_json(doc: str) -> dict:
    m = re.search(r'<script type="application/json" id="medseg-data">(.*?)</script>', doc, re.S)
    assert m, "embedded JSON missing"
    return json.loads(m.group(1))


def test_report_content(sample_run):
    run_dir, cases = sample_run
    p = write_report(
        run_dir,
        cases,
        title="medseg demo",
        summary={
            "segmentation": {"status": "ok", "seconds": 3.2, "n_cases": 2},
            "detection": {"status": "failed", "error": "RuntimeError: boom"},
            "explain": {"status": "not built"},
        },
    )
    assert p == run_dir / "report.html"
    doc = p.read_text(encoding="utf-8")
    assert sorted(f.name for f in run_dir.iterdir()) == [
        "classification",
        "detection",
        "report.html",
        "segmentation",
    ]  # no temp file left
    # summary at the top: done / skipped (and why) / flagged; stages
    assert "<b id=n-done>4</b>" in doc and "<b id=n-skipped>1</b>" in doc and "<b id=n-review>2</b>" in doc
    assert doc.index("id=summary") < doc.index("id=cases")
    assert "truncated pixel data" in doc and "RuntimeError: boom" in doc and "not built" in doc
    # per-case values
    assert "1,234 mL" in doc and "210.2 mL" in doc  # volumes per class
    assert "nucleus" in doc and ">132<" in doc.replace(" ", "")  # counts
    assert "malignant" in doc and "p = 0.73" in doc  # prediction + probability
    assert "dice_liver" in doc and "0.931" in doc  # metrics
    assert doc.count("<span class=flag>needs review</span>") == 2
    assert 'data-key="cam"' in doc  # Grad-CAM column shown because a case has one
    # feedback controls for each case + exports
    assert doc.count("data-decision=accept") == len(cases)
    assert doc.count("data-decision=needs_correction") == len(cases)
    assert "id=export-csv" in doc and "id=export-json" in doc
    assert "localStorage" in doc and "new Blob" in doc
    # no network: CSP forbids it and nothing points outside
    assert "connect-src &#x27;none&#x27;" in doc
    assert "http://" not in doc and "https://" not in doc


def test_links_relative_and_thumbnails_embedded(sample_run):
    run_dir, cases = sample_run
    doc = write_report(run_dir, cases).read_text(encoding="utf-8")
    assert str(run_dir) not in doc  # absolute paths made relative
    assert 'href="segmentation/overlays/case%20000_axial.png"' in doc
    assert 'href="segmentation/overlays/case%20000_montage.png"' in doc
    assert 'href="segmentation/case_000.seg.dcm"' in doc  # outputs linked too
    png = (run_dir / "detection" / "det_0.png").read_bytes()
    assert "data:image/png;base64," + base64.b64encode(png).decode() in doc
    # a missing image becomes a note, not a broken <img>
    cases.append(ReviewCase("case_gone", "segmentation", thumbnail=str(run_dir / "nope.png")))
    doc = write_report(run_dir, cases).read_text(encoding="utf-8")
    assert "image missing" in doc and "nope.png" not in doc


def test_all_text_escaped(sample_run, evil_case_id):
    run_dir, cases = sample_run
    cases.append(
        ReviewCase(
            "x",
            "segmentation",
            volumes_ml={'<img src=x onerror="alert(1)">': 1.0},
            metrics={"</script><script>alert(2)</script>": 0.5},
            prediction="<i>cat</i>",
        )
    )
    doc = write_report(
        run_dir,
        cases,
        title="<title>evil</title>",
        summary={"<b>stage</b>": {"status": "failed", "error": "</script><script>alert(3)</script>"}},
    ).read_text(encoding="utf-8")
    # exactly our three script elements (two JSON data blocks, one script) and no injected tags
    assert doc.count("<script") == 3 and doc.count("</script>") == 3
    assert "window.__pwned" in doc and "<script>window.__pwned" not in doc
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;&quot;&#x27;&amp;" in doc
    assert "&lt;b&gt;not bold&lt;/b&gt;" in doc
    assert "<img src=x" not in doc and "<i>cat</i>" not in doc and "<title>evil" not in doc
    assert "&lt;title&gt;evil&lt;/title&gt;" in doc
    # embedded JSON: safe in a script element, and round-trips the exact texts
    data = _data_json(doc)
    assert evil_case_id in [c["case_id"] for c in data["cases"]]
    assert data["title"] == "<title>evil</title>"


def test_phi_keys_dropped_unless_asked(tmp_path):
    summary = {
        "segmentation": {"status": "ok", "PatientName": "DOE^JANE", "patient_id": "P123", "n_cases": 1},
        "PatientID": "P123",
    }
    doc = write_report(tmp_path, [ReviewCase("case_000", "segmentation")], summary=summary).read_text()
    assert "DOE^JANE" not in doc and "P123" not in doc and "n_cases" in doc
    doc = write_report(tmp_path, [ReviewCase("case_000", "segmentation")], summary=summary, show_phi=True).read_text()
    assert "DOE^JANE" in doc and "P123" in doc


def test_demo_signature_and_edge_cases(tmp_path):
    stages = {
        "data": {"status": "ok", "seconds": 0.4, "datalist": str(tmp_path / "data" / "dataset.json"), "best": None},
        "segmentation": {"status": "not built"},
        "detection": {"status": "failed", "error": "ValueError: x"},
    }
    p = write_report(tmp_path, [], title="medseg demo", summary=stages)
    doc = p.read_text()
    assert "<b id=n-done>0</b>" in doc and "medseg demo" in doc
    assert "datalist: data/dataset.json" in doc and "best: n/a" in doc and str(tmp_path) not in doc
    # dict cases and non-finite numbers do not break the page
    p = write_report(
        tmp_path,
        [{"case_id": "a", "task": "classification", "uncertainty": float("nan"), "probability": 0.5, "extra_key": 1}],
    )
    data = _data_json(p.read_text())
    assert data["cases"][0]["uncertainty"] is None
    with pytest.raises(InputError, match="ReviewCase"):
        write_report(tmp_path, [42])
