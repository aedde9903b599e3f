"""Where DICOM bytes come from: a file on disk or a member of a zip archive, read serially or in threads."""

from __future__ import annotations

import contextlib
import contextvars
import gc
import os
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

__all__ = [
    "Source",
    "source_from_str",
    "parallel_map",
    "collector_paused",
    "looks_like_dicom",
    "has_dicm_marker",
    "common_folder",
    "uid_for_message",
]

_T = TypeVar("_T")
_R = TypeVar("_R")

# Threads for reading files (headers and pixels). Measured on a local disk (benchmarks/io_load.py,
# 300 x 512^2 slices, 2 cores): serial 0.32 s warm / 4.2 s cold page cache, 8 threads 0.74 s / 4.5 s.
# pydicom's header parsing is pure Python (GIL-bound), so threads only add contention there; they
# pay off only where each read waits on the network (NAS / PACS exports). Opt in with
# MEDSEG_IO_THREADS=8 for such storage.
_MAX_WORKERS = max(1, int(os.environ.get("MEDSEG_IO_THREADS", "1") or 1))


@dataclass(frozen=True)
class Source:
    """One DICOM file: ``path`` on disk, or ``member`` of the zip archive at ``path``."""

    path: str
    member: str | None = None

    def __str__(self) -> str:
        return self.path if self.member is None else f"{self.path}!{self.member}"

    def read_bytes(self) -> bytes:
        """The whole file."""
        if self.member is None:
            return Path(self.path).read_bytes()
        with zipfile.ZipFile(self.path) as zf:
            return zf.read(self.member)

    def size(self) -> int:
        """File size in bytes."""
        if self.member is None:
            return os.path.getsize(self.path)
        with zipfile.ZipFile(self.path) as zf:
            return zf.getinfo(self.member).file_size


def source_from_str(s: str) -> Source:
    """The :class:`Source` that ``str(source)`` printed (``archive.zip!member`` for a zip member)."""
    if "!" in s and not os.path.exists(s):
        p, m = s.split("!", 1)
        return Source(p, m)
    return Source(s)


def parallel_map(fn: Callable[[_T], _R], items: Iterable[_T]) -> list[_R]:
    """``map`` over files: serial by default, a thread pool with MEDSEG_IO_THREADS > 1."""
    items = list(items)
    if _MAX_WORKERS <= 1 or len(items) <= 4:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=_MAX_WORKERS) as ex:
        # each call runs in a copy of the caller's context: the workers report to the caller's
        # medseg.io.safety capture (third-party warnings never escape from a worker thread)
        futures = [ex.submit(contextvars.copy_context().run, fn, x) for x in items]
        return [f.result() for f in futures]


_GC_LOCK = threading.Lock()
_gc_depth = 0  # blocks of collector_paused running (any thread)
_gc_was_enabled = False  # the collector's state when the outermost block began


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a batch of DICOM headers is read and planned.

    Why: each header pydicom parses adds a few hundred objects that stay alive (the series keeps
    its headers); that triggers full (generation 2) collections, and each walks every object of the
    process (several 100k once torch and MONAI are imported): 0.4 s of a 1-1.5 s load of 300 files,
    measured (``benchmarks/io_load.py``). Reference counting still frees every object that is not
    in a cycle; the collector is switched back on when the outermost block ends (nested blocks and
    blocks of other threads share one pause), and stays off if it was off before.
    """
    global _gc_depth, _gc_was_enabled
    with _GC_LOCK:
        if _gc_depth == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_depth += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _gc_depth -= 1
            if _gc_depth == 0 and _gc_was_enabled:
                gc.enable()


def looks_like_dicom(head: bytes) -> bool:
    """True when the first 132 bytes carry the DICOM Part 10 marker (``DICM`` after the preamble)."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def has_dicm_marker(src: Source) -> bool:
    """True when the file starts with a DICOM Part 10 preamble and marker (False if it cannot be read)."""
    try:
        if src.member is None:
            with open(src.path, "rb") as f:
                return looks_like_dicom(f.read(132))
        return looks_like_dicom(src.read_bytes()[:132])
    except Exception:
        return False


def common_folder(srcs: Sequence[Source]) -> str:
    """The folder (or archive) that holds all ``srcs``: what messages and :class:`SeriesInfo` name."""
    if srcs and srcs[0].member is not None:
        return srcs[0].path
    try:
        return os.path.commonpath([os.path.dirname(s.path) for s in srcs]) if srcs else ""
    except ValueError:
        return os.path.dirname(srcs[0].path)


def uid_for_message(value: object) -> str:
    """A UID for an error message, only if it is one.

    In a corrupt header the element can swallow the bytes that follow it (PatientName, PatientID),
    which must never reach a message.
    """
    text = str(value) if value is not None else ""
    if 0 < len(text) <= 64 and all(c.isdigit() or c == "." for c in text):
        return text
    return "unknown" if not text else "<not a valid UID>"
