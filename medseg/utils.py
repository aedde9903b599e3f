"""Small shared helpers: atomic file writes, seeding, logging setup."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "atomic_write_bytes",
    "atomic_write_csv",
    "seed_everything",
    "get_logger",
]


@contextlib.contextmanager
def atomic_write(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    Outputs are never half-written: a crash or exception leaves the old file (or none) in place.
    ``suffix`` defaults to the target's full suffix (``.nii.gz``), so libraries that pick the
    format from the extension still see the right one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
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


def atomic_write_csv(path: str | Path, header: list[str], rows) -> Path:
    """Write a CSV table (``header`` then ``rows``, each a sequence of cells) atomically."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (and MONAI's global determinism helper)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass


def get_logger(name: str = "medseg") -> logging.Logger:
    """The package logger (library modules log; only the CLI prints)."""
    return logging.getLogger(name)
