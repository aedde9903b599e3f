"""PACS round trip against a real Orthanc: upload a CT, pull it (DIMSE C-GET / C-MOVE, DICOMweb), segment
it with a tiny model, push the SEG (C-STORE, STOW-RS), and check through Orthanc's REST API that the SEG
is in the same study, references the source instances and decodes to the label map medseg wrote."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import yaml

import medseg.io as mio
from medseg.cli import main
from medseg.data.synthetic import ct_phantom, write_phantom_dicom
from medseg.errors import ConfigError, PacsError
from medseg.pacs import get_node, pull, push

CLASSES = ["background", "liver"]


@pytest.fixture(scope="module")
def seg_run(tiny_seg_run) -> Path:
    return tiny_seg_run


@pytest.fixture(scope="module")
def study(orthanc_server, tmp_path_factory):
    """A phantom CT series uploaded to Orthanc: (StudyInstanceUID, {SOPInstanceUID: slice index})."""
    folder = tmp_path_factory.mktemp("upload") / "ct"
    paths = write_phantom_dicom(ct_phantom(seed=31, shape=(32, 32, 16), spacing=(6.0, 6.0, 9.0)), folder)
    sops = {}
    for p in paths:
        orthanc_server.rest("/instances", data=p.read_bytes())
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        sops[str(ds.SOPInstanceUID)] = int(ds.InstanceNumber) - 1
    return str(ds.StudyInstanceUID), sops


def _seg_instances(server) -> list[str]:
    """Orthanc ids of the SEG instances it holds, through its REST API."""
    out = []
    for sid in server.rest("/series"):
        info = server.rest(f"/series/{sid}")
        if info["MainDicomTags"].get("Modality") == "SEG":
            out += info["Instances"]
    return out


def test_pull_segment_push_dimse(orthanc_server, study, seg_run, pacs_env, tmp_path, capsys):
    study_uid, sops = study
    nodes = orthanc_server.nodes_file(tmp_path / "nodes.yaml")
    pull_args = ["--node", "orthanc", "--nodes", str(nodes), "--study", study_uid, "--modality", "CT"]
    assert main(["pacs", "pull", *pull_args, "--out", str(tmp_path / "pulled")]) == 0
    listing = json.loads((tmp_path / "pulled" / "pull.json").read_text())
    assert len(listing) == 1 and listing[0]["n_instances"] == len(sops) and listing[0]["modality"] == "CT"
    series_dir = Path(listing[0]["folder"])
    assert {p.stem for p in series_dir.glob("*.dcm")} == set(sops)

    out = tmp_path / "seg"
    assert main(["segment", "--model", str(seg_run), str(series_dir), "--out", str(out), "--device", "cpu"]) == 0
    (seg_file,) = (out / "dicom_seg").glob("*.dcm")
    (label_file,) = (out / "labels").glob("*.nii.gz")
    capsys.readouterr()
    assert main(["pacs", "push", "--node", "orthanc", "--nodes", str(nodes), str(seg_file)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["stored"] == 1

    # --- what Orthanc holds, through its REST API
    studies = orthanc_server.rest("/studies")
    assert len(studies) == 1  # the SEG joined the CT's study
    (inst,) = _seg_instances(orthanc_server)
    stored = tmp_path / "stored_seg.dcm"
    stored.write_bytes(orthanc_server.rest(f"/instances/{inst}/file"))
    ds = pydicom.dcmread(stored)
    assert ds.StudyInstanceUID == study_uid and ds.Modality == "SEG"
    refs = {r.ReferencedSOPInstanceUID for r in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert refs == set(sops)

    # --- it decodes (highdicom) to the label map medseg wrote
    import highdicom as hd

    written = mio.load(label_file).numpy()[0].astype(np.uint8)
    assert written.any()
    ordered = sorted(sops, key=sops.get)
    by_source = hd.seg.segread(stored).get_pixels_by_source_instance(
        source_sop_instance_uids=ordered, combine_segments=True, ignore_spatial_locations=True
    )  # (slices, rows, columns)
    assert np.array_equal(np.asarray(by_source).transpose(2, 1, 0), written)
    back = mio.load_label(stored, series_dir, classes=CLASSES)
    assert np.array_equal(back.numpy()[0], written)


def test_dicomweb_and_c_move(orthanc_server, study, seg_run, pacs_env, tmp_path):
    study_uid, sops = study
    nodes_file = orthanc_server.nodes_file(tmp_path / "nodes.yaml")
    node = get_node("orthanc", nodes_file)
    web = pull(node, tmp_path / "web", study_uid=study_uid, modality="CT", via="dicomweb")
    assert len(web) == 1 and {p.stem for p in Path(web[0].folder).glob("*.dcm")} == set(sops)
    moved = pull(node.model_copy(update={"retrieve": "move"}), tmp_path / "move", study_uid=study_uid, modality="CT")
    assert {p.stem for p in Path(moved[0].folder).glob("*.dcm")} == set(sops)
    img = mio.load(web[0].folder)
    assert np.array_equal(img.numpy(), mio.load(moved[0].folder).numpy())  # the same voxels both ways

    before = len(_seg_instances(orthanc_server))
    labels = (img.numpy()[0] > 0).astype(np.uint8)
    seg_file = mio.write_dicom_seg(labels, web[0].folder, tmp_path / "body.dcm", {1: "liver"})
    assert push(node, [seg_file], via="dicomweb") == [str(pydicom.dcmread(seg_file).SOPInstanceUID)]
    assert len(_seg_instances(orthanc_server)) == before + 1
    assert len(orthanc_server.rest("/studies")) == 1


def test_errors_name_the_node_and_status_never_the_patient(orthanc_server, study, pacs_env, tmp_path, monkeypatch):
    study_uid, _ = study
    nodes_file = orthanc_server.nodes_file(tmp_path / "nodes.yaml")
    node = get_node("orthanc", nodes_file)
    monkeypatch.setenv("ORTHANC_PASSWORD", "wrong")
    with pytest.raises(PacsError, match=r"'orthanc'.*HTTP status 401"):
        pull(node, tmp_path / "x", study_uid=study_uid, via="dicomweb")
    with pytest.raises(PacsError, match=r"'orthanc'.*no study matches.*by StudyInstanceUID") as e:
        pull(node, tmp_path / "y", study_uid="1.2.3.4.5")
    assert "PHANTOM" not in str(e.value) and "1.2.3.4.5" not in str(e.value)
    bad = node.model_copy(update={"port": orthanc_server.http_port})  # not a DICOM port
    with pytest.raises(PacsError, match=r"'orthanc' \(ORTHANC@127.0.0.1:\d+\): association"):
        pull(bad, tmp_path / "z", study_uid=study_uid)


def test_nodes_file_keeps_secrets_out(tmp_path, monkeypatch):
    f = tmp_path / "nodes.yaml"
    f.write_text(yaml.safe_dump({"nodes": {"p": {"host": "h", "port": 104, "password": "s3cret"}}}))
    with pytest.raises(ConfigError, match="password.*environment variable") as e:
        get_node("p", f)
    assert "s3cret" not in str(e.value)
    f.write_text(yaml.safe_dump({"nodes": {"p": {"dicomweb_url": "http://h", "password_env": "MEDSEG_TEST_PW"}}}))
    monkeypatch.delenv("MEDSEG_TEST_PW", raising=False)
    with pytest.raises(ConfigError, match="MEDSEG_TEST_PW.*not set"):
        get_node("p", f).secret("password_env")
    with pytest.raises(ConfigError, match="no PACS node 'q'; the nodes file has p"):
        get_node("q", f)
    monkeypatch.setenv("MEDSEG_PACS_NODES", str(f))
    assert get_node("p").dicomweb_url == "http://h"
    f.write_text(yaml.safe_dump({"nodes": {"keycloak_user": {"host": "h", "port": 104, "tls": {"key_env": "K"}}}}))
    assert get_node("keycloak_user").tls.key_env == "K"  # a node's name is not a secret
