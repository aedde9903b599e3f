"""Every ```python block in README.md and docs/*.md runs as written.

The blocks of one file run in order, in one namespace, in a fresh working directory that holds
what the docs refer to: ``configs/`` (a copy of the repository's), ``study/CT_series/`` (a DICOM
CT series of the synthetic phantom) and ``study/ct.nii.gz`` (the same phantom as NIfTI). A block
may use what an earlier block of the same file made. Blocks that are not meant to run are written
as ```text (or ```bash for shell commands), never as python.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from medseg.data.synthetic import ct_phantom, write_phantom_dicom, write_phantom_nifti

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(line number, code) of every ```python block of a Markdown file, in order."""
    text = path.read_text(encoding="utf-8")
    return [(text[: m.start()].count("\n") + 1, m.group(1)) for m in _BLOCK.finditer(text)]


@pytest.fixture(scope="module")
def docs_data(tmp_path_factory) -> Path:
    """What the docs' snippets read: configs/, a DICOM CT series and a NIfTI volume."""
    base = tmp_path_factory.mktemp("docs-data")
    shutil.copytree(ROOT / "configs", base / "configs")
    ph = ct_phantom(seed=3, shape=(48, 40, 12), spacing=(4.0, 4.0, 6.0))
    write_phantom_dicom(ph, base / "study" / "CT_series")
    write_phantom_nifti(ph, base / "study" / "ct.nii.gz", base / "study" / "ct_label.nii.gz")
    return base


def test_every_doc_with_code_is_collected():
    with_code = [p.name for p in DOCS if python_blocks(p)]
    assert "README.md" in with_code and len(with_code) >= 5


@pytest.mark.parametrize("doc", [p for p in DOCS if python_blocks(p)], ids=lambda p: p.name)
def test_python_blocks_run(doc: Path, docs_data: Path, tmp_path: Path, monkeypatch) -> None:
    work = tmp_path / "work"
    shutil.copytree(docs_data, work)
    monkeypatch.chdir(work)
    namespace: dict[str, object] = {"__name__": f"docs_{doc.stem}"}
    for line, code in python_blocks(doc):
        try:
            exec(compile(code, f"{doc.name}:{line}", "exec"), namespace)  # noqa: S102 - the docs' own code
        except Exception as e:  # name the block that failed
            raise AssertionError(f"{doc.name}, block at line {line} fails: {type(e).__name__}: {e}") from e
