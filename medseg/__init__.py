"""medseg: from a folder of DICOM/NIfTI studies to reviewed, trustworthy results.

The public API is exposed lazily (importing ``medseg`` does not import torch): the names are
declared in ``__init__.pyi``, which type checkers read, and loaded on first use by
``lazy_loader`` (scikit-image's pattern)::

    import medseg
    img = medseg.io.load("study/CT")           # MetaTensor (C, X, Y, Z), RAS affine
    cfg = medseg.load_config("configs/seg_ct_phantom.yaml")
"""

from __future__ import annotations

import lazy_loader as _lazy

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
__all__ = [*__all__, "__version__"]
