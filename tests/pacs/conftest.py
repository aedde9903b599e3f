"""Fixtures of the PACS tests: a real Orthanc with DICOMweb (skipped, with the install hint, where it is absent)."""

from __future__ import annotations

import shutil

import pytest

from tests.pacs.orthanc import ORTHANC, PASSWORD, USER, dicomweb_plugin, orthanc


@pytest.fixture(scope="module")
def orthanc_server(tmp_path_factory):
    """A running Orthanc (temporary config, free ports, storage in tmp), stopped after the module."""
    if shutil.which(ORTHANC) is None or dicomweb_plugin() is None:
        pytest.skip("Orthanc with its DICOMweb plugin is not installed: run `make system-deps`")
    with orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture
def pacs_env(monkeypatch):
    """The Orthanc account in the environment, where the nodes file says to find it."""
    monkeypatch.setenv("ORTHANC_USER", USER)
    monkeypatch.setenv("ORTHANC_PASSWORD", PASSWORD)
