"""``medseg demo``: generate the embedded synthetic data and run every capability end to end.

Stages, in order; each is ``run_demo(out: Path, quick: bool) -> dict`` in its module and returns
``{"summary": {...}, "cases": [ReviewCase, ...]}``. A stage whose module is not built yet is listed
as such; a stage that fails is reported and the others still run. The last step writes one HTML
review report over all stages' cases.
"""

from __future__ import annotations

import importlib
import logging
import time
import traceback
from pathlib import Path
from typing import Any

from medseg.errors import MedsegError
from medseg.runs import Run

log = logging.getLogger("medseg.demo")

#: (stage name, module providing run_demo)
STAGES = [
    ("data", "medseg.data.demo"),
    ("segmentation", "medseg.tasks.segmentation"),
    ("detection", "medseg.tasks.detection"),
    ("classification", "medseg.tasks.classification"),
    ("explain", "medseg.explain.demo"),
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
            try:
                mod = importlib.import_module(module)
            except ModuleNotFoundError as e:
                if e.name and module.startswith(e.name):
                    stages[name] = {"status": "not built"}
                    log.info("demo stage %s: not built in this version", name)
                    continue
                raise
            fn = getattr(mod, "run_demo", None)
            if fn is None:
                stages[name] = {"status": "not built"}
                continue
            t0 = time.perf_counter()
            try:
                with run.stage(name):
                    res = fn(run.path / name, quick=quick) or {}
                stages[name] = {"status": "ok", "seconds": round(time.perf_counter() - t0, 1), **res.get("summary", {})}
                cases += res.get("cases", [])
            except (MedsegError, RuntimeError, ValueError, OSError) as e:
                log.error("demo stage %s failed: %s", name, e)
                log.debug(traceback.format_exc())
                stages[name] = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
        report = None
        try:
            from medseg.review.report import write_report  # type: ignore[attr-defined]

            report = write_report(run.path, cases, title="medseg demo", summary=stages)
        except ImportError:
            log.info("review report: not built in this version")
        run.write_json("demo_summary.json", {"stages": stages, "report": str(report) if report else None})
        failed = [k for k, v in stages.items() if v.get("status") == "failed"]
        run.set(stages=stages)
        if failed:
            run.finish("failed", failed_stages=failed)
    return {"run_dir": run.path, "stages": stages, "report": report}
