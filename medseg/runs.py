"""Run folders: ``runs/<name>/`` with the resolved config, ``run.json`` provenance, logs and outputs.

Layout::

    runs/<name>/
      config.yaml      the resolved config (after --set overrides and path resolution)
      run.json         versions, git revision, device, seed, config hash, start/end, stage timings, status
      run.log          the log of this run
      checkpoints/     best.pt, last.pt (tensors only; loaded with weights_only=True)
      predictions/ overlays/ report.html metrics.json ...   (what the pipeline writes)

An existing run folder is never silently overwritten: :class:`RunFolderExistsError` unless
``force=True`` (which moves the old folder aside to ``<name>.old-<timestamp>``) or ``resume=True``.
One exception, so that a retry after a crash needs no flags: a folder whose ``run.json`` says
``failed`` (or ``running`` by a process of this machine that no longer exists) is **reused** by the
next identical command (same command and same config hash or ``identity``): the failed attempt's
files move into ``<run>/failed-<timestamp>/`` (kept for its log) and the run starts again in place.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medseg.config import PipelineConfig, config_hash, config_to_yaml, resolve_paths
from medseg.errors import MissingFileError, RunFolderExistsError
from medseg.utils import atomic_write_text

__all__ = ["Run", "versions", "git_revision", "file_sha256", "open_run"]

log = logging.getLogger("medseg")


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def git_revision(path: Path | None = None) -> str | None:
    """The git commit of the medseg source tree (None when not in a git checkout)."""
    path = path or Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        rev = out.stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=path,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's content, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by another user
        return True
    return True


def _failed_attempt(path: Path, command: str, identity: str | None) -> str | None:
    """Why the run folder ``path`` may be reused by this command (a failed identical attempt), else None."""
    try:
        info = json.loads((path / "run.json").read_text())
    except (OSError, ValueError):
        return None
    if identity is None or info.get("command") != command or info.get("identity") != identity:
        return None
    status = info.get("status")
    if status == "failed":
        return "failed"
    pid, host = info.get("pid"), info.get("host")
    if status == "running" and host == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
        return "interrupted (its process no longer exists)"
    return None


def versions() -> dict[str, str]:
    """Versions of Python, medseg and the main libraries (those importable)."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("medseg", "torch", "monai", "numpy", "pydicom", "highdicom", "nibabel", "SimpleITK", "scikit-image"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


class Run:
    """One run folder. Use :meth:`create` (new run) or :meth:`open` (resume / read).

    ``with run.stage("train"):`` records the stage's wall time in run.json; :meth:`finish` records
    the end time and status. run.json is rewritten atomically after every change.
    """

    def __init__(self, path: Path, info: dict[str, Any]):
        self.path = Path(path)
        self.info = info
        self._log_handler: logging.Handler | None = None

    # -- construction ------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        config=None,
        *,
        force: bool = False,
        command: str = "",
        identity: str | None = None,
    ) -> Run:
        """Create a new run folder at ``path``.

        Parameters
        ----------
        path : the folder.
        config : the resolved config to save (``config.yaml``), or None.
        force : move an existing folder aside (``<name>.old-<timestamp>``) instead of failing.
        command : the command recorded in run.json (``train``, ``segment`` ...).
        identity : what makes two invocations "the same command" (default: the config hash);
            a folder left ``failed`` by the same command and identity is reused (see the module doc).

        Raises RunFolderExistsError if it exists and is not empty (unless ``force``, or a failed
        identical attempt).
        """
        path = Path(path)
        if identity is None and config is not None:
            identity = config_hash(config)
        if path.exists() and any(path.iterdir()):
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            why = None if force else _failed_attempt(path, command, identity)
            if why is not None:
                keep = path / f"failed-{stamp}"
                keep.mkdir()
                for p in list(path.iterdir()):
                    if p != keep and not p.name.startswith("failed-") and p.name != "data":
                        p.rename(keep / p.name)
                log.warning(
                    "%s: the previous identical attempt %s; its files are in %s; starting again", path, why, keep
                )
            elif not force:
                raise RunFolderExistsError(
                    "run folder already exists; choose another name (--set name=...), pass --out, "
                    "use --resume to continue it, or --force to move it aside",
                    path,
                )
            else:
                aside = path.with_name(f"{path.name}.old-{stamp}")
                path.rename(aside)
                log.warning("moved existing run folder %s aside to %s", path, aside)
        path.mkdir(parents=True, exist_ok=True)
        info: dict[str, Any] = {
            "command": command,
            "identity": identity,
            "status": "running",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start": _now(),
            "end": None,
            "versions": versions(),
            "git_revision": git_revision(),
            "device": None,
            "seed": getattr(config, "seed", None),
            "config_hash": None,
            "timings_s": {},
        }
        run = cls(path, info)
        if config is not None:
            run.save_config(config)
        run._attach_log()
        run._write()
        return run

    @classmethod
    def open(cls, path: str | Path) -> Run:
        """Open an existing run folder (to resume or to read its outputs)."""
        path = Path(path)
        info_path = path / "run.json"
        if not info_path.is_file():
            raise MissingFileError("not a medseg run folder (no run.json)", path)
        info = json.loads(info_path.read_text())
        run = cls(path, info)
        run._attach_log()
        return run

    # -- content -----------------------------------------------------------------------
    def save_config(self, config: PipelineConfig) -> None:
        """Save the resolved config; relative paths (of a config built in code) become absolute
        against the working directory, so the saved config means the same from any folder."""
        resolve_paths(config, Path.cwd(), check=False)

        atomic_write_text(self.path / "config.yaml", config_to_yaml(config))
        self.info["config_hash"] = config_hash(config)
        self.info["seed"] = getattr(config, "seed", None)
        self._write()

    def set(self, **kw: Any) -> None:
        """Record extra fields in run.json (e.g. ``device=...``)."""
        self.info.update(kw)
        self._write()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a pipeline stage; accumulated into run.json ``timings_s[name]``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            t = self.info.setdefault("timings_s", {})
            t[name] = round(t.get(name, 0.0) + dt, 3)
            self._write()

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as JSON into the run folder (atomically)."""
        return atomic_write_text(self.path / name, json.dumps(obj, indent=2, default=str) + "\n")

    def subdir(self, name: str) -> Path:
        d = self.path / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def finish(self, status: str = "ok", **kw: Any) -> None:
        """Record the end time and final status; detach the log file."""
        self.info.update(kw)
        self.info["status"] = status
        self.info["end"] = _now()
        self._write()
        self._detach_log()

    # -- internals ---------------------------------------------------------------------
    def _write(self) -> None:
        atomic_write_text(self.path / "run.json", json.dumps(self.info, indent=2, default=str) + "\n")

    def _attach_log(self) -> None:
        logger = logging.getLogger("medseg")
        h = logging.FileHandler(self.path / "run.log", encoding="utf-8")
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        h.setLevel(logging.INFO)
        logger.addHandler(h)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
        self._log_handler = h

    def _detach_log(self) -> None:
        if self._log_handler is not None:
            logging.getLogger("medseg").removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.info.get("status") == "running":
            if exc is None:
                self.finish("ok")
            else:
                self.finish("failed", error=f"{type(exc).__name__}: {exc}")


def open_run(
    config, out: str | Path | None = None, *, force: bool = False, resume: bool = False, command: str = ""
) -> Run:
    """The run folder of a pipeline: ``out`` or ``<config.output_dir>/<config.name>``.

    New run: created (never silently overwriting). ``resume=True``: the existing folder is opened,
    the (possibly overridden) config saved again, and run.json marked running.
    """
    path = Path(out) if out is not None else Path(config.output_dir) / config.name
    if resume:
        run = Run.open(path)
        run.save_config(config)
        run.set(status="running", resumed_at=_now(), command=command, pid=os.getpid(), host=socket.gethostname())
        return run
    return Run.create(path, config, force=force, command=command)
