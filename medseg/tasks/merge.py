"""``medseg merge``: join the output folders of a sharded cohort into one table, one summary, one report.

Each shard folder (``medseg segment|detect|classify|explain ... --shard i/n``, or one rank under
torchrun) holds ``<command>.json`` (one row per case) and ``run.json`` (with ``shard``). The merged
folder gets the same files a single run writes (``<command>.csv``, ``<command>.json``,
``report.html``, the summary in ``run.json``) through :func:`medseg.tasks.cohort.finish_cohort`, with
the rows back in input order (shard ``i`` of ``n`` holds the cases ``i, i + n, ...``). The outputs
of each case stay where the shard wrote them (their absolute paths are in the table).

The merged report lists every case with its status, flags and output links; the pictures of each
case are in its shard's own ``report.html``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medseg.errors import InputError, MissingFileError
from medseg.runs import Run
from medseg.tasks.cohort import COLUMNS, CaseResult, CohortSummary, finish_cohort

__all__ = ["merge_shards", "COMMAND_TASKS"]

log = logging.getLogger("medseg.cohort")

#: the task shown in the merged report, per cohort command
COMMAND_TASKS = {
    "segment": "segmentation",
    "detect": "detection",
    "classify": "classification",
    "explain": "explain",
}


def _read_shard(folder: Path) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """(command, rows, run.json) of one shard folder."""
    info_path = folder / "run.json"
    if not info_path.is_file():
        raise MissingFileError("not a medseg output folder (no run.json)", folder)
    info = json.loads(info_path.read_text())
    command = str(info.get("command") or "")
    table = folder / f"{command}.json"
    if command not in COMMAND_TASKS or not table.is_file():
        raise InputError(
            f"not the output of a cohort command (command {command!r}; expected segment, detect, classify "
            "or explain with its <command>.json)",
            folder,
        )
    if info.get("status") == "running":
        raise InputError("this shard has not finished (run.json status: running)", folder)
    rows = json.loads(table.read_text())
    if not isinstance(rows, list):
        raise InputError(f"{table.name} is not a list of rows", folder)
    return command, rows, info


def _result(row: dict[str, Any]) -> CaseResult:
    """The :class:`CaseResult` of one ``<command>.json`` row."""
    flags = [f for f in str(row.get("flags") or "").split(";") if f]
    ood = [r for r in str(row.get("ood_reasons") or "").split("; ") if r]
    return CaseResult(
        case_id=str(row["case_id"]),
        source=str(row.get("source", "")),
        split=row.get("split") or None,
        status=str(row.get("status", "ok")),
        reason=str(row.get("reason") or ""),
        outputs=dict(row.get("outputs") or {}),
        flags=flags,
        ood_reasons=ood,
        values={k: v for k, v in row.items() if k not in COLUMNS},
    )


def _in_input_order(shards: list[tuple[Path, list[dict[str, Any]], dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rows of complete round-robin shards put back in input order; others concatenated as given."""
    infos = [s[2].get("shard") for s in shards]
    if not all(isinstance(i, dict) for i in infos):
        log.warning("merge: some folders have no shard record; rows are concatenated in the order given")
        return [r for _, rows, _ in shards for r in rows]
    counts = {int(i["count"]) for i in infos}  # type: ignore[index]
    indices = sorted(int(i["index"]) for i in infos)  # type: ignore[index]
    if len(counts) != 1:
        raise InputError(f"the folders come from different shardings (n = {sorted(counts)})", shards[0][0])
    n = counts.pop()
    if indices != list(range(n)):
        missing = sorted(set(range(n)) - set(indices))
        dup = sorted({i for i in indices if indices.count(i) > 1})
        why = f"missing shard(s) {', '.join(f'{i}/{n}' for i in missing)}" if missing else ""
        why += ("; " if why and dup else "") + (f"shard(s) given twice: {dup}" if dup else "")
        raise InputError(f"incomplete set of shards: {why}", shards[0][0])
    by_index = {int(s[2]["shard"]["index"]): s[1] for s in shards}
    total = sum(len(r) for r in by_index.values())
    ordered: list[dict[str, Any]] = []
    for g in range(total):  # global position g is the (g // n)-th case of shard g % n
        rows = by_index[g % n]
        if g // n >= len(rows):
            raise InputError(f"shard {g % n}/{n} has fewer rows than a round-robin split gives", shards[0][0])
        ordered.append(rows[g // n])
    return ordered


def merge_shards(folders: Sequence[str | Path], out: str | Path, *, force: bool = False) -> CohortSummary:
    """Join shard output folders into ``out`` (one table, one summary, one report).

    Parameters
    ----------
    folders : the shards' output folders (any order; all shards of one command and one ``n``).
    out : the merged folder (created; never overwritten unless ``force``).
    force : move an existing ``out`` aside.

    Returns
    -------
    the merged :class:`~medseg.tasks.cohort.CohortSummary` (its ``exit_code`` as the commands').

    Raises
    ------
    MissingFileError / InputError: a folder is not a finished cohort output, the commands differ, or
    shards are missing or repeated.
    """
    shards = []
    commands = set()
    for f in folders:
        command, rows, info = _read_shard(Path(f))
        commands.add(command)
        shards.append((Path(f), rows, info))
    if not shards:
        raise InputError("nothing to merge: give the shards' output folders", Path(out))
    if len(commands) != 1:
        raise InputError(f"the folders come from different commands ({sorted(commands)})", shards[0][0])
    command = commands.pop()
    rows = _in_input_order(shards)
    seconds = sum(float((s[2].get("summary") or {}).get("seconds") or 0.0) for s in shards)
    identity = json.dumps(sorted(str(Path(f).resolve()) for f in folders))
    with Run.create(Path(out), None, force=force, command="merge", identity=identity) as run:
        run.set(merged_from=[str(Path(f).resolve()) for f in folders], merged_command=command)
        return finish_cohort(
            run,
            [_result(r) for r in rows],
            command=command,
            task=COMMAND_TASKS[command],
            title=f"medseg {command} review ({len(shards)} shards merged)",
            details={"shards": len(shards)},
            seconds=seconds,
        )
