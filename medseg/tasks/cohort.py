"""The one per-case engine of the cohort commands: ``segment``, ``detect``, ``classify``, ``explain``, ``evaluate``.

A command hands :func:`run_cohort` its cases and one function that processes one case; the engine

- runs the cases in order with a progress bar (tqdm, with an ETA; quiet when stderr is not a terminal);
- isolates every case: **any** exception of one case (``BaseException`` subclasses such as a decoder's
  ``PanicException`` included; only ``KeyboardInterrupt`` and ``SystemExit`` stop the run) marks
  that case ``skipped`` with a one-line reason, removes the files that case had written (every
  output path is registered with :class:`CaseOutputs` before it is written), and the next case runs;
- and :func:`finish_cohort` writes the same outputs for every command: ``<command>.csv`` and
  ``<command>.json`` (one row per case, the common columns :data:`COLUMNS` first, then the task's
  own), ``report.html`` (the review report) and the summary in ``run.json``.

The summary (:class:`CohortSummary`) has the same keys in every command (``command``, ``cases``,
``ok``, ``skipped``, ``needs_review``, ``ood``, ``skipped_cases``, ``table``, ``json``, ``report``,
``seconds``, ``exit_code``) plus the task's own figures. ``exit_code`` is what ``medseg`` exits
with: 0 every case ok, 1 some skipped, 3 every case failed (2 is a usage or config error).

Overlap (issue 14): ``prefetch`` reads the next case and a ``process`` that returns :class:`Pending`
(its outputs still to write) has them written by the same background thread while the next case
runs, as nnU-Net's predictor does; at most one case is being written while the next one computes,
the rows stay in input order and a failed write skips only its own case (its files removed).
``MEDSEG_COHORT_OVERLAP=0`` (or ``run_cohort(..., overlap=False)``) does every case in turn: the
outputs are the same either way.

Shards (issue 14): within :func:`sharding` (``--shard i/n`` of the predict commands, or rank i of n
under torchrun) :func:`run_cohort` processes only the cases ``i, i + n, i + 2n ...`` of the expanded
input list (round robin, as nnU-Net's ``-part_id/-num_parts``: deterministic, and slow cases spread
evenly), and :func:`finish_cohort` records ``shard`` in run.json so that ``medseg merge`` can put the
rows of every shard back in input order.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from medseg.errors import MedsegError
from medseg.review.cases import ReviewCase
from medseg.review.report import write_report
from medseg.runs import Run
from medseg.tasks.inputs import CaseInput
from medseg.utils import atomic_write_records, atomic_write_text

__all__ = [
    "COLUMNS",
    "EXIT_OK",
    "EXIT_SOME_SKIPPED",
    "EXIT_ALL_FAILED",
    "CaseOutputs",
    "CaseResult",
    "Pending",
    "CohortSummary",
    "one_line_reason",
    "run_cohort",
    "finish_cohort",
    "Shard",
    "parse_shard",
    "sharding",
    "active_shard",
]

log = logging.getLogger("medseg.cohort")

#: the columns every command's table starts with, in this order
COLUMNS: tuple[str, ...] = ("case_id", "source", "split", "status", "reason", "flags", "ood_reasons", "outputs")

#: exit codes of the cohort commands (2 = usage or config error, from the CLI)
EXIT_OK, EXIT_SOME_SKIPPED, EXIT_ALL_FAILED = 0, 1, 3

_REASON_MAX = 300


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based): the cases ``index, index + count, ...`` of a cohort."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= i < n")

    def take(self, cases: Sequence[Any]) -> list[Any]:
        """This shard's cases, in input order (round robin over the whole list)."""
        return list(cases[self.index :: self.count])

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"i/n"`` (0 <= i < n, e.g. a SLURM array index and the array's size) -> :class:`Shard`."""
    try:
        i, n = (int(x) for x in str(text).strip().split("/"))
        return Shard(i, n)
    except ValueError:
        raise ValueError(f"{text!r}: use i/n with 0 <= i < n (e.g. 0/4 ... 3/4)") from None


_SHARD: contextvars.ContextVar[Shard | None] = contextvars.ContextVar("medseg_shard", default=None)


@contextlib.contextmanager
def sharding(shard: Shard | None) -> Iterator[None]:
    """Within the block, :func:`run_cohort` processes only ``shard``'s cases (None: all)."""
    token = _SHARD.set(shard)
    try:
        yield
    finally:
        _SHARD.reset(token)


def active_shard() -> Shard | None:
    """The shard set by :func:`sharding`, or None."""
    return _SHARD.get()


def _root_cause(e: BaseException) -> BaseException:
    """The medseg error inside a chain (MONAI wraps transform errors in RuntimeError), else the deepest cause."""
    cur: BaseException | None = e
    last = e
    seen = 0
    while cur is not None and seen < 20:
        if isinstance(cur, MedsegError):
            return cur
        last = cur
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return last if str(e).startswith("applying transform") else e


def one_line_reason(e: BaseException) -> str:
    """``"<ExceptionType>: <first line of the message>"`` (at most 300 characters) of the cause of ``e``."""
    inner = _root_cause(e)
    lines = [ln.strip() for ln in str(inner).splitlines() if ln.strip()]
    text = f"{type(inner).__name__}: {lines[0] if lines else 'no message'}"
    return text if len(text) <= _REASON_MAX else text[: _REASON_MAX - 3] + "..."


class CaseOutputs:
    """The files (and folders) one case writes, so that a failed case leaves none behind.

    Register every output path with :meth:`path` before writing it, then :meth:`add` it under a kind
    (``labels``, ``dicom_seg``, ``overlay`` ...) once written. ``root`` is the run folder.
    """

    def __init__(self, root: Path, case_id: str, preloaded: Future | None = None):
        self.root = Path(root)
        self.case_id = case_id
        self.outputs: dict[str, str] = {}
        self._paths: list[Path] = []
        self._preloaded = preloaded

    def loaded(self, load: Callable[[], Any]) -> Any:
        """The case's input as :func:`run_cohort`'s ``prefetch`` read it in the background, else ``load()``.

        A failure of the background read is raised here, inside the case (so it skips this case only).
        """
        return self._preloaded.result() if self._preloaded is not None else load()

    def path(self, *parts: str | Path) -> Path:
        """``root/<parts>``, registered as an output of this case (its folder is created)."""
        p = self.root.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        self._paths.append(p)
        return p

    def add(self, kind: str, path: str | Path) -> str:
        """Record a written output under ``kind``; returns its absolute path."""
        p = Path(path).resolve()
        if p not in self._paths and Path(path) not in self._paths:
            self._paths.append(p)
        self.outputs[kind] = str(p)
        return str(p)

    def remove_all(self) -> list[Path]:
        """Delete every registered output that exists; returns what was removed."""
        removed = []
        for p in self._paths:
            try:
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
                else:
                    continue
                removed.append(p)
            except OSError as e:  # never let clean-up hide the case's own error
                log.warning("%s: could not remove the partial output %s (%s)", self.case_id, p.name, e)
        self.outputs.clear()
        return removed


@dataclass
class CaseResult:
    """The result of one case in a cohort command: one table row and one review-report row.

    Attributes
    ----------
    case_id, source, split : medseg's case id, the input it was read from, its datalist list (or None).
    status : ``"ok"`` or ``"skipped"`` (then ``reason`` says why, on one line).
    outputs : ``{kind: absolute path}`` of the files written for the case.
    flags : ``"needs_review"``, ``"ood"`` (out of distribution) ...
    ood_reasons : why the case differs from the training data (one item per check that failed).
    values : the task's own columns (volumes, probabilities, counts, metrics ...).
    review : the row of the review report (None: built from the fields above).
    seconds : processing time.
    """

    case_id: str
    source: str
    split: str | None = None
    status: str = "ok"
    reason: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    ood_reasons: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    review: ReviewCase | None = None
    seconds: float = 0.0

    @classmethod
    def of(cls, case: CaseInput, **kw: Any) -> CaseResult:
        """A result for ``case`` (its id, source and split filled in)."""
        return cls(case_id=case.case_id, source=case.source, split=case.split, **kw)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def row(self) -> dict[str, Any]:
        """The table row: the :data:`COLUMNS` then the task's values (outputs as ``kind=path; ...`` in CSV)."""
        return {
            "case_id": self.case_id,
            "source": self.source,
            "split": self.split or "",
            "status": self.status,
            "reason": self.reason,
            "flags": ";".join(self.flags),
            "ood_reasons": "; ".join(self.ood_reasons),
            "outputs": dict(self.outputs),
            **self.values,
        }

    def review_case(self, task: str) -> ReviewCase:
        """The review-report row (the task's own, with status, flags and OOD reasons filled in)."""
        rc = self.review or ReviewCase(case_id=self.case_id, task=task)
        rc.outputs = {**self.outputs, **rc.outputs}
        rc.status = self.status
        rc.error = self.reason or None
        rc.split = self.split
        rc.ood = list(self.ood_reasons)
        rc.needs_review = rc.needs_review or "needs_review" in self.flags
        return rc


@dataclass
class CohortSummary:
    """What a cohort command returns (as :meth:`to_dict`) and records in run.json.

    The keys are the same in every command; ``details`` holds the task's own figures (merged into
    the dict).
    """

    command: str
    cases: int
    ok: int
    skipped: int
    needs_review: list[str]
    ood: list[str]
    skipped_cases: dict[str, str]
    table: str
    json: str
    report: str | None
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 every case ok, 1 some skipped, 3 every case failed (or no case at all)."""
        if self.cases == 0 or self.ok == 0:
            return EXIT_ALL_FAILED
        return EXIT_SOME_SKIPPED if self.skipped else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "command": self.command,
            "cases": self.cases,
            "ok": self.ok,
            "skipped": self.skipped,
            "needs_review": list(self.needs_review),
            "ood": list(self.ood),
            "skipped_cases": dict(self.skipped_cases),
            "table": self.table,
            "json": self.json,
            "report": self.report,
            "seconds": round(self.seconds, 2),
            "exit_code": self.exit_code,
        }
        out.update({k: v for k, v in self.details.items() if k not in out})
        return out


@dataclass(frozen=True)
class Pending:
    """What ``process`` returns when the rest of its case (writing the outputs) can run in the background.

    ``finish()`` writes the case's files (registered with the case's :class:`CaseOutputs`, as in
    ``process``) and returns its :class:`CaseResult`. It runs after ``process`` returns, in the
    cohort's background thread while the next case computes (or at once when overlap is off), so it
    must only use what ``process`` computed for this case (no state shared with the next one).
    """

    finish: Callable[[], CaseResult]


#: the environment variable that turns the overlap of reading / writing with the network off ("0")
OVERLAP_ENV = "MEDSEG_COHORT_OVERLAP"


def _overlap_default() -> bool:
    return os.environ.get(OVERLAP_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _settle(
    case: CaseInput, files: CaseOutputs, step: Callable[[], CaseResult | Pending], *, defer: bool = False
) -> CaseResult | Pending:
    """Run ``step`` (the case's work, or the rest of it) isolated: any failure -> a skipped result, files removed.

    A :class:`Pending` is finished here too, unless ``defer`` (then it is returned as it is, for the
    writer). ``KeyboardInterrupt`` and ``SystemExit`` remove the case's files and stop the cohort.
    """
    try:
        res = step()
        if isinstance(res, Pending):
            if defer:
                return res
            res = res.finish()
        res.outputs = {**files.outputs, **res.outputs}
        return res
    except (KeyboardInterrupt, SystemExit):
        files.remove_all()
        raise
    except BaseException as e:  # noqa: BLE001  one case (even a decoder panic) never stops the cohort
        removed = files.remove_all()
        res = CaseResult.of(case, status="skipped", reason=one_line_reason(e))
        log.error(
            "%s: skipped: %s%s",
            case.case_id,
            res.reason,
            f" ({len(removed)} partial output(s) removed)" if removed else "",
        )
        log.debug("%s: traceback", case.case_id, exc_info=e)
        return res


def _progress(total: int, desc: str, enabled: bool | None) -> Any:
    """A tqdm bar on stderr (ETA included), disabled when stderr is not a terminal (logs, CI, pipes)."""
    on = sys.stderr.isatty() if enabled is None else enabled
    return tqdm(total=total, desc=desc, unit="case", disable=not on, leave=False, dynamic_ncols=True)


def run_cohort(
    cases: Sequence[CaseInput],
    process: Callable[[CaseInput, CaseOutputs], CaseResult | Pending],
    *,
    out: str | Path,
    command: str,
    progress: bool | None = None,
    prefetch: Callable[[CaseInput], Any] | None = None,
    overlap: bool | None = None,
) -> list[CaseResult]:
    """Run ``process`` on every case; a failing case is skipped (its outputs removed), the others run.

    Parameters
    ----------
    cases : the cases, from :func:`medseg.tasks.inputs.expand_inputs`.
    process : ``process(case, files) -> CaseResult | Pending``; it registers every file it writes with
        ``files.path(...)`` and records it with ``files.add(kind, path)``. Returning :class:`Pending`
        hands the rest of the case (writing its outputs) to the background thread.
    out : the run folder (root of :class:`CaseOutputs`).
    command : name shown on the progress bar and in the log.
    progress : show the progress bar (default: when stderr is a terminal).
    prefetch : ``prefetch(case) -> input``: read the next case's input in a background thread while
        ``process`` works on the current one (nnU-Net's predictor overlaps them the same way); the
        process gets it with ``files.loaded(fallback)``. At most two inputs are held at a time.
    overlap : read ahead (``prefetch``) and write behind (:class:`Pending`) in one background thread
        (default: on unless ``MEDSEG_COHORT_OVERLAP=0``); off, every case is read, computed and written
        in turn. The results and files are the same either way.

    Returns
    -------
    one :class:`CaseResult` per case, in input order.
    """
    shard = active_shard()
    if shard is not None:
        total = len(cases)
        cases = shard.take(cases)
        log.info("%s: shard %s: %d of %d case(s)", command, shard, len(cases), total)
    results: list[CaseResult | None] = [None] * len(cases)
    if overlap is None:
        overlap = _overlap_default()
    # one background thread, first in first out: it reads case k+1 (submitted when case k starts), then
    # writes case k (submitted when its network is done), then reads case k+2 ...: reads never wait
    # behind more than one write, and at most one case is being written while the next one computes
    pool = ThreadPoolExecutor(1, thread_name_prefix="medseg-cohort-io") if overlap else None
    ahead: Future | None = pool.submit(prefetch, cases[0]) if pool is not None and prefetch and cases else None
    writing: tuple[int, Future, float] | None = None  # (case index, its write, seconds of its process)

    def settled(k: int, res: CaseResult, seconds: float) -> None:
        res.seconds = round(seconds, 3)
        results[k] = res
        bar.update(1)

    def drain() -> None:  # wait for the case being written (its failure is already its own result)
        nonlocal writing
        if writing is not None:
            k, fut, before = writing
            writing = None
            res, took = fut.result()
            settled(k, res, before + took)

    with _progress(len(cases), command, progress) as bar, pool or contextlib.nullcontext():
        try:
            for k, case in enumerate(cases):
                files = CaseOutputs(Path(out), case.case_id, preloaded=ahead)
                if pool is not None and prefetch is not None:  # the next case loads while this one runs
                    ahead = pool.submit(prefetch, cases[k + 1]) if k + 1 < len(cases) else None
                t0 = time.perf_counter()
                res = _settle(case, files, functools.partial(process, case, files), defer=pool is not None)
                before = time.perf_counter() - t0
                drain()  # at most one case in the writer
                if isinstance(res, Pending) and pool is not None:
                    writing = (k, pool.submit(_timed, case, files, res), before)
                elif isinstance(res, CaseResult):
                    settled(k, res, before)
            drain()
        except BaseException:
            if pool is not None:  # a case being written finishes (its files are written atomically)
                pool.shutdown(wait=True, cancel_futures=True)
            raise
    return [r for r in results if r is not None]


def _timed(case: CaseInput, files: CaseOutputs, pending: Pending) -> tuple[CaseResult, float]:
    """The writer's job: finish ``pending`` isolated; its result and seconds."""
    t0 = time.perf_counter()
    res = _settle(case, files, pending.finish)
    assert isinstance(res, CaseResult)  # finished: not deferred
    return res, time.perf_counter() - t0


def finish_cohort(
    run: Run,
    results: Sequence[CaseResult],
    *,
    command: str,
    task: str,
    title: str | None = None,
    details: Mapping[str, Any] | None = None,
    report: bool = True,
    seconds: float | None = None,
    table: str | None = None,
) -> CohortSummary:
    """Write ``<command>.csv`` / ``.json``, ``report.html`` and the summary (run.json) of a cohort.

    Parameters
    ----------
    run : the command's run folder.
    results : from :func:`run_cohort`.
    command : ``segment``, ``detect``, ``classify``, ``explain`` or ``evaluate`` (the table's name).
    task : the task shown in the report (``segmentation`` ...).
    title : report title (default: ``medseg <command> review``).
    details : the task's own summary figures.
    report : write ``report.html``.
    seconds : wall time of the cohort (default: the sum of the cases').
    table : the name of the per-case table and JSON (default: ``command``).
    """
    rows = [r.row() for r in results]
    cols = list(COLUMNS)
    for r in rows:
        cols += [k for k in r if k not in cols]
    csv_rows = [{**r, "outputs": "; ".join(f"{k}={v}" for k, v in r["outputs"].items())} for r in rows]
    stem = table or command
    table_path = atomic_write_records(run.path / f"{stem}.csv", csv_rows, cols)
    js = atomic_write_text(run.path / f"{stem}.json", json.dumps(rows, indent=2, default=str) + "\n")
    skipped = {r.case_id: r.reason for r in results if not r.ok}
    summary = CohortSummary(
        command=command,
        cases=len(results),
        ok=len(results) - len(skipped),
        skipped=len(skipped),
        needs_review=[r.case_id for r in results if r.ok and "needs_review" in r.flags],
        ood=[r.case_id for r in results if "ood" in r.flags],
        skipped_cases=skipped,
        table=str(table_path),
        json=str(js),
        report=None,
        seconds=float(seconds if seconds is not None else sum(r.seconds for r in results)),
        details=dict(details or {}),
    )
    if report:
        shown = {
            k: v
            for k, v in summary.to_dict().items()
            if k not in ("table", "json", "report", "skipped_cases", "command") and not isinstance(v, Mapping)
        }
        summary.report = str(
            write_report(
                run.path,
                [r.review_case(task) for r in results],
                title=title or f"medseg {command} review",
                summary={command: shown},
            )
        )
    shard = active_shard()
    if shard is not None:
        run.set(shard={"index": shard.index, "count": shard.count, "cases": len(results)})
    run.set(summary={k: v for k, v in summary.to_dict().items() if not isinstance(v, Mapping) or k != "per_image"})
    if summary.skipped:
        run.set(status_detail=f"{summary.skipped} of {summary.cases} case(s) skipped")
    return summary
