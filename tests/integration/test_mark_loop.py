"""The radiologist's loop with Orthanc as the PACS, routed as deploy/orthanc/autoroute.lua
routes: a CT stored in Orthanc goes to the node, whose first answer picks the wrong lesion;
the spool's retention then removes the CT; a mark on the true tumor, as OHIF writes it
(``tests/marks.py``: built in Python to the content OHIF 3.x writes, not made by driving OHIF),
is stored in Orthanc, which routes it to the node; the node fetches the CT back (C-MOVE) and
its new SEG and SR reach Orthanc, the SR naming the first as its predecessor and the SEG on
the true lesion. The second test takes ``cdss-node analyze-study`` over C-GET after the same
retention."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from cdss_node.cli import main
from cdss_node.config import load_config
from cdss_node.dicom.ct_series import write_ct_series
from cdss_node.node import Node
from cdss_node.store.retention import purge_finished_series
from tests.conftest import free_port
from tests.decoy import phantom_with_decoy
from tests.integration.marking import (
    OBSERVER, generation_done, mark_on_tumor, mask_of, result_folder, send, wait_for)
from tests.integration.nodeproc import add_destination, write_config
from tests.integration.orthanc import DeployOrthanc, Orthanc
from training.segmentation_eval import dice

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def decoy_ct(tmp_path_factory):
    phantom, decoy = phantom_with_decoy()
    files = write_ct_series(phantom, tmp_path_factory.mktemp("decoy_ct"), uid_seed="mark-loop")
    return files, phantom, decoy


def node_with_pacs(tmp_path: Path, node_port: int, pacs: Orthanc, method: str) -> Path:
    config = write_config(tmp_path / "node.toml", tmp_path / "var", node_port, workers=1)
    add_destination(config, pacs.dicom_port, pacs.aet, outbox="check_interval_s = 0.5")
    with open(config, "a") as f:
        f.write(f'[retrieve]\nsource = "pacs"\nmethod = "{method}"\ntimeout_s = 120.0\n')
    return config


def node_series(pacs: Orthanc, study_uid: str, modality: str) -> list[bytes]:
    """The files of the node's series of that modality in the study, by instance number."""
    found = []
    for series in pacs.series_of(study_uid):
        tags = series["MainDicomTags"]
        if tags.get("Modality") == modality and \
                tags.get("SeriesDescription", "").startswith("CDSS EGFR"):
            found += [pacs.get(f"/instances/{i}/file") for i in series["Instances"]]
    return sorted(found, key=lambda b: int(pydicom.dcmread(io.BytesIO(b)).InstanceNumber))


def seg_mask(seg_bytes: bytes, files: list[Path]) -> np.ndarray:
    """Segment 1 of a SEG on the CT's files (phantom order)."""
    seg = hd.seg.segread(io.BytesIO(seg_bytes))
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids,
                                               segment_numbers=[1])
    return pixels[..., 0] > 0


def purge_ct(node: Node, series_uid: str) -> None:
    assert series_uid in purge_finished_series(node.index, node.spool, 1,
                                               now=time.time() + 2 * 86400)
    assert not list(node.spool.root.rglob("*.dcm")), "retention left CT files"


def test_a_mark_in_the_pacs_comes_back_as_a_new_answer_after_a_c_move(tmp_path, decoy_ct):
    files, phantom, decoy = decoy_ct
    ct = pydicom.dcmread(files[0], stop_before_pixels=True)
    node_port = free_port()
    pacs = DeployOrthanc(tmp_path / "orthanc", node_port).start()
    node = Node(load_config(node_with_pacs(tmp_path, node_port, pacs, "move")))
    node.start()
    try:
        for file in files:
            pacs.post("/instances", file.read_bytes())
        wait_for(lambda: generation_done(node, ct.SeriesInstanceUID, 1), 240, "first answer")
        first_srs = wait_for(lambda: node_series(pacs, ct.StudyInstanceUID, "SR"), 60,
                             "the first SR in the PACS")
        purge_ct(node, ct.SeriesInstanceUID)
        mark = mark_on_tumor(files, phantom, tmp_path)
        pacs.post("/instances", mark.read_bytes())
        wait_for(lambda: generation_done(node, ct.SeriesInstanceUID, 2), 240, "marked answer")
        srs = wait_for(lambda: (lambda s: s if len(s) == 2 else None)(
            node_series(pacs, ct.StudyInstanceUID, "SR")), 60, "the second SR in the PACS")
        segs = node_series(pacs, ct.StudyInstanceUID, "SEG")
        log = (tmp_path / "orthanc" / "orthanc.log").read_text()
    finally:
        node.stop()
        pacs.stop()
    first_seg = mask_of(result_folder(node, ct.SeriesInstanceUID, 1))
    assert dice(first_seg, phantom.tumor_mask) < 0.1 and dice(first_seg, decoy) > 0.8
    marked = [pydicom.dcmread(io.BytesIO(b)) for b in srs]
    assert [int(s.InstanceNumber) for s in marked] == [1, 2]
    mark_uid = pydicom.dcmread(mark).SOPInstanceUID
    assert mark_uid not in {s.SOPInstanceUID for s in marked}, "the mark is Orthanc's, not ours"
    predecessor = marked[1].PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert predecessor.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == \
        pydicom.dcmread(io.BytesIO(first_srs[0])).SOPInstanceUID
    assert _mentions(marked[1], OBSERVER) and not _mentions(marked[0], OBSERVER)
    assert len(segs) == 2 and dice(seg_mask(segs[1], files), phantom.tumor_mask) >= 0.8
    assert "autoroute: SR (a radiologist's report) series" in log
    assert log.count("autoroute: SR") == 1, "the node's own SRs must not be routed back"


def _mentions(ds, text: str) -> bool:
    stack = list(ds.ContentSequence)
    while stack:
        item = stack.pop()
        if text in str(item.get("TextValue", "")) or text in str(item.get("PersonName", "")):
            return True
        stack.extend(item.get("ContentSequence", []))
    return False


def test_analyze_study_fetches_a_purged_series_by_c_get(tmp_path, decoy_ct, capsys):
    """The CT was analysed and purged; ``cdss-node analyze-study`` finds it on the PACS
    (C-FIND), the node fetches it by C-GET, and the new answer supersedes the first."""
    files, _, _ = decoy_ct
    ct = pydicom.dcmread(files[0], stop_before_pixels=True)
    node_port = free_port()
    pacs = Orthanc(tmp_path / "orthanc", extra={"DicomModalities": {
        "cdss-node": ["CDSS_EGFR", "127.0.0.1", node_port]}}).start()
    config_path = node_with_pacs(tmp_path, node_port, pacs, "get")
    node = Node(load_config(config_path))
    node.start()
    try:
        for file in files:
            pacs.post("/instances", file.read_bytes())
        send(node, *files)
        wait_for(lambda: generation_done(node, ct.SeriesInstanceUID, 1), 240, "first answer")
        purge_ct(node, ct.SeriesInstanceUID)
        code = main(["--config", str(config_path), "analyze-study", "--study",
                     ct.StudyInstanceUID, "--wait", "240"])
        printed = capsys.readouterr().out
        held = len(list(node.spool.root.rglob("*.dcm")))
        assert main(["--config", str(config_path), "status"]) == 0
        status = capsys.readouterr().out
    finally:
        node.stop()
        pacs.stop()
    assert code == 0, printed
    assert f"series {ct.SeriesInstanceUID}" in printed and "done" in printed
    assert held == len(files)
    assert "study done" in status and ct.SeriesInstanceUID in status.split("requests (")[1]
    answer = pydicom.dcmread(result_folder(node, ct.SeriesInstanceUID, 2) / "sr.dcm")
    first = pydicom.dcmread(result_folder(node, ct.SeriesInstanceUID, 1) / "sr.dcm")
    predecessor = answer.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert predecessor.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
