"""Small shared helpers: atomic file writes, seeding, logging setup."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import random
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "atomic_write_bytes",
    "atomic_write_csv",
    "atomic_write_records",
    "csv_cell",
    "seed_everything",
    "get_logger",
]


def _umask() -> int:
    """The process umask (read by setting it and putting it back: the only portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    Outputs are never half-written: a crash or exception leaves the old file (or none) in place.
    The file gets the permissions of any new file (``0666`` minus the process umask).
    ``suffix`` defaults to the target's full suffix (``.nii.gz``), so libraries that pick the
    format from the extension still see the right one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    # mkstemp creates 0600 files; outputs follow the process umask like any other file (0644 under 022)
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text atomically (temporary file + rename)."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write bytes atomically (temporary file + rename)."""
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


#: first characters that make a spreadsheet read a cell as a formula (OWASP "CSV injection")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A cell as written by :func:`atomic_write_csv`: text that a spreadsheet would run as a formula
    (it starts with ``= + - @``, a tab or a carriage return) gets a leading ``'``; numbers, and text
    that is a number (``"-1.5"``), are unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        try:
            float(value)
        except ValueError:
            return "'" + value
    return value


def atomic_write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a CSV table (``header`` then ``rows``, each a sequence of cells) atomically.

    The one CSV writer of medseg: every table a command writes goes through it (or
    :func:`atomic_write_records`). Every cell goes through :func:`csv_cell`, so a case id or an
    error message starting with ``=`` never becomes a formula when the table is opened in a
    spreadsheet.
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([csv_cell(c) for c in header])
    w.writerows([csv_cell(c) for c in row] for row in rows)
    return atomic_write_text(path, buf.getvalue())


def atomic_write_records(
    path: str | Path, records: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None
) -> Path:
    """Write dicts as a CSV table atomically; columns: ``columns`` or the union of keys in first-seen order.

    A key missing from a record is an empty cell.
    """
    cols: list[str] = list(columns) if columns is not None else []
    if columns is None:
        for r in records:
            cols += [k for k in r if k not in cols]
    return atomic_write_csv(path, cols, ([r.get(c, "") for c in cols] for r in records))


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and PyTorch (CPU and every CUDA device).

    It does not switch on deterministic algorithms (``torch.use_deterministic_algorithms``): runs on
    the CPU repeat exactly; on CUDA some kernels stay non-deterministic.
    """
    import torch  # heavy: imported here so that the ground-floor helpers stay light

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def get_logger(name: str = "medseg") -> logging.Logger:
    """The package logger (library modules log; only the CLI prints)."""
    return logging.getLogger(name)
