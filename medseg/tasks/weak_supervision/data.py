"""Data of weak supervision: one split of a lesion datalist (images, image-level labels, masks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medseg.config import read_datalist_json
from medseg.errors import InputError
from medseg.io import read_image_uint8

__all__ = ["load_lesion_split"]


def load_lesion_split(datalist: Path, split: str, root: Path | None = None) -> dict[str, Any]:
    """Images, masks, labels and ids of one datalist split.

    Parameters
    ----------
    datalist : MSD-style JSON whose entries have ``image``, image-level ``label`` and (optional) ``mask``
    split : "training", "validation" or "test" (a missing list gives empty lists)
    root : base of relative paths (default: the datalist's folder)

    Returns
    -------
    dict of lists: ``images`` (uint8 ``(H, W[, 3])``, :func:`medseg.io.read_image_uint8`), ``masks``
    (bool ``(H, W)`` or None), ``labels`` (int, -1 when absent), ``ids`` (file stems).
    """
    datalist = Path(datalist)
    content = read_datalist_json(datalist)
    base = Path(root) if root is not None else datalist.parent
    out: dict[str, Any] = {"images": [], "masks": [], "labels": [], "ids": []}
    for e in content.get(split) or []:
        if not isinstance(e, dict) or "image" not in e:
            raise InputError(f"split {split!r}: each entry needs an 'image' (and 'label', 'mask')", datalist)
        p = Path(e["image"])
        out["images"].append(read_image_uint8(p if p.is_absolute() else base / p))
        if e.get("mask"):
            q = Path(e["mask"])
            out["masks"].append(read_image_uint8(q if q.is_absolute() else base / q) > 0)
        else:
            out["masks"].append(None)
        out["labels"].append(int(e.get("label", -1)))
        out["ids"].append(p.stem)
    return out
