"""DIMSE through pynetdicom: C-FIND (study root), C-GET or C-MOVE into a folder, C-STORE.

Every failure is a :class:`~medseg.errors.PacsError` naming the node and the DICOM status (hex and its
meaning from pynetdicom's status tables); identifiers and queries are never put in a message.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from medseg.errors import MissingDependencyError, PacsError
from medseg.pacs.config import PacsNode

__all__ = ["find", "retrieve", "store", "status_text", "tls_context"]

log = logging.getLogger(__name__)

_PENDING = (0xFF00, 0xFF01)


def _pynetdicom() -> Any:
    try:
        import pynetdicom  # lazy: optional dependency (the `pacs` extra)
    except ImportError:
        raise MissingDependencyError("PACS over DIMSE needs pynetdicom: pip install 'medseg[pacs]'") from None
    return pynetdicom


def status_text(status: int) -> str:
    """``0xA700 (Refused: Out of Resources)``: a DIMSE status as hex and its meaning."""
    from pynetdicom.status import code_to_category  # lazy: optional dependency

    return f"0x{int(status):04X} ({code_to_category(int(status))})"


def tls_context(node: PacsNode, server: bool = False) -> ssl.SSLContext | None:
    """The TLS context of ``node`` from its environment variables (``None`` without ``tls``)."""
    if node.tls is None:
        return None
    purpose = ssl.Purpose.CLIENT_AUTH if server else ssl.Purpose.SERVER_AUTH
    ctx = ssl.create_default_context(purpose, cafile=node.secret("ca_env"))
    cert, key = node.secret("cert_env"), node.secret("key_env")
    if cert:
        ctx.load_cert_chain(cert, keyfile=key)
    return ctx


@contextmanager
def _association(
    node: PacsNode, contexts: Sequence[Any], *, ext_neg: Sequence[Any] = (), handlers: Sequence[Any] = ()
) -> Iterator[Any]:
    pn = _pynetdicom()
    host, port = node.dimse_address()
    ae = pn.AE(ae_title=node.calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = node.timeout_s
    for cx in contexts:
        ae.add_requested_context(*cx) if isinstance(cx, tuple) else ae.add_requested_context(cx)
    ctx = tls_context(node)
    kw: dict[str, Any] = {"ext_neg": list(ext_neg) or None, "evt_handlers": list(handlers) or None}
    if ctx is not None:
        kw["tls_args"] = (ctx, host)
    assoc = ae.associate(host, port, ae_title=node.ae_title, **kw)
    if not assoc.is_established:
        reason = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "no answer"
        raise PacsError(f"PACS node {node.name!r} ({node.ae_title}@{host}:{port}): association {reason}")
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _query_dataset(level: str, query: Mapping[str, Any], returned: Sequence[str]) -> Any:
    from pydicom.dataset import Dataset  # lazy: keeps `import medseg.pacs` light

    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for key in returned:
        setattr(ds, key, "")
    for key, value in query.items():
        setattr(ds, key, value)
    return ds


def find(node: PacsNode, level: str, query: Mapping[str, Any], returned: Sequence[str] = ()) -> list[Any]:
    """C-FIND (Study Root) at ``level`` (``STUDY`` / ``SERIES`` / ``IMAGE``): the matching identifiers.

    Parameters
    ----------
    query : ``{keyword: value}`` matching keys (``StudyInstanceUID``, ``AccessionNumber``, ``Modality`` ...).
    returned : keywords the node should return (empty matching keys).
    """
    FIND = _pynetdicom().sop_class.StudyRootQueryRetrieveInformationModelFind  # generated at import: Any
    ds = _query_dataset(level, query, returned)
    out = []
    with _association(node, [FIND]) as assoc:
        for status, identifier in assoc.send_c_find(ds, FIND):
            if not status:
                raise PacsError(f"PACS node {node.name!r}: C-FIND got no answer (timeout or aborted)")
            code = int(status.Status)
            if code in _PENDING:
                if identifier is not None:
                    out.append(identifier)
            elif code != 0x0000:
                raise PacsError(f"PACS node {node.name!r}: C-FIND failed with status {status_text(code)}")
    return out


def _store_handler(write: Callable[[Any], None]) -> Callable[[Any], int]:
    def handle(event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        write(ds)
        return 0x0000

    return handle


def retrieve(node: PacsNode, study_uid: str, series_uid: str, write: Callable[[Any], None]) -> int:
    """Retrieve one series (C-GET or C-MOVE, as ``node.retrieve`` says); ``write(dataset)`` for each instance.

    Returns the number of instances received. C-MOVE starts a storage SCP on ``node.move_port`` under
    ``node.calling_ae_title`` for the time of the move (the node must know that AE title, host and port).
    """
    pn = _pynetdicom()
    GET = pn.sop_class.StudyRootQueryRetrieveInformationModelGet
    MOVE = pn.sop_class.StudyRootQueryRetrieveInformationModelMove

    ds = _query_dataset("SERIES", {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}, ())
    received = [0]

    def counted(d: Any) -> None:
        write(d)
        received[0] += 1

    handler = (pn.evt.EVT_C_STORE, _store_handler(counted))
    if node.retrieve == "get":
        storage = pn.StoragePresentationContexts[:120]  # + the C-GET context: within the 128 allowed
        roles = [pn.build_role(cx.abstract_syntax, scp_role=True) for cx in storage]
        contexts = [GET] + [(cx.abstract_syntax, cx.transfer_syntax) for cx in storage]
        with _association(node, contexts, ext_neg=roles, handlers=[handler]) as assoc:
            _check_retrieve(node, assoc.send_c_get(ds, GET), "C-GET")
        return received[0]
    scp = pn.AE(ae_title=node.calling_ae_title)
    scp.supported_contexts = pn.AllStoragePresentationContexts
    server = scp.start_server(
        ("", node.move_port), block=False, evt_handlers=[handler], ssl_context=tls_context(node, server=True)
    )
    try:
        with _association(node, [MOVE]) as assoc:
            _check_retrieve(node, assoc.send_c_move(ds, node.calling_ae_title, MOVE), "C-MOVE")
    finally:
        server.shutdown()
    return received[0]


def _check_retrieve(node: PacsNode, responses: Any, what: str) -> None:
    for status, _ in responses:
        if not status:
            raise PacsError(f"PACS node {node.name!r}: {what} got no answer (timeout or aborted)")
        code = int(status.Status)
        if code in _PENDING:
            continue
        failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
        if code != 0x0000 or failed:
            raise PacsError(
                f"PACS node {node.name!r}: {what} ended with status {status_text(code)}"
                + (f", {failed} instance(s) failed" if failed else "")
            )


def store(node: PacsNode, datasets: Sequence[Any]) -> list[str]:
    """C-STORE ``datasets`` (pydicom, with file meta) to ``node``; the SOP Instance UIDs stored."""
    contexts = sorted({(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets})
    stored = []
    with _association(node, [(sop, [ts]) for sop, ts in contexts]) as assoc:
        for d in datasets:
            status = assoc.send_c_store(d)
            if not status:
                raise PacsError(f"PACS node {node.name!r}: C-STORE got no answer (timeout or aborted)")
            code = int(status.Status)
            if code not in (0x0000, 0xB000, 0xB007, 0xB006):  # success, or a warning (coercion)
                raise PacsError(f"PACS node {node.name!r}: C-STORE failed with status {status_text(code)}")
            stored.append(str(d.SOPInstanceUID))
    return stored
