"""DICOMweb through dicomweb-client: QIDO-RS (search), WADO-RS (retrieve), STOW-RS (store).

Credentials (HTTP basic or a bearer token) and TLS files come from the node's environment variables.
Every failure is a :class:`~medseg.errors.PacsError` naming the node and the HTTP status (and, for STOW,
the DICOM FailureReason of each refused instance); never a URL query or a patient value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from medseg.errors import MissingDependencyError, PacsError
from medseg.pacs.config import PacsNode

__all__ = ["client", "search", "retrieve_series", "stow"]

log = logging.getLogger(__name__)


def client(node: PacsNode) -> Any:
    """A ``dicomweb_client.DICOMwebClient`` for ``node`` (credentials and TLS from the environment)."""
    try:
        import requests  # lazy: optional dependency (the `pacs` extra)
        from dicomweb_client.api import DICOMwebClient
    except ImportError:
        raise MissingDependencyError("PACS over DICOMweb needs dicomweb-client: pip install 'medseg[pacs]'") from None
    session = requests.Session()
    user, password, token = node.secret("username_env"), node.secret("password_env"), node.secret("token_env")
    if user is not None or password is not None:
        session.auth = (user or "", password or "")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    if node.tls is not None:
        ca = node.secret("ca_env")
        if ca:
            session.verify = ca
        cert, key = node.secret("cert_env"), node.secret("key_env")
        if cert:
            session.cert = (cert, key) if key else cert
    return DICOMwebClient(url=node.web_url(), session=session, headers=headers, timeout=node.timeout_s)


@contextmanager
def _http_errors(node: PacsNode, what: str) -> Iterator[None]:
    import requests  # lazy: optional dependency

    try:
        yield
    except requests.HTTPError as e:
        code = e.response.status_code if e.response is not None else "?"
        reason = e.response.reason if e.response is not None else ""
        raise PacsError(f"PACS node {node.name!r}: {what} failed with HTTP status {code} {reason}".rstrip()) from None
    except requests.RequestException as e:
        raise PacsError(f"PACS node {node.name!r}: {what} failed ({type(e).__name__}: no connection)") from None


def search(node: PacsNode, level: str, query: Mapping[str, Any], study_uid: str | None = None) -> list[Any]:
    """QIDO-RS at ``level`` (``STUDY`` / ``SERIES``): the matches as pydicom Datasets."""
    from pydicom.dataset import Dataset  # lazy: keeps `import medseg.pacs` light

    c = client(node)
    filters = {str(k): v for k, v in query.items()}
    with _http_errors(node, f"QIDO-RS {level.lower()} search"):
        if level == "STUDY":
            found = c.search_for_studies(search_filters=filters, get_remaining=True)
        else:
            found = c.search_for_series(study_instance_uid=study_uid, search_filters=filters, get_remaining=True)
    return [Dataset.from_json(d) for d in found]


def retrieve_series(node: PacsNode, study_uid: str, series_uid: str, write: Callable[[Any], None]) -> int:
    """WADO-RS one series; ``write(dataset)`` for each instance; the number of instances."""
    c = client(node)
    n = 0
    with _http_errors(node, "WADO-RS series retrieve"):
        for ds in c.iter_series(study_uid, series_uid):
            write(ds)
            n += 1
    return n


def stow(node: PacsNode, datasets: Sequence[Any]) -> list[str]:
    """STOW-RS ``datasets``; the SOP Instance UIDs the node stored (PacsError for any it refused)."""
    c = client(node)
    with _http_errors(node, "STOW-RS store"):
        response = c.store_instances(list(datasets))
    failed = list(response.get("FailedSOPSequence") or [])
    if failed:
        reasons = sorted({f"0x{int(f.get('FailureReason', 0)):04X}" for f in failed})
        raise PacsError(
            f"PACS node {node.name!r}: STOW-RS refused {len(failed)} of {len(datasets)} instance(s), "
            f"DICOM FailureReason {', '.join(reasons)}"
        )
    return [str(r.ReferencedSOPInstanceUID) for r in response.get("ReferencedSOPSequence") or []]
