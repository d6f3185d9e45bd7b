"""The request desk's decisions without a network: what it does when a retrieval fails or
delivers nothing, what it takes up again at start, and the marks' retention."""

from __future__ import annotations

import time

import pydicom
import pytest

from cdss_node.requested import RequestDesk
from cdss_node.store import requests
from cdss_node.store.index import Index
from cdss_node.store.spool import Spool
from tests.conftest import node_config
from tests.marks import ohif_mark_sr
from tests.unit.test_requests_store import finished_series


@pytest.fixture
def desk(tmp_path):
    index = Index(tmp_path / "index.sqlite3")
    marks = Spool(tmp_path / "marks")
    asked = []

    def retrieve(series_uid, study_uid):
        asked.append(series_uid)
        return desk.delivers

    desk = RequestDesk(node_config(tmp_path / "var"), index, Spool(tmp_path / "spool"), marks,
                       "1.2.3.4.5", retrieve)
    desk.delivers, desk.asked = False, asked
    yield desk
    index.close()


def test_a_study_request_the_pacs_cannot_serve_fails_and_leaves_the_answer(desk):
    finished_series(desk.index)          # its file is not in the spool: as after retention
    request = requests.add(desk.index, requests.STUDY, "1.2", series_uid="1.2.3")
    assert not desk.check()
    row = requests.get(desk.index, request)
    assert row["state"] == "failed" and "the PACS did not deliver it" in row["detail"]
    assert desk.asked == ["1.2.3"]
    assert desk.index.query("SELECT state FROM series")[0][0] == "done"


def test_a_retrieval_that_delivers_nothing_is_not_retrievable(desk):
    finished_series(desk.index)
    desk.delivers = True
    request = requests.add(desk.index, requests.STUDY, "1.2", series_uid="1.2.3")
    desk.check()
    assert "none of it arrived" in requests.get(desk.index, request)["detail"]


def test_at_start_an_unrecorded_mark_and_a_cut_retrieval_are_taken_up(desk, small_series):
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in small_series.files]
    sr = ohif_mark_sr(headers, headers[2], "Probe", [(30, 30)])
    path = desk.marks.instance_path(sr.StudyInstanceUID, sr.SeriesInstanceUID, sr.SOPInstanceUID)
    path.parent.mkdir(parents=True)
    sr.save_as(path, enforce_file_format=True)
    cut = requests.add(desk.index, requests.STUDY, "1.2", series_uid="1.2.3")
    requests.update(desk.index, cut, requests.RETRIEVING)
    assert desk.recover() == 2
    assert requests.get(desk.index, cut)["state"] == requests.RECEIVED
    [row] = desk.index.query("SELECT * FROM requests WHERE kind='mark'")
    assert (row["study_uid"], row["sop_instance_uid"]) == (sr.StudyInstanceUID,
                                                           sr.SOPInstanceUID)
    assert desk.recover() == 0


def test_marks_of_ended_requests_leave_the_disk_after_retention(desk):
    path = desk.marks.root / "1.2" / "9.9" / "9.9.1.dcm"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"sr")
    request = requests.add(desk.index, requests.MARK, "1.2", path="1.2/9.9/9.9.1.dcm")
    assert requests.purge_marks(desk.index, desk.marks, 1, now=time.time() + 2 * 86400) == 0
    requests.update(desk.index, request, requests.IGNORED, "no mark")
    assert requests.purge_marks(desk.index, desk.marks, 1, now=time.time() + 2 * 86400) == 1
    assert not path.exists() and requests.get(desk.index, request)["path"] is None
