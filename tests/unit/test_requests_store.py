"""Requests in the index (``store.requests``): a mark or analyze-study queues its series
again, waits for it, rides on the job that analyses it, and ends with that job."""

from __future__ import annotations

import time

import pytest

from cdss_node.series import CompletionRule, SeriesTracker
from cdss_node.store import requests
from cdss_node.store.index import Index
from cdss_node.store.states import SeriesState
from tests.unit.test_store import record, state


@pytest.fixture
def index(tmp_path):
    idx = Index(tmp_path / "index.sqlite3")
    yield idx
    idx.close()


def finished_series(index: Index, series: str = "1.2.3") -> None:
    record(index, series=series)
    SeriesTracker(index, CompletionRule(0, 30)).check(time.time() + 1)
    job, _, _ = index.claim_job()
    assert index.finish_job(job, SeriesState.DONE)


def mark(index: Index) -> int:
    return requests.add(index, requests.MARK, "1.2", path="1.2/9.9/9.9.1.dcm",
                        sop_instance_uid="9.9.1")


def test_a_finished_series_is_queued_again_with_the_request(index):
    finished_series(index)
    request = mark(index)
    assert index.queue_requested(request, "1.2.3", "1.2") == "queued"
    assert state(index) == "queued"
    job, series, generation = index.claim_job()
    assert (series, generation) == ("1.2.3", 2)
    assert index.job_request(job)["id"] == request
    assert requests.get(index, request)["state"] == "queued"
    index.finish_job(job, SeriesState.DONE, result_file="r.json")
    assert requests.get(index, request)["state"] == "done"


def test_a_series_still_receiving_takes_the_request_at_completion(index):
    record(index)
    request = mark(index)
    assert index.queue_requested(request, "1.2.3", "1.2") == "waiting"
    assert requests.get(index, request)["series_uid"] == "1.2.3"
    SeriesTracker(index, CompletionRule(0, 30)).check(time.time() + 1)
    job, _, generation = index.claim_job()
    assert generation == 1 and index.job_request(job)["id"] == request


def test_a_series_the_node_never_saw_is_made_queued(index):
    request = mark(index)
    assert index.queue_requested(request, "4.5.6", "1.2", modality="SR") == "queued"
    rows = index.query("SELECT state, modality, generation FROM series WHERE series_uid=?",
                       ("4.5.6",))
    assert tuple(rows[0]) == ("queued", "SR", 1)


def test_the_latest_mark_wins_and_the_older_is_superseded(index):
    record(index)
    older, newer = mark(index), mark(index)
    for request in (older, newer):
        index.queue_requested(request, "1.2.3", "1.2")
    SeriesTracker(index, CompletionRule(0, 30)).check(time.time() + 1)
    job, _, _ = index.claim_job()
    assert index.job_request(job)["id"] == newer
    assert requests.get(index, older)["state"] == requests.SUPERSEDED


def test_new_instances_give_the_request_back_to_the_next_job(index):
    finished_series(index)
    request = mark(index)
    index.queue_requested(request, "1.2.3", "1.2")
    record(index, sop="1.2.3.9")                  # the series reopens: the job is superseded
    assert requests.get(index, request)["state"] == requests.WAITING
    SeriesTracker(index, CompletionRule(0, 30)).check(time.time() + 1)
    job, _, generation = index.claim_job()
    assert generation == 3 and index.job_request(job)["id"] == request


def test_a_job_that_fails_fails_its_request(index):
    finished_series(index)
    request = mark(index)
    index.queue_requested(request, "1.2.3", "1.2")
    job, _, _ = index.claim_job()
    assert index.retry_or_fail(job, "crashed", max_attempts=1) == SeriesState.FAILED
    assert requests.get(index, request)["state"] == "failed"


def test_an_index_of_an_older_node_gets_the_new_column(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, series_uid TEXT NOT NULL, "
               "generation INTEGER NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL "
               "DEFAULT 0, created_at REAL NOT NULL, started_at REAL, finished_at REAL, "
               "error TEXT)")
    db.close()
    index = Index(path)
    columns = {row["name"] for row in index.query("PRAGMA table_info(jobs)")}
    index.close()
    assert {"result_file", "request_id"} <= columns


def test_a_mark_waiting_beside_an_analyze_study_request_wins_and_both_ride(index):
    record(index)
    mark_request = mark(index)
    study = requests.add(index, requests.STUDY, "1.2", series_uid="1.2.3")
    for request in (mark_request, study):
        assert index.queue_requested(request, "1.2.3", "1.2") == "waiting"
    SeriesTracker(index, CompletionRule(0, 30)).check(time.time() + 1)
    job, _, _ = index.claim_job()
    assert index.job_request(job)["id"] == mark_request
    assert requests.get(index, study)["job_id"] == job
    index.finish_job(job, SeriesState.DONE)
    assert [requests.get(index, r)["state"] for r in (mark_request, study)] == ["done", "done"]


def test_a_refused_request_keeps_its_reason_while_it_waits(index):
    record(index, series="4.5.6")                  # its series is still receiving
    request = mark(index)
    assert index.queue_requested(request, "4.5.6", "1.2", reason="MARK_WITHOUT_IMAGE",
                                 detail="no image") == "waiting"
    assert requests.get(index, request)["detail"] == "no image"    # what the SR will say
    SeriesTracker(index, CompletionRule(0, 30)).check(time.time() + 1)
    job, _, _ = index.claim_job()
    assert index.job_request(job) is None           # a job never takes a refused request
    index.finish_job(job, SeriesState.DONE)
    assert index.queue_requested(request, "4.5.6", "1.2") == "queued"
    assert requests.get(index, request)["reason"] == "MARK_WITHOUT_IMAGE"


def test_an_unused_mark_leaves_the_series_as_it_was(index):
    finished_series(index)
    request = mark(index)
    index.queue_requested(request, "1.2.3", "1.2")
    job, _, _ = index.claim_job()
    index.finish_job(job, SeriesState.NOT_EVALUABLE, "NE014 ...", keep_previous=True)
    assert state(index) == "done"
    assert requests.get(index, request)["state"] == "not_evaluable"
