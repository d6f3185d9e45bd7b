"""A radiologist's mark, with the node in its own process... in this one, with its analysis
process (``workers=1``): the CT is sent, the first answer picks the wrong lesion (a larger
decoy), an SR with a mark on the true tumor (written as OHIF writes it, ``tests/marks.py``) is
sent by dcmtk's storescu, and the node answers again for that tumor, superseding its first
report. Marks the node cannot act on get a not-evaluable SR of their own; its own reports are
ignored."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from cdss_node.dicom.ct_series import write_ct_series
from cdss_node.node import Node
from cdss_node.store import requests
from cdss_node.store.retention import purge_finished_series
from cdss_node.uids import result_series_uid
from tests.conftest import require_tool
from tests.decoy import phantom_with_decoy
from tests.integration.test_dicom_outputs import dciodvfy_errors, pixelmed_errors
from tests.integration.marking import (
    OBSERVER, generation_done, mark_on_tumor, mask_of, reason_code, result_folder, send,
    start_node, wait_for)
from tests.marks import ohif_mark_sr
from training.segmentation_eval import dice

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def decoy_ct(tmp_path_factory):
    """The decoy case written as DICOM: (files, phantom, decoy mask)."""
    phantom, decoy = phantom_with_decoy()
    folder = tmp_path_factory.mktemp("decoy_ct")
    files = write_ct_series(phantom, folder, uid_seed="mark-test")
    return files, phantom, decoy


def series_of(files) -> str:
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)


def first_answer(node: Node, files) -> None:
    """The CT sent and its first analysis finished."""
    send(node, *files)
    wait_for(lambda: generation_done(node, series_of(files), 1), what="the first answer")


def test_a_mark_on_the_true_tumor_answers_again_for_it(tmp_path, decoy_ct):
    files, phantom, decoy = decoy_ct
    node, series_uid = start_node(tmp_path), series_of(files)
    try:
        first_answer(node, files)
        first = mask_of(result_folder(node, series_uid, 1))
        assert dice(first, phantom.tumor_mask) < 0.1 and dice(first, decoy) > 0.8, \
            "the case must make the first answer wrong"
        send(node, mark_on_tumor(files, phantom, tmp_path))
        wait_for(lambda: generation_done(node, series_uid, 2), what="the marked answer")
        rows = requests.in_states(node.index, "done")
    finally:
        node.stop()
    folder = result_folder(node, series_uid, 2)
    assert dice(mask_of(folder), phantom.tumor_mask) >= 0.8
    assert len(rows) == 1 and rows[0]["kind"] == "mark" and rows[0]["series_uid"] == series_uid
    report = hd.sr.srread(folder / "sr.dcm")
    earlier = pydicom.dcmread(result_folder(node, series_uid, 1) / "sr.dcm")
    predecessor = report.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert predecessor.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == \
        earlier.SOPInstanceUID
    texts = summary_items(report)
    assert any(i.ValueType == "PNAME" and str(i.PersonName) == OBSERVER for i in texts)
    marked = [i for i in texts if i.ValueType == "COMPOSITE"
              and i.ConceptNameCodeSequence[0].CodeValue == "MARK"]
    assert marked and marked[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == \
        pydicom.dcmread(tmp_path / "mark-Length.dcm").SOPInstanceUID
    assert any("Tumor chosen by a radiologist (Doe^Jane)" in str(getattr(i, "TextValue", ""))
               for i in texts)
    assert_valid(folder / "sr.dcm", folder / "seg.dcm", folder / "sc.dcm")


def assert_valid(*paths: Path) -> None:
    """dciodvfy and (for SRs) PixelMed's DicomSRValidator find no error; dsrdump reads them."""
    for path in paths:
        assert dciodvfy_errors(path) == [], path
        if path.name == "sr.dcm":
            assert pixelmed_errors(path) == [], path
            dump = subprocess.run([require_tool("dsrdump"), str(path)], capture_output=True,
                                  text=True)
            assert dump.returncode == 0 and "Error" not in dump.stderr, dump.stderr


def summary_items(report) -> list:
    summary = next(i for i in report.ContentSequence
                   if i.ConceptNameCodeSequence[0].CodeValue == "121111")
    return list(summary.ContentSequence)


def request_row(node: Node, sop_instance_uid: str):
    rows = node.index.query("SELECT * FROM requests WHERE sop_instance_uid=?",
                            (sop_instance_uid,))
    return rows[0] if rows else None


def ended(node: Node, sop_instance_uid: str):
    row = request_row(node, sop_instance_uid)
    return row if row and row["state"] in ("done", "not_evaluable", "failed", "ignored") \
        else None


def without_image_reference(path: Path, tmp_path: Path) -> Path:
    """The mark with the IMAGE its coordinates were SELECTED FROM taken out."""
    ds = pydicom.dcmread(path)
    stack = list(ds.ContentSequence)
    while stack:
        item = stack.pop()
        if item.get("ValueType") == "SCOORD":
            del item.ContentSequence
        stack.extend(item.get("ContentSequence", []))
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    out = tmp_path / "mark-no-image.dcm"
    ds.save_as(out, enforce_file_format=True)
    return out


def test_marks_the_node_cannot_act_on(tmp_path, decoy_ct):
    """Its own report is ignored; a mark outside the lungs, a mark without an image and a
    mark on a series that left the spool (no [retrieve] source) each get a not-evaluable SR
    with their own reason, in a series of its own (the CT's answer stands); the node goes
    on."""
    files, phantom, _ = decoy_ct
    node, ct_series = start_node(tmp_path), series_of(files)
    try:
        first_answer(node, files)
        own = result_folder(node, ct_series, 1) / "sr.dcm"
        send(node, own)
        assert wait_for(lambda: ended(node, pydicom.dcmread(own).SOPInstanceUID))["detail"] \
            == "the node's own report"

        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
        spine = ohif_mark_sr(headers, headers[40], "Probe", [(128.5, 200.5)])  # vertebra
        spine.save_as(tmp_path / "spine.dcm", enforce_file_format=True)
        send(node, tmp_path / "spine.dcm")
        wait_for(lambda: generation_done(node, ct_series, 2), what="the answer to the spine")
        spine_answer = result_folder(node, ct_series, 2)
        assert reason_code(spine_answer / "sr.dcm") == "NE014"
        # answered in a series of its own; the CT's first answer stands
        assert pydicom.dcmread(spine_answer / "sr.dcm").SeriesInstanceUID == \
            result_series_uid(spine.SeriesInstanceUID, "SR")
        assert not (spine_answer / "sc.dcm").exists()
        assert node.index.query("SELECT state FROM series WHERE series_uid=?",
                                (ct_series,))[0][0] == "done"

        no_image = without_image_reference(mark_on_tumor(files, phantom, tmp_path), tmp_path)
        send(node, no_image)
        row = wait_for(lambda: ended(node, pydicom.dcmread(no_image).SOPInstanceUID))
        sr_series = str(pydicom.dcmread(no_image).SeriesInstanceUID)
        assert row["state"] == "not_evaluable" and row["series_uid"] == sr_series
        assert reason_code(result_folder(node, sr_series, 1) / "sr.dcm") == "NE013"

        purged = purge_finished_series(node.index, node.spool, 1, now=time.time() + 2 * 86400)
        assert ct_series in purged
        gone = mark_on_tumor(files, phantom, tmp_path, tool="EllipticalROI")
        gone_sr = pydicom.dcmread(gone)
        send(node, gone)
        row = wait_for(lambda: ended(node, gone_sr.SOPInstanceUID))
    finally:
        node.stop()
    assert row["state"] == "not_evaluable" and "no [retrieve] source" in row["detail"]
    answer = result_folder(node, str(gone_sr.SeriesInstanceUID), 1) / "sr.dcm"
    assert reason_code(answer) == "NE015"
    written = pydicom.dcmread(answer)
    assert written.StudyInstanceUID == gone_sr.StudyInstanceUID
    assert written.PatientID == gone_sr.PatientID
    assert_valid(answer, result_folder(node, sr_series, 1) / "sr.dcm",
                 result_folder(node, ct_series, 2) / "sr.dcm")
