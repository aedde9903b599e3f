"""``medseg demo``: generate the embedded synthetic data and run every capability end to end.

Stages, in order; each is ``run_demo(out: Path, quick: bool) -> dict`` in its module of
:mod:`medseg.demo` and returns ``{"summary": {...}, "cases": [ReviewCase, ...]}``. A stage that fails
is reported and the others still run. The last step writes one HTML review report over all stages'
cases.
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Any

from medseg.demo import classification, data, detection, explain, segmentation
from medseg.errors import MedsegError
from medseg.review.report import write_report
from medseg.runs import Run

log = logging.getLogger("medseg.demo")

#: (stage name, module providing run_demo), in the order they run
STAGES = [
    ("data", data),
    ("segmentation", segmentation),
    ("detection", detection),
    ("classification", classification),
    ("explain", explain),
]


def run_demo(
    out: str | Path = "runs/demo", *, quick: bool = False, force: bool = False, only: list[str] | None = None
) -> dict[str, Any]:
    """Run the demo into ``out``; returns ``{"run_dir", "stages": {name: status/summary}, "report"}``."""
    run = Run.create(Path(out).absolute(), force=force, command="demo")
    stages: dict[str, Any] = {}
    cases: list = []
    with run:
        for name, module in STAGES:
            if only and name not in only:
                continue
            t0 = time.perf_counter()
            try:
                with run.stage(name):
                    res = module.run_demo(run.path / name, quick=quick) or {}
                stages[name] = {"status": "ok", "seconds": round(time.perf_counter() - t0, 1), **res.get("summary", {})}
                cases += res.get("cases", [])
            except (MedsegError, RuntimeError, ValueError, OSError) as e:
                log.error("demo stage %s failed: %s", name, e)
                log.debug(traceback.format_exc())
                stages[name] = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
        report = write_report(run.path, cases, title="medseg demo", summary=stages)
        run.write_json("demo_summary.json", {"stages": stages, "report": str(report) if report else None})
        failed = [k for k, v in stages.items() if v.get("status") == "failed"]
        run.set(stages=stages)
        if failed:
            run.finish("failed", failed_stages=failed)
    return {"run_dir": run.path, "stages": stages, "report": report}
