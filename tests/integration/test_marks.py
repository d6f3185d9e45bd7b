"""A radiologist's mark, with the node in its own process... in this one, with its analysis
process (``workers=1``): the CT is sent, the first answer picks the wrong lesion (a larger
decoy), an SR with a mark on the true tumor (written as OHIF writes it, ``tests/marks.py``) is
sent by dcmtk's storescu, and the node answers again for that tumor, superseding its first
report. Marks the node cannot act on get a not-evaluable SR of their own; its own reports are
ignored."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from cdss_node.config import RetrieveSection
from cdss_node.dicom.ct_series import write_ct_series
from cdss_node.node import Node
from cdss_node.store import requests
from cdss_node.store.retention import purge_finished_series
from tests.conftest import node_config
from tests.decoy import phantom_with_decoy
from tests.integration.dcmtk import store_responses, storescu
from tests.marks import ohif_mark_sr
from training.segmentation_eval import dice

pytestmark = pytest.mark.integration
OBSERVER = "Doe^Jane"


@pytest.fixture(scope="module")
def decoy_ct(tmp_path_factory):
    """The decoy case written as DICOM: (files, phantom, decoy mask)."""
    phantom, decoy = phantom_with_decoy()
    folder = tmp_path_factory.mktemp("decoy_ct")
    files = write_ct_series(phantom, folder, uid_seed="mark-test")
    return files, phantom, decoy


def start_node(tmp_path: Path, **retrieve) -> Node:
    config = node_config(tmp_path / "var", workers=1)
    config = replace(config, retrieve=RetrieveSection(**retrieve) if retrieve else
                     RetrieveSection())
    node = Node(config)
    node.start()
    return node


def send(node: Node, *paths: Path) -> None:
    sent = storescu(node.config.node.port, *paths)
    assert store_responses(sent) == ["(Success)"] * len(paths), sent.stdout + sent.stderr


def wait_for(check, timeout: float = 180.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def generation_done(node: Node, series_uid: str, generation: int) -> bool:
    rows = node.index.query("SELECT state FROM jobs WHERE series_uid=? AND generation=?",
                            (series_uid, generation))
    return bool(rows) and rows[-1]["state"] in ("done", "not_evaluable", "failed")


def result_folder(node: Node, series_uid: str, generation: int) -> Path:
    return node.config.data_path.resolve() / "results" / series_uid / f"g{generation}"


def mask_of(folder: Path) -> np.ndarray:
    """The result's mask on the phantom's grid: the CT volume's slices run up the slice
    normal, the phantom's (and its files') down."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "tumor_mask.nii.gz")))[::-1] > 0


def mark_on_tumor(files, phantom, tmp_path: Path, tool: str = "Length",
                  observer: str | None = OBSERVER) -> Path:
    """A length line across the true tumor on its centre slice, as OHIF writes it."""
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    z, y, x = phantom.tumor_centre_voxel
    # write_ct_series writes slice k of the phantom as file k; (column, row) of pixel centres
    points = [(x - 6 + 0.5, y + 0.5), (x + 6 + 0.5, y + 0.5)]
    sr = ohif_mark_sr(headers, headers[z], tool, points, observer=observer)
    path = tmp_path / f"mark-{tool}.dcm"
    sr.save_as(path, enforce_file_format=True)
    return path


def test_a_mark_on_the_true_tumor_answers_again_for_it(tmp_path, decoy_ct):
    files, phantom, decoy = decoy_ct
    series_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    node = start_node(tmp_path)
    try:
        send(node, *files)
        wait_for(lambda: generation_done(node, series_uid, 1), what="the first answer")
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


def summary_items(report) -> list:
    summary = next(i for i in report.ContentSequence
                   if i.ConceptNameCodeSequence[0].CodeValue == "121111")
    return list(summary.ContentSequence)
