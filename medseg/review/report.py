"""The HTML review report: one self-contained ``report.html`` per run, for radiologists.

:func:`write_report` turns a list of :class:`~medseg.review.cases.ReviewCase` into one HTML file in
the run folder:

- a summary at the top (cases done, cases skipped and why, the per-stage summary dict);
- one row per case: thumbnail, volumes per class (mL) / object counts, prediction and probability,
  metrics against a reference when one exists, the uncertainty score and the "needs review" flag,
  the out-of-distribution check (why a case looks unlike the training data), the Grad-CAM map,
  links to the full-size overlays and other outputs;
- for 3D cases, a viewer under the thumbnail: three orthogonal planes through the structure and a
  slice slider over pre-rendered slices (keyboard arrows move through the slices, ``o`` or the
  button toggles the label overlay, a second slider sets its opacity);
- sortable columns (vanilla JavaScript; default order: out-of-distribution cases first, then the
  most uncertain, skipped cases last);
- radiologist feedback per case (accept / needs correction + a comment), saved in the browser's
  ``localStorage`` and exportable as CSV or JSON (downloaded via a Blob: no server, no network).

Self-contained: thumbnails and Grad-CAM maps up to :data:`EMBED_MAX_BYTES` and the viewer's slices
(up to :data:`STACK_MAX_BYTES` per case) are embedded as ``data:`` URIs, full-size overlays are
linked relative to the report (absolute paths inside the run folder are made relative), and a
Content-Security-Policy forbids any network access. Every text is HTML-escaped, the embedded JSON
cannot close its ``<script>`` element, and keys that look like patient identifiers (PatientName,
PatientID, ...) are dropped unless ``show_phi=True``.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import html
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import quote

from medseg import __version__
from medseg.errors import InputError
from medseg.review.cases import ReviewCase
from medseg.review.report_assets import REPORT_CSS, REPORT_JS
from medseg.utils import atomic_write_text

__all__ = ["write_report", "EMBED_MAX_BYTES", "STACK_MAX_BYTES", "PHI_KEYS"]

log = logging.getLogger("medseg.review.report")

#: images up to this size are embedded as data: URIs (thumbnails, Grad-CAM maps); larger ones are linked
EMBED_MAX_BYTES = 300_000

#: slice stacks of the viewer up to this size (per case) are embedded; larger ones are left out (logged)
STACK_MAX_BYTES = 4_000_000

#: dict keys (lower case, without "_", "-", " ") treated as patient identifiers and dropped unless show_phi
PHI_KEYS = frozenset(
    {
        "patientname",
        "patientid",
        "patientsname",
        "patientbirthdate",
        "patientsbirthdate",
        "otherpatientids",
        "otherpatientnames",
        "patientaddress",
        "patientsaddress",
        "accessionnumber",
        "patient",
        "mrn",
        "patientmothersbirthname",
        "patientsmothersbirthname",
        "issuerofpatientid",
    }
)

_MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".webp": "image/webp",
}


# --------------------------------------------------------------------------------------- helpers
def _e(x: Any) -> str:
    """HTML-escape any value's text (quotes included: safe in attributes too)."""
    return html.escape("" if x is None else str(x), quote=True)


def _is_phi_key(k: Any) -> bool:
    return str(k).lower().replace("_", "").replace("-", "").replace(" ", "") in PHI_KEYS


def _scrub(obj: Any, show_phi: bool) -> Any:
    """Drop patient-identifier keys from nested dicts (unless show_phi)."""
    if show_phi:
        return obj
    if isinstance(obj, Mapping):
        return {k: _scrub(v, show_phi) for k, v in obj.items() if not _is_phi_key(k)}
    if isinstance(obj, (list, tuple)):
        return [_scrub(v, show_phi) for v in obj]
    return obj


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _fmt(x: Any, digits: int = 3) -> str:
    if isinstance(x, bool) or x is None:
        return "" if x is None else ("yes" if x else "no")
    if isinstance(x, int):
        return str(x)
    v = _num(x)
    if v is None:
        return str(x)
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{max(1, digits - 2)}f}"


def _json_for_script(obj: Any) -> str:
    """JSON safe inside a <script> element: no "</script>", "<!--" or "&" can appear literally."""
    s = json.dumps(obj, ensure_ascii=False, default=str, allow_nan=False)
    return (
        s.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _safe_json_value(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Mapping):
        return {str(k): _safe_json_value(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_safe_json_value(v) for v in x]
    return x


class _Paths:
    """Resolve ReviewCase paths (absolute or relative to the run folder) into links / data URIs."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir.resolve()

    def resolve(self, p: str | os.PathLike) -> Path:
        p = Path(p)
        return p if p.is_absolute() else self.run_dir / p

    def href(self, p: str | os.PathLike) -> str:
        """Relative URL (percent-encoded, forward slashes) from the report to the file."""
        full = self.resolve(p)
        try:
            rel = os.path.relpath(full, self.run_dir)
        except ValueError:  # other drive on Windows
            return full.as_uri()
        return quote(Path(rel).as_posix())

    def display(self, p: str | os.PathLike) -> str:
        """A path for display: relative to the run folder when inside it, else as given."""
        full = Path(p)
        try:
            return full.resolve().relative_to(self.run_dir).as_posix() or "."
        except (ValueError, OSError):
            return str(p)

    def img_src(self, p: str | os.PathLike) -> str | None:
        """data: URI for a small image, else a relative link; None when the file is missing."""
        full = self.resolve(p)
        if not full.is_file():
            log.warning("review report: image %s is missing; its cell shows a note instead", full.name)
            return None
        mime = _MIME.get(full.suffix.lower())
        if mime and full.stat().st_size <= EMBED_MAX_BYTES:
            return f"data:{mime};base64," + base64.b64encode(full.read_bytes()).decode("ascii")
        return self.href(p)


def _as_case(c: ReviewCase | Mapping[str, Any]) -> ReviewCase:
    if isinstance(c, ReviewCase):
        return c
    if isinstance(c, Mapping):
        known = {f.name for f in fields(ReviewCase)}
        unknown = set(c) - known
        if unknown:
            log.debug("review report: ignoring unknown case keys %s", sorted(unknown))
        return ReviewCase(**{k: v for k, v in c.items() if k in known})
    raise InputError(f"write_report expects ReviewCase objects (or dicts), got {type(c).__name__}")


# --------------------------------------------------------------------------------------- HTML pieces
def _kv_list(d: Mapping[str, Any], unit: str = "", digits: int = 3) -> str:
    if not d:
        return ""
    items = "".join(f"<li><span class=k>{_e(k)}</span> {_e(_fmt(v, digits))}{_e(unit)}</li>" for k, v in d.items())
    return f"<ul class=kv>{items}</ul>"


def _summary_value(v: Any, paths: _Paths | None = None) -> str:
    if isinstance(v, Mapping):
        return "; ".join(f"{k}: {_summary_value(x, paths)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(_summary_value(x, paths) for x in v)
    if v is None:
        return "n/a"
    if isinstance(v, str) and paths is not None and os.path.isabs(v):
        return paths.display(v)
    return _fmt(v)


def _summary_html(cases: list[ReviewCase], summary: Mapping[str, Any] | None, paths: _Paths) -> str:
    ok = [c for c in cases if c.status == "ok"]
    skipped = [c for c in cases if c.status != "ok"]
    flagged = [c for c in ok if c.needs_review]
    by_task: dict[str, int] = {}
    for c in cases:
        by_task[c.task] = by_task.get(c.task, 0) + 1
    parts = [
        "<section id=summary><h2>Summary</h2><ul class=counts>",
        f"<li><b id=n-done>{len(ok)}</b> cases done</li>",
        f"<li><b id=n-skipped>{len(skipped)}</b> skipped</li>",
        f"<li><b id=n-review>{len(flagged)}</b> flagged for review</li>",
        "<li>by task: " + _e(", ".join(f"{k} {v}" for k, v in by_task.items()) or "none") + "</li></ul>",
    ]
    if skipped:
        parts.append("<h3>Skipped cases</h3><table class=skipped><tr><th>case</th><th>task</th><th>why</th></tr>")
        parts += [
            f"<tr><td>{_e(c.case_id)}</td><td>{_e(c.task)}</td><td class=err>{_e(c.error or c.status)}</td></tr>"
            for c in skipped
        ]
        parts.append("</table>")
    if summary:
        parts.append("<h3>Stages</h3><table class=stages><tr><th>stage</th><th>status</th><th>details</th></tr>")
        for k, v in summary.items():
            if isinstance(v, Mapping):
                status = v.get("status", "")
                rest = {kk: vv for kk, vv in v.items() if kk != "status"}
                cls = " class=failed" if status == "failed" else ""
                parts.append(
                    f"<tr{cls}><td>{_e(k)}</td><td>{_e(status)}</td><td>{_e(_summary_value(rest, paths))}</td></tr>"
                )
            else:
                parts.append(f"<tr><td>{_e(k)}</td><td></td><td>{_e(_summary_value(v, paths))}</td></tr>")
        parts.append("</table>")
    parts.append("</section>")
    return "".join(parts)


def _img_cell(paths: _Paths, p: str | None, alt: str, link_full: bool = True) -> tuple[str, str]:
    if not p:
        return "", ""
    src = paths.img_src(p)
    if src is None:
        return "<span class=missing>image missing</span>", "0"
    img = f'<img src="{_e(src)}" alt="{_e(alt)}" loading="eager">'
    if link_full:
        img = f'<a href="{_e(paths.href(p))}" target="_blank" rel="noopener">{img}</a>'
    return img, "1"


_COLUMNS = [  # (key, header, tooltip, always shown)
    ("case", "Case", "medseg case id", True),
    ("task", "Task", "", True),
    ("status", "Status", "ok or skipped (why)", True),
    ("thumb", "Image", "thumbnail; click for full size", True),
    ("cam", "Grad-CAM", "where the classifier looked", False),
    ("findings", "Findings", "volumes per class (mL), object counts, densities", False),
    ("prediction", "Prediction", "predicted class (probability)", False),
    ("metrics", "Metrics", "against the reference, when one exists", False),
    ("split", "Split", "the datalist list of the case", False),
    ("ood", "Data check", "out of distribution: how the case differs from the training data", False),
    ("uncertainty", "Uncertainty", "higher = less certain", True),
    ("review", "Flag", "needs review: uncertainty above the run's calibrated threshold, or out of distribution", True),
    ("feedback", "Feedback", "your decision, saved in this browser", True),
    ("files", "Files", "full-size overlays and outputs", False),
]


def _case_cells(c: ReviewCase, paths: _Paths) -> dict[str, tuple[str, str]]:
    """key -> (cell html, sort value)."""
    cells: dict[str, tuple[str, str]] = {}
    cells["case"] = (f"<span class=cid>{_e(c.case_id)}</span>", c.case_id)
    cells["task"] = (_e(c.task), c.task)
    status = _e(c.status)
    if c.error:
        status += f"<div class=err>{_e(c.error)}</div>"
    cells["status"] = (status, c.status)
    thumb, has = _img_cell(paths, c.thumbnail, f"{c.case_id} thumbnail")
    cells["thumb"] = (thumb + _viewer_html(c, paths), has)
    cells["split"] = (_e(c.split or ""), c.split or "")
    if c.ood:
        items = "".join(f"<li>{_e(r)}</li>" for r in c.ood)
        cells["ood"] = (f"<span class=ood>out of distribution</span><ul class=why>{items}</ul>", str(len(c.ood)))
    else:
        cells["ood"] = ("", "0")
    find = ""
    if c.volumes_ml:
        find += "<div class=sub>volume</div>" + _kv_list(c.volumes_ml, " mL", 3)
    if c.counts:
        find += "<div class=sub>count</div>" + _kv_list(c.counts)
    if c.density_per_mm2:
        find += "<div class=sub>per mm²</div>" + _kv_list(c.density_per_mm2, "", 3)
    total = sum(_num(v) or 0.0 for v in (c.volumes_ml or c.counts or {}).values())
    cells["findings"] = (find, f"{total:.6g}" if find else "")
    pred = ""
    if c.prediction is not None:
        pred = f"<b>{_e(c.prediction)}</b>"
    if c.probability is not None:
        pred += f" <span class=prob>p = {_e(_fmt(c.probability))}</span>"
    cells["prediction"] = (pred, "" if c.probability is None else _fmt(c.probability, 6))
    cells["metrics"] = (_kv_list(c.metrics), next((_fmt(v, 6) for v in c.metrics.values()), "") if c.metrics else "")
    u = _num(c.uncertainty)
    if u is None:
        cells["uncertainty"] = ("<span class=na>n/a</span>", "")
    else:
        w = max(0.0, min(1.0, u)) * 100
        cells["uncertainty"] = (f'{_e(_fmt(u))}<div class=bar><i style="width:{w:.0f}%"></i></div>', repr(u))
    flags = ("<span class=flag>needs review</span>" if c.needs_review else "") + (
        " <span class=flag>OOD</span>" if c.ood else ""
    )
    cells["review"] = (flags.strip(), str(int(c.needs_review) + 2 * int(bool(c.ood))))
    cells["cam"] = _img_cell(paths, c.cam, f"{c.case_id} Grad-CAM")
    links = []
    for p in c.overlays:
        links.append(f'<a href="{_e(paths.href(p))}" target="_blank" rel="noopener">{_e(Path(p).name)}</a>')
    for kind, p in (c.outputs or {}).items():
        links.append(f'<a href="{_e(paths.href(p))}" target="_blank" rel="noopener">{_e(kind)}</a>')
    cells["files"] = ("<br>".join(links), str(len(links)))
    cid = _e(c.case_id)
    cells["feedback"] = (
        f'<div class=fb data-case="{cid}">'
        f"<button type=button class=acc data-decision=accept>accept</button>"
        f"<button type=button class=cor data-decision=needs_correction>needs correction</button>"
        f'<textarea rows=2 placeholder="comment" aria-label="comment for {cid}"></textarea>'
        f"<div class=saved></div></div>",
        "",
    )
    return cells


def _viewer_html(c: ReviewCase, paths: _Paths) -> str:
    """The 3D viewer under a thumbnail: three planes and the slice slider (filled in by the script)."""
    if not c.planes and not c.stack:
        return ""
    cid = _e(c.case_id)
    planes = "".join(
        f'<img src="{_e(src)}" alt="{cid} {_e(Path(p).stem.rsplit("_", 1)[-1])}">'
        for p in c.planes
        if (src := paths.img_src(p)) is not None
    )
    stack = ""
    if c.stack:
        stack = (
            f'<div class=stack tabindex=0 data-case="{cid}" aria-label="slices of {cid}">'
            "<div class=frame><img class=base alt=slice><img class=ov alt=overlay></div>"
            "<div class=ctl><input class=pos type=range min=0 value=0 aria-label=slice>"
            "<span class=num></span><button type=button class=ovbtn>overlay on</button>"
            "<input class=alpha type=range min=0 max=100 value=100 aria-label='overlay opacity'>"
            "</div><div class=leg></div></div>"
        )
    return (
        f"<details class=viewer><summary>planes &amp; slices</summary><div class=planes>{planes}</div>{stack}</details>"
    )


def _stacks(records: list[ReviewCase], paths: _Paths) -> dict[str, Any]:
    """{case id: slice stack} of the cases with a stack file (embedded in the report)."""
    out: dict[str, Any] = {}
    for c in records:
        if not c.stack:
            continue
        f = paths.resolve(c.stack)
        if not f.is_file() or f.stat().st_size > STACK_MAX_BYTES:
            log.warning(
                "review report: slice viewer of %s left out (missing or over %d bytes)", c.case_id, STACK_MAX_BYTES
            )
            continue
        try:
            out[c.case_id] = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            log.warning("review report: slice viewer of %s left out (%s)", c.case_id, e)
    return out


def _order(records: list[ReviewCase]) -> list[ReviewCase]:
    """Out-of-distribution cases first, then the most uncertain; cases without a score, then skipped, last."""

    def key(c: ReviewCase) -> tuple[int, int, int, float]:
        u = _num(c.uncertainty)
        return (c.status != "ok", not c.ood, u is None, -(u or 0.0))

    return sorted(records, key=key)


def write_report(
    run_dir: str | os.PathLike,
    cases: Iterable[ReviewCase | Mapping[str, Any]],
    *,
    title: str = "medseg review",
    summary: Mapping[str, Any] | None = None,
    show_phi: bool = False,
    filename: str = "report.html",
) -> Path:
    """Write the self-contained HTML review report ``run_dir/report.html``.

    Parameters
    ----------
    run_dir : the run folder; the report is written into it and every link is relative to it.
    cases : :class:`ReviewCase` objects (or dicts with the same keys). Image paths may be absolute
        or relative to ``run_dir``.
    title : page title.
    summary : per-stage (or any) summary, e.g. ``{"segmentation": {"status": "ok", "seconds": 12}}``;
        shown at the top.
    show_phi : keep keys that look like patient identifiers (PatientName, PatientID, ...) in the
        summary; by default they are dropped. medseg never puts patient identifiers into a
        ReviewCase, so case rows never hold any.
    filename : name of the HTML file inside ``run_dir``.

    Returns
    -------
    Path of the report, written atomically (temporary file + rename).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    records = _order([_as_case(c) for c in cases])
    summary = _scrub(dict(summary or {}), show_phi)
    paths = _Paths(run_dir)
    report_id = hashlib.sha256(f"{paths.run_dir}|{title}".encode()).hexdigest()[:16]
    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    rows = [(c, _case_cells(c, paths)) for c in records]
    shown = [col for col in _COLUMNS if col[3] or any(cells[col[0]][0] for _, cells in rows)]

    head = "".join(f'<th data-key="{k}" title="{_e(tip)}">{_e(h)}</th>' for k, h, tip, _ in shown)
    body = []
    for c, cells in rows:
        cls = "skipped" if c.status != "ok" else ("review" if (c.needs_review or c.ood) else "")
        tds = "".join(f'<td class="c-{k}" data-v="{_e(cells[k][1])}">{cells[k][0]}</td>' for k, _, _, _ in shown)
        flagged = 1 if (c.needs_review or c.ood) else 0
        body.append(f'<tr class="{cls}" data-case="{_e(c.case_id)}" data-review="{flagged}">{tds}</tr>')

    data = {
        "title": str(title),
        "report_id": report_id,
        "generated": generated,
        "medseg_version": __version__,
        "cases": [
            {
                "case_id": c.case_id,
                "task": c.task,
                "status": c.status,
                "uncertainty": _num(c.uncertainty),
                "needs_review": bool(c.needs_review),
                "ood": list(c.ood),
            }
            for c in records
        ],
    }
    stacks = _stacks(records, paths)
    csp = (
        "default-src 'none'; img-src data: 'self' file:; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; connect-src 'none'; form-action 'none'; base-uri 'none'"
    )
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{_e(title)}</title>
<style>{REPORT_CSS}</style></head>
<body>
<h1>{_e(title)}</h1>
<div class=meta>generated {_e(generated)} by medseg {_e(__version__)} &middot; {len(records)} cases</div>
{_summary_html(records, summary, paths)}
<section id=review><h2>Cases</h2>
<div class=toolbar>
<label><input type=checkbox id=only-review> only cases flagged for review</label>
<button type=button id=export-csv>export feedback CSV</button>
<button type=button id=export-json>export feedback JSON</button>
<button type=button id=clear-feedback>clear feedback</button>
<span class=meta>feedback is saved in this browser only; export it to keep it</span>
</div>
<table id=cases class=cases><thead><tr>{head}</tr></thead>
<tbody>
{"".join(body)}
</tbody></table>
</section>
<script type="application/json" id="medseg-data">{_json_for_script(_safe_json_value(data))}</script>
<script type="application/json" id="medseg-stacks">{_json_for_script(_safe_json_value(stacks))}</script>
<script>{REPORT_JS}</script>
</body></html>
"""
    out = atomic_write_text(run_dir / filename, doc)
    log.info(
        "review report: %d cases (%d skipped) -> %s", len(records), sum(c.status != "ok" for c in records), out.name
    )
    return out
