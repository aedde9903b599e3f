"""A real Orthanc (Debian packages ``orthanc`` + ``orthanc-dicomweb``) for the PACS tests and ``make pacs``.

``python -m tests.pacs.orthanc`` starts one in the foreground (what ``make pacs`` runs) and prints a
nodes file for it; the pytest fixture in ``conftest.py`` starts one per test module.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

ORTHANC = "Orthanc"
DICOMWEB_PLUGINS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so")
USER, PASSWORD = "medseg", "medseg-test-password"  # a throwaway local server's account


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dicomweb_plugin() -> str | None:
    found = [p for p in DICOMWEB_PLUGINS if Path(p).exists()]
    found += sorted(str(p) for p in Path("/usr/lib/orthanc").glob("libOrthancDicomWeb.so*"))
    return found[0] if found else None


@dataclass
class OrthancServer:
    http_port: int
    dicom_port: int
    move_port: int
    folder: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def rest(self, path: str, data: bytes | None = None) -> object:
        """GET (or POST ``data``) ``path`` of Orthanc's REST API, as JSON."""
        import base64

        req = urllib.request.Request(self.url + path, data=data)
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def nodes_file(self, path: Path) -> Path:
        nodes = {
            "nodes": {
                "orthanc": {
                    "ae_title": "ORTHANC",
                    "host": "127.0.0.1",
                    "port": self.dicom_port,
                    "calling_ae_title": "MEDSEG",
                    "retrieve": "get",
                    "move_port": self.move_port,
                    "dicomweb_url": f"{self.url}/dicom-web",
                    "username_env": "ORTHANC_USER",
                    "password_env": "ORTHANC_PASSWORD",
                    "timeout_s": 30,
                }
            }
        }
        path.write_text(yaml.safe_dump(nodes, sort_keys=False))
        return path


def config(folder: Path, http_port: int, dicom_port: int, move_port: int, plugin: str) -> dict:
    return {
        "Name": "medseg-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
        "DicomModalities": {
            "medseg": {"AET": "MEDSEG", "Host": "127.0.0.1", "Port": move_port, "AllowGet": True, "AllowMove": True}
        },
        "DicomAlwaysAllowStore": True,
        "StableAge": 1,
        "HttpTimeout": 30,
    }


@contextmanager
def orthanc(folder: Path) -> Iterator[OrthancServer]:
    """Start Orthanc with DICOMweb on free ports, storage under ``folder``; stopped (and waited for) at exit."""
    exe, plugin = shutil.which(ORTHANC), dicomweb_plugin()
    if exe is None or plugin is None:
        raise FileNotFoundError("Orthanc or its DICOMweb plugin is not installed: run `make system-deps`")
    folder.mkdir(parents=True, exist_ok=True)
    server = OrthancServer(free_port(), free_port(), free_port(), folder)
    cfg = folder / "orthanc.json"
    cfg.write_text(json.dumps(config(folder, server.http_port, server.dicom_port, server.move_port, plugin)))
    log = (folder / "orthanc.log").open("wb")
    proc = subprocess.Popen([exe, str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                server.rest("/system")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Orthanc did not start; see {folder / 'orthanc.log'}") from None
                time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


if __name__ == "__main__":  # `make pacs`: an Orthanc to try medseg pacs with
    import tempfile

    with orthanc(Path(tempfile.mkdtemp(prefix="medseg-orthanc-"))) as srv:
        nodes = srv.nodes_file(srv.folder / "nodes.yaml")
        print(f"Orthanc is running: {srv.url} (Explorer; user {USER}), DICOM ORTHANC@127.0.0.1:{srv.dicom_port}")
        print(f"nodes file: {nodes}")
        print(f"  export MEDSEG_PACS_NODES={nodes} ORTHANC_USER={USER} ORTHANC_PASSWORD={PASSWORD}")
        print("Ctrl-C stops it (its storage is in that folder).")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
