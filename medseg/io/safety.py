"""What third-party readers say, made safe: captured warnings and log records, contained failures, clean text.

pydicom, highdicom and the pixel decoders warn, log and raise with the *values* of header elements
in their messages. In a damaged header an element can swallow the bytes that follow it (patient
name, ID, birth date), so those messages can carry PHI. Everything medseg shows or writes about a
file therefore goes through this module:

- :func:`third_party_quiet`: while medseg reads files, warnings and log records of pydicom,
  highdicom, pylibjpeg and the decoders are captured (nothing reaches stderr or the root logger)
  and re-emitted once through medseg's logger as *file path + a generic reason* (:func:`reason_of`),
  never the original text. Log records below WARNING (pydicom's debug mode prints every element
  value) are dropped.
- :func:`contained`: any exception of a decoder, including ``BaseException`` subclasses such as
  pyo3's ``PanicException`` (Rust decoders), becomes a :class:`~medseg.errors.FileFormatError`
  naming the file; only ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit`` pass through (a
  ``MemoryError`` while decoding one file is that file's error: the other cases of a cohort go on).
- :func:`safe_reason`: the text of a third-party exception for a message: type name plus the
  message with quoted values and long digit runs removed.
- :func:`clean_text`: free-text header values (SeriesDescription, Modality, segment names) for
  display: a value holding control characters is withheld (``"<invalid text>"``): it cannot be valid
  text and may hold the bytes of the following elements; longer values are cut to ``max_len``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from medseg.errors import FileFormatError, MedsegError

__all__ = [
    "INVALID_TEXT",
    "ThirdPartyNotes",
    "third_party_quiet",
    "reading_file",
    "contained",
    "reason_of",
    "safe_reason",
    "clean_text",
    "visible",
    "PASS_THROUGH",
]

log = logging.getLogger("medseg.io")

#: what :func:`clean_text` shows instead of a value that cannot be valid text
INVALID_TEXT = "<invalid text>"

#: exceptions :func:`contained` never converts (interrupts, interpreter exit)
PASS_THROUGH: tuple[type[BaseException], ...] = (KeyboardInterrupt, SystemExit, GeneratorExit)

#: the loggers of the readers whose records are captured (children such as ``pydicom.pixels`` included)
QUIET_LOGGERS = ("pydicom", "highdicom", "pylibjpeg", "libjpeg", "openjpeg", "rle", "nrrd", "tifffile", "PIL")

# C0 / C1 controls, DEL, zero-width and bidirectional-override characters, line / paragraph separators
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|b'[^']*'|`[^`]*`")
_LONG_DIGITS = re.compile(r"\d{6,}")

# (pattern, generic reason): the first pattern that matches a warning / log / error text gives its reason
_REASONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.IGNORECASE), r)
    for p, r in (
        (r"value representation|\bVR\b", "an element has a wrong or unknown value representation (VR)"),
        (r"charac?ter set|encoding|decode byte string|codec", "text in a wrong or unsupported character set"),
        (r"delimiter|sequence item|item with tag|undefined length", "damaged sequence / item delimiters"),
        (r"file meta|'DICM'|DICM prefix|group length|preamble", "the file meta header is not conformant"),
        (r"number of frames", "NumberOfFrames is invalid"),
        (
            r"pixel data|frame|padding|RLE|JPEG|J2K|codestream|photometric|bits stored|bits allocated|decod",
            "the pixel data do not match the header",
        ),
        (r"length", "an element length is wrong"),
        (r"invalid value|not valid|invalid|non-?conformant", "a header value is not valid"),
        (r"tag|element|keyword", "a header element (tag) is unknown or malformed"),
    )
)
_DEFAULT_REASON = "the header is not conformant"


def reason_of(text: str) -> str:
    """A generic reason for a third-party warning / log / error text (never the text itself)."""
    for pattern, reason in _REASONS:
        if pattern.search(text):
            return reason
    return _DEFAULT_REASON


def safe_reason(e: BaseException, limit: int = 160) -> str:
    """``"<ExceptionType>: <message>"`` with quoted values, long digit runs and control characters removed.

    For messages that describe pixel data / codestreams (decoders). Header parsing errors use
    :func:`reason_of` instead, which keeps no text of the original message at all.
    """
    first = (str(e).splitlines() or [""])[0]
    text = _LONG_DIGITS.sub("#", _QUOTED.sub("'…'", first))
    text = _CONTROL.sub("", text).strip()
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def clean_text(value: Any, max_len: int = 64) -> str:
    """A free-text header value for display: ``""`` if missing, :data:`INVALID_TEXT` if it holds
    control characters (newlines, ANSI escapes, NUL: not valid text, and in a damaged header the
    bytes of following elements), else stripped and cut to ``max_len`` characters."""
    if value is None:
        return ""
    text = str(value)
    if _CONTROL.search(text):
        return INVALID_TEXT
    text = text.strip()
    return text if len(text) <= max_len else text[: max_len - 1] + "…"


def visible(text: str) -> str:
    """``text`` with every control / bidi-override character replaced by ``?``: one line, no terminal escapes.

    For text that is not a header value (file paths, medseg's own messages) printed in a table.
    """
    return _CONTROL.sub("?", str(text))


@dataclass
class ThirdPartyNotes:
    """What the readers said while medseg read files: ``(file, reason)`` pairs, in order."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.items.append((_FILE.get() or "", reason_of(text)))

    def summary(self, where: str) -> list[str]:
        """One line per reason: ``"<file>: <reason>"`` or ``"<where>: <reason> (N files, e.g. <file>)"``."""
        by_reason: dict[str, list[str]] = {}
        for f, r in self.items:
            files = by_reason.setdefault(r, [])
            if f not in files:
                files.append(f)
        lines = []
        for r, files in by_reason.items():
            named = [f for f in files if f]
            if len(named) == 1:
                lines.append(f"{named[0]}: {r}")
            elif named:
                lines.append(f"{where}: {r} ({len(named)} files, e.g. {named[0]})")
            else:
                lines.append(f"{where}: {r}")
        return lines


_ACTIVE: contextvars.ContextVar[ThirdPartyNotes | None] = contextvars.ContextVar("medseg_io_notes", default=None)
_FILE: contextvars.ContextVar[str | None] = contextvars.ContextVar("medseg_io_file", default=None)
_LOCK = threading.RLock()


class _Collector(logging.Handler):
    """Stands in for the handlers of :data:`QUIET_LOGGERS` during a capture (records of other threads pass on)."""

    def __init__(self, saved: dict[str, tuple[list[logging.Handler], bool]]) -> None:
        super().__init__(level=logging.NOTSET)
        self.saved = saved

    def handle(self, record: logging.LogRecord) -> bool:
        notes = _ACTIVE.get()
        if notes is not None:
            if record.levelno >= logging.WARNING:
                notes.add(record.getMessage())
            return False
        # a record of code that is not reading for medseg (another thread): deliver it as usual
        top = record.name.split(".", 1)[0]
        handlers, propagate = self.saved.get(top, ([], True))
        for h in handlers:
            if record.levelno >= h.level:
                h.handle(record)
        if propagate:
            logging.getLogger().handle(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - handle() does the work
        pass


@contextlib.contextmanager
def third_party_quiet(where: str, *, emit: bool = True) -> Iterator[ThirdPartyNotes]:
    """Capture the warnings and log records of the readers while the block runs.

    On leaving the outermost block, each distinct reason is logged once on ``medseg.io`` at WARNING
    as ``"<file>: <generic reason>"`` (with ``emit=True``). Nested blocks, and the worker threads of
    :func:`medseg.io.dicom.source.parallel_map`, share the outermost block's notes. Blocks of
    different threads run one after the other (the warnings machinery is process-wide).

    Parameters
    ----------
    where : the file or folder named when a reason concerns several files.
    emit : log the reasons when the block ends (else the caller reads the returned notes).
    """
    if _ACTIVE.get() is not None:
        yield _ACTIVE.get()  # type: ignore[misc]
        return
    notes = ThirdPartyNotes()
    with _LOCK:
        token = _ACTIVE.set(notes)
        saved: dict[str, tuple[list[logging.Handler], bool]] = {}
        for name in QUIET_LOGGERS:
            lg = logging.getLogger(name)
            saved[name] = (list(lg.handlers), lg.propagate)
        collector = _Collector(saved)
        try:
            for name in QUIET_LOGGERS:
                lg = logging.getLogger(name)
                lg.handlers = [collector]
                lg.propagate = False
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                original = warnings.showwarning

                def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
                    if issubclass(category, ResourceWarning):
                        # raised when the garbage collector closes some other object (e.g. pydicom's DICOMDIR
                        # FileSet cleaning its temporary folder): not a note on the file being read. Python
                        # ignores these by default; so do we
                        return
                    active = _ACTIVE.get()
                    if active is not None:
                        active.add(str(message))
                    else:  # another thread's warning: shown as usual
                        original(message, category, *args, **kwargs)

                warnings.showwarning = show
                yield notes
        finally:
            for name, (handlers, propagate) in saved.items():
                lg = logging.getLogger(name)
                lg.handlers = handlers
                lg.propagate = propagate
            _ACTIVE.reset(token)
    if emit:
        for line in notes.summary(where):
            log.warning("%s (reported by the reader; details withheld: they can quote header values)", line)


@contextlib.contextmanager
def reading_file(name: str) -> Iterator[None]:
    """Attribute what the readers say inside the block to the file ``name`` (see :class:`ThirdPartyNotes`)."""
    token = _FILE.set(name)
    try:
        yield
    finally:
        _FILE.reset(token)


@contextlib.contextmanager
def contained(name: str, what: str = "cannot read the file") -> Iterator[None]:
    """Turn any failure inside the block into a :class:`~medseg.errors.FileFormatError` naming ``name``.

    medseg's own errors pass unchanged; :data:`PASS_THROUGH` exceptions too. Everything else,
    ``BaseException`` subclasses of extension modules included (pyo3's ``PanicException``), becomes
    ``FileFormatError("<name>: <what> (<safe reason>); the file may be damaged")``.
    """
    try:
        yield
    except MedsegError:
        raise
    except PASS_THROUGH:
        raise
    except BaseException as e:
        raise FileFormatError(f"{what} ({safe_reason(e)}); the file may be damaged", path=name) from None
