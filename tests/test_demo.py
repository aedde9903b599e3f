"""`medseg demo --quick` end to end, from a relative output folder (as `make demo` runs it)."""

from __future__ import annotations

import json

from medseg.cli import main
from medseg.demo import STAGES


def test_quick_demo_runs_every_stage(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--quick", "--out", "runs/demo"]) == 0
    out = capsys.readouterr().out
    assert f"demo outputs: {tmp_path / 'runs' / 'demo'}" in out and "review report:" in out
    summary = json.loads((tmp_path / "runs" / "demo" / "demo_summary.json").read_text())
    assert set(summary["stages"]) == {name for name, _ in STAGES}
    for name, st in summary["stages"].items():
        assert st["status"] == "ok", (name, st)
    assert summary["stages"]["segmentation"]["skipped"] == 0
    assert summary["stages"]["segmentation"]["mean_dice"] is not None
    html = (tmp_path / "runs" / "demo" / "report.html").read_text()
    for task in ("segmentation", "detection", "classification", "explain"):
        assert task in html
    info = json.loads((tmp_path / "runs" / "demo" / "run.json").read_text())
    assert info["status"] == "ok" and set(info["timings_s"]) >= {"data", "segmentation", "detection"}
