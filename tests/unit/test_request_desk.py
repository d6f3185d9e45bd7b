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
                       "1.2.3.4.5", retrieve, attempts=1)
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


def test_a_failed_retrieval_is_tried_again_later_then_given_up(desk):
    finished_series(desk.index)
    desk.attempts, desk.retry_after_s = 2, 3600.0
    request = requests.add(desk.index, requests.STUDY, "1.2", series_uid="1.2.3")
    desk.check()
    row = requests.get(desk.index, request)
    assert (row["state"], row["attempts"]) == ("received", 1) and "tried again" in row["detail"]
    desk.check()                                   # not due yet
    assert desk.asked == ["1.2.3"]
    desk.retry_after_s = 0.0
    desk.check()
    assert requests.get(desk.index, request)["state"] == "failed"
    assert desk.asked == ["1.2.3", "1.2.3"]


def test_a_retrieval_cut_short_by_the_stop_is_tried_again_without_counting(desk):
    finished_series(desk.index)
    desk.attempts = 1

    def stop_meanwhile(series_uid, study_uid):
        desk.stopping = True
        return False
    desk.retrieve = stop_meanwhile
    request = requests.add(desk.index, requests.STUDY, "1.2", series_uid="1.2.3")
    desk.check()
    row = requests.get(desk.index, request)
    assert (row["state"], row["attempts"]) == ("received", 0)


def test_a_request_a_job_took_meanwhile_is_left_to_it(desk):
    """The round read its rows before a retrieval; the completion check gave one of them to
    a job meanwhile: the desk must not queue it again."""
    finished_series(desk.index)
    request = requests.add(desk.index, requests.STUDY, "1.2", series_uid="1.2.3")
    with desk.index.transaction() as db:
        requests.attach(db, request, 99, "1.2.3", time.time())
    assert desk.index.queue_requested(request, "1.2.3", "1.2") == "taken"
    requests.update(desk.index, request, requests.FAILED, "late")
    assert requests.get(desk.index, request)["state"] == requests.QUEUED


def hostile_sr(desk, small_series, damage) -> int:
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in small_series.files]
    sr = ohif_mark_sr(headers, headers[2], "Probe", [(30, 30)])
    damage(sr)
    path = desk.marks.instance_path(sr.StudyInstanceUID, sr.SeriesInstanceUID, sr.SOPInstanceUID)
    path.parent.mkdir(parents=True, exist_ok=True)
    sr.save_as(path, enforce_file_format=True)
    return requests.add(desk.index, requests.MARK, str(sr.StudyInstanceUID),
                        path=str(path.relative_to(desk.marks.root)),
                        sop_instance_uid=str(sr.SOPInstanceUID))


def test_a_hostile_sr_does_not_block_the_marks_after_it(desk, small_series):
    def content_as_text(sr):
        del sr.ContentSequence
        sr.add_new(0x0040A730, "LO", "not a sequence")

    def device_uid_without_uid(sr):
        item = pydicom.Dataset()
        item.ValueType = "UIDREF"
        concept = pydicom.Dataset()
        concept.CodeValue, concept.CodingSchemeDesignator = "121012", "DCM"
        concept.CodeMeaning = "Device Observer UID"
        item.ConceptNameCodeSequence = [concept]
        sr.ContentSequence.insert(0, item)

    first = hostile_sr(desk, small_series, content_as_text)
    second = hostile_sr(desk, small_series, device_uid_without_uid)
    desk.check()
    assert requests.get(desk.index, first)["state"] == "ignored"
    assert requests.get(desk.index, second)["state"] != "received"


def test_the_predecessor_passes_over_an_answer_to_an_unused_mark(tmp_path):
    """g2 answered a mark the node could not use, in the marking SR's own series: the SR of
    g3 supersedes g1's, the CT's last answer."""
    from pydicom.dataset import FileMetaDataset

    from cdss_node.uids import result_series_uid
    from cdss_node.worker import Worker

    config = node_config(tmp_path / "var", workers=1)
    index = Index(tmp_path / "index.sqlite3")
    worker = Worker(config, index, tmp_path / "spool")
    for generation, series in ((1, result_series_uid("1.2.3", "SR")), (2, "9.9.9")):
        ds = pydicom.Dataset()
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, f"1.2.{generation}"
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.34"
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
        folder = worker.results_root / "1.2.3" / f"g{generation}"
        folder.mkdir(parents=True)
        ds.save_as(folder / "sr.dcm", enforce_file_format=True)
    assert worker._previous_sr("1.2.3", 3).endswith("g1/sr.dcm")
    index.close()
