"""PACS nodes in YAML: AE titles, host, port, DICOMweb URL; credentials and TLS files from the environment only.

A nodes file maps a node name to its settings::

    nodes:
      orthanc:
        ae_title: ORTHANC            # the node's AE title (DIMSE)
        host: localhost
        port: 4242
        calling_ae_title: MEDSEG     # medseg's own AE title; the node must know it for C-MOVE / C-GET
        retrieve: get                # get (C-GET) or move (C-MOVE to calling_ae_title at move_port)
        move_port: 11113
        dicomweb_url: http://localhost:8042/dicom-web
        username_env: ORTHANC_USER   # names of environment variables, never the values
        password_env: ORTHANC_PASSWORD
        tls:
          ca_env: PACS_CA            # a CA bundle file; cert_env / key_env: a client certificate

A secret written in the file (``password:``, ``token:`` ...) is refused: a config file is copied into run
folders and shared; the environment is not.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from medseg.config.base import Section
from medseg.errors import ConfigError, MissingFileError

__all__ = ["PacsNode", "TlsSettings", "load_nodes", "get_node", "NODES_ENV"]

#: environment variable naming the default nodes file
NODES_ENV = "MEDSEG_PACS_NODES"

_SECRET_WORDS = ("password", "passwd", "secret", "token", "username", "user", "key", "cert")


class TlsSettings(Section):
    """TLS for DIMSE and DICOMweb: environment variables holding file paths (PEM)."""

    ca_env: str | None = Field(None, description="variable holding the CA bundle that verifies the node")
    cert_env: str | None = Field(None, description="variable holding medseg's client certificate")
    key_env: str | None = Field(None, description="variable holding the client certificate's key")


class PacsNode(Section):
    """One PACS node: how to reach it by DIMSE and / or DICOMweb."""

    name: str = Field("pacs", description="the node's name in the nodes file (set from the key)")
    ae_title: str = Field("ANY-SCP", max_length=16, description="the node's AE title")
    host: str | None = Field(None, description="DIMSE host")
    port: int | None = Field(None, ge=1, le=65535, description="DIMSE port")
    calling_ae_title: str = Field("MEDSEG", max_length=16, description="medseg's AE title")
    retrieve: Literal["get", "move"] = Field("get", description="C-GET, or C-MOVE to calling_ae_title")
    move_port: int = Field(11113, ge=1, le=65535, description="port of medseg's storage SCP during a C-MOVE")
    dicomweb_url: str | None = Field(None, description="DICOMweb root, e.g. http://host:8042/dicom-web")
    username_env: str | None = Field(None, description="variable holding the user name (HTTP basic)")
    password_env: str | None = Field(None, description="variable holding the password (HTTP basic)")
    token_env: str | None = Field(None, description="variable holding a bearer token (DICOMweb)")
    tls: TlsSettings | None = None
    timeout_s: float = Field(60.0, gt=0, description="network / DIMSE timeout (s)")

    def secret(self, env_field: str) -> str | None:
        """The value of the environment variable named by ``env_field`` (``None`` when not configured).

        Raises ConfigError when the variable is configured but not set (the message names the variable,
        never a value).
        """
        var = getattr(self, env_field) if hasattr(self, env_field) else getattr(self.tls, env_field, None)
        if not var:
            return None
        value = os.environ.get(var)
        if value is None:
            raise ConfigError(f"PACS node {self.name!r}: environment variable {var} ({env_field}) is not set")
        return value

    def dimse_address(self) -> tuple[str, int]:
        if not self.host or not self.port:
            raise ConfigError(f"PACS node {self.name!r} has no host / port: it is not reachable by DIMSE")
        return self.host, int(self.port)

    def web_url(self) -> str:
        if not self.dicomweb_url:
            raise ConfigError(f"PACS node {self.name!r} has no dicomweb_url: it is not reachable by DICOMweb")
        return self.dicomweb_url.rstrip("/")


def _refuse_secrets(raw: Any, where: str) -> None:
    if isinstance(raw, dict):
        for k, v in raw.items():
            key = str(k).lower()
            if any(w in key for w in _SECRET_WORDS) and not key.endswith("_env"):
                raise ConfigError(
                    f"{where}: {k!r} holds a credential in the file; name an environment variable instead "
                    f"({k}_env: MY_VARIABLE) and set it where medseg runs"
                )
            _refuse_secrets(v, f"{where}.{k}")


def load_nodes(path: str | Path | None = None) -> dict[str, PacsNode]:
    """The nodes of a nodes file (default: the file named by ``$MEDSEG_PACS_NODES``).

    Raises
    ------
    MissingFileError, ConfigError : no file, bad YAML, unknown keys, a secret written in the file.
    """
    if path is None:
        path = os.environ.get(NODES_ENV)
        if not path:
            raise ConfigError(f"no PACS nodes file: pass --nodes FILE or set {NODES_ENV}")
    path = Path(path)
    if not path.is_file():
        raise MissingFileError("PACS nodes file not found", path=str(path))
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML ({type(e).__name__})", path=str(path)) from None
    nodes = raw.get("nodes") if isinstance(raw, dict) else None
    if not isinstance(nodes, dict) or not nodes:
        raise ConfigError("a PACS nodes file holds 'nodes: {name: {ae_title, host, port, ...}}'", path=str(path))
    out = {}
    for name, settings in nodes.items():
        _refuse_secrets(settings, f"nodes.{name}")  # the settings, not the node names
        try:
            out[str(name)] = PacsNode.model_validate({**(settings or {}), "name": str(name)})
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise ConfigError(f"PACS node {name!r}: {problems}", path=str(path)) from None
    return out


def get_node(name: str, path: str | Path | None = None) -> PacsNode:
    """The node called ``name`` in the nodes file (ConfigError listing the names when there is none)."""
    nodes = load_nodes(path)
    if name not in nodes:
        raise ConfigError(f"no PACS node {name!r}; the nodes file has {', '.join(sorted(nodes))}")
    return nodes[name]
