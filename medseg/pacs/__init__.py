"""medseg.pacs: pull studies from a PACS and push results back (DIMSE via pynetdicom, DICOMweb via dicomweb-client).

- :func:`get_node` / :func:`load_nodes`: nodes from a YAML file (:mod:`.config`; secrets from the environment).
- :func:`pull`: C-FIND + C-GET / C-MOVE, or QIDO-RS + WADO-RS, into one folder per series (:mod:`.transfer`).
- :func:`push`: C-STORE or STOW-RS of DICOM files (a SEG goes back to its source's study).

:mod:`.dimse` and :mod:`.web` hold the two protocols. pynetdicom and dicomweb-client are the ``pacs`` extra,
imported when a request is made. See ``docs/pacs.md``.
"""

from __future__ import annotations

from medseg.pacs.config import NODES_ENV, PacsNode, get_node, load_nodes
from medseg.pacs.transfer import PulledSeries, pull, push

__all__ = ["PacsNode", "load_nodes", "get_node", "pull", "push", "PulledSeries", "NODES_ENV"]
