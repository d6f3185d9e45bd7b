import time

import pytest

from cdss_node.series import CompletionRule, SeriesTracker
from cdss_node.store.index import Index, InstanceRecord
from cdss_node.store.retention import purge_finished_series, purge_results
from cdss_node.store.spool import Spool
from cdss_node.store.states import SeriesState, TransitionError, check_transition
from cdss_node.store.status import series_status


@pytest.fixture
def index(tmp_path):
    idx = Index(tmp_path / "index.sqlite3")
    yield idx
    idx.close()


def record(index, sop="1.2.3.1", series="1.2.3", association=None):
    index.record_instance(InstanceRecord(
        sop_instance_uid=sop, sop_class_uid="1.2.840.10008.5.1.4.1.1.2", study_uid="1.2",
        series_uid=series, modality="CT", transfer_syntax_uid="1.2.840.10008.1.2.1",
        path=f"1.2/{series}/{sop}.dcm", size=10, association_id=association))


def state(index, series="1.2.3"):
    return index.query("SELECT state FROM series WHERE series_uid=?", (series,))[0][0]


def test_index_uses_wal(index):
    assert index.query("PRAGMA journal_mode")[0][0] == "wal"


def test_instances_open_a_receiving_series_and_are_counted(index):
    record(index, "1.2.3.1")
    record(index, "1.2.3.2")
    record(index, "1.2.3.2")  # the same instance again replaces, does not add
    [status] = series_status(index)
    assert (status.state, status.instances, status.modality) == ("receiving", 2, "CT")


def test_completion_needs_released_association_and_grace(index):
    association = index.open_association("PACS", "127.0.0.1:5000")
    record(index, association=association)
    tracker = SeriesTracker(index, CompletionRule(grace_s=2.0, quiet_s=30.0))
    now = time.time()
    assert tracker.check(now + 5) == []  # association still open, quiet period not reached
    index.close_association(association, "released")
    assert tracker.check(now + 1) == []  # grace not yet over
    assert tracker.check(now + 2.5) == ["1.2.3"]
    assert state(index) == "queued"
    assert index.query("SELECT state, generation FROM jobs")[0][:] == ("queued", 1)


def test_quiet_period_completes_a_series_whose_association_stays_open(index):
    index.open_association("PACS", "127.0.0.1:5000")
    record(index, association=1)
    tracker = SeriesTracker(index, CompletionRule(grace_s=2.0, quiet_s=30.0))
    assert tracker.check(time.time() + 31) == ["1.2.3"]


def test_instance_after_completion_reopens_and_supersedes_the_job(index):
    record(index)
    SeriesTracker(index, CompletionRule(0, 30)).check(time.time() + 1)
    record(index, "1.2.3.9")
    assert state(index) == "receiving"
    assert index.query("SELECT state FROM jobs")[0][0] == "superseded"
    assert index.query("SELECT generation FROM series")[0][0] == 2
    events = [r[0] for r in index.query("SELECT to_state FROM series_events ORDER BY id")]
    assert events == ["receiving", "complete", "queued", "receiving"]


def test_completion_is_refused_when_an_instance_arrived_since_the_decision(index):
    record(index)
    [series] = index.receiving_series()
    record(index, "1.2.3.5")
    assert not index.complete_and_queue(series.series_uid, series.last_received - 1, "test")
    assert state(index) == "receiving"


def test_recovery_requeues_running_jobs_and_closes_associations(index):
    association = index.open_association("PACS", "peer")
    record(index, association=association)
    index.close_association(association, "released")
    SeriesTracker(index, CompletionRule(0, 30)).check(time.time() + 1)
    job_id, series_uid, generation = index.claim_job()
    assert state(index) == "processing"
    index.open_association("OTHER", "peer")
    report = index.recover()
    assert (report.associations_closed, report.jobs_requeued) == (1, 1)
    assert state(index) == "queued"
    assert index.claim_job()[0] == job_id
    assert index.finish_job(job_id, SeriesState.DONE)
    assert state(index) == "done"


def test_finish_of_a_superseded_job_is_refused(index):
    record(index)
    SeriesTracker(index, CompletionRule(0, 30)).check(time.time() + 1)
    job_id, _, _ = index.claim_job()
    record(index, "1.2.3.7")  # series reopened while processing
    assert not index.finish_job(job_id, SeriesState.DONE)
    assert state(index) == "receiving"


def test_state_machine_rejects_jumps():
    check_transition("receiving", "complete")
    with pytest.raises(TransitionError):
        check_transition("receiving", "done")
    with pytest.raises(TransitionError):
        check_transition("done", "processing")
    check_transition("done", "queued")      # analysed again for a request (a mark)


def test_completion_rule_validates_itself():
    with pytest.raises(ValueError, match="grace_s"):
        CompletionRule(grace_s=-1)


def test_spool_refuses_uids_that_are_paths(tmp_path):
    spool = Spool(tmp_path / "spool")
    assert spool.instance_path("1.2", "1.2.3", "1.2.3.4").is_relative_to(spool.root)
    for bad in ("../1", "1.2/../../x", "1.02", "", "1." * 40, "/etc/passwd"):
        with pytest.raises(ValueError):
            spool.instance_path("1.2", bad, "1.2.3.4")


def test_spool_atomic_write_and_cleanup(tmp_path):
    spool = Spool(tmp_path / "spool", fsync=True)
    path = spool.instance_path("1.2", "1.2.3", "1.2.3.4")
    spool.write_atomic(path, b"abc")
    assert path.read_bytes() == b"abc"
    (spool.tmp / "left.part").write_bytes(b"x")
    assert spool.clean_tmp() == 1
    assert list(spool.tmp.iterdir()) == []


def test_a_write_whose_folder_cannot_be_made_leaves_no_partial_file(tmp_path):
    spool = Spool(tmp_path / "spool")
    (spool.root / "1.2").write_text("a file where the study folder belongs\n")
    with pytest.raises(OSError):
        spool.write_atomic(spool.instance_path("1.2", "1.2.3", "1.2.3.4"), b"abc")
    assert list(spool.tmp.iterdir()) == []


def test_a_large_dataset_on_disk_is_copied_in_the_kernel(tmp_path):
    from cdss_node.store.spool import FileRange

    spool = Spool(tmp_path / "spool")
    source = tmp_path / "received.part"
    source.write_bytes(bytes(range(256)) * 8192)          # 2 MiB
    path = spool.instance_path("1.2", "1.2.3", "1.2.3.4")
    with open(source, "rb") as f:
        spool.write_atomic(path, b"META", FileRange(f.fileno(), 0, 2 * 1024 * 1024))
    assert path.read_bytes() == b"META" + source.read_bytes()


def test_retention_purges_only_old_finished_series(tmp_path, index):
    spool = Spool(tmp_path / "spool")
    for series in ("1.2.3", "1.2.4"):
        path = spool.instance_path("1.2", series, series + ".1")
        spool.write_atomic(path, b"x")
        record(index, series + ".1", series)
    SeriesTracker(index, CompletionRule(0, 30)).check(time.time() + 1)
    job_id, series_uid, _ = index.claim_job()
    index.finish_job(job_id, SeriesState.DONE)
    assert purge_finished_series(index, spool, 30) == []  # too recent
    purged = purge_finished_series(index, spool, 30, now=time.time() + 31 * 86400)
    assert purged == [series_uid]
    assert not (spool.root / "1.2" / series_uid).exists()
    other = "1.2.4" if series_uid == "1.2.3" else "1.2.3"
    assert (spool.root / "1.2" / other).exists()  # queued, not finished: kept


def test_retention_keeps_a_copy_written_after_it_decided(tmp_path, index):
    import os

    spool = Spool(tmp_path / "spool")
    path = spool.instance_path("1.2", "1.2.3", "1.2.3.1")
    spool.write_atomic(path, b"old")
    record(index, "1.2.3.1", "1.2.3")
    SeriesTracker(index, CompletionRule(0, 30)).check(time.time() + 1)
    job_id, _, _ = index.claim_job()
    index.finish_job(job_id, SeriesState.DONE)
    future = time.time() + 3600
    os.utime(path, (future, future))  # as if the PACS sent it again during the purge
    assert purge_finished_series(index, spool, 30, now=time.time() + 31 * 86400) == ["1.2.3"]
    assert path.read_bytes() == b"old"


def test_result_folders_leave_the_disk_when_old_and_delivered(tmp_path, index):
    from cdss_node.store import outbox

    record(index)
    SeriesTracker(index, CompletionRule(0, 30)).check(time.time() + 1)
    job_id, series_uid, generation = index.claim_job()
    folder = tmp_path / "results" / series_uid / f"g{generation}"
    folder.mkdir(parents=True)
    (folder / "result.json").write_text("{}")
    index.finish_job(job_id, SeriesState.DONE, result_file=str(folder / "result.json"),
                     deliveries=(("pacs", str(folder / "sr.dcm")),))
    later = time.time() + 31 * 86400
    assert purge_results(index, tmp_path / "results", 30) == 0             # too recent
    assert purge_results(index, tmp_path / "results", 30, now=later) == 0  # not yet sent
    delivery = outbox.due(index)[0]
    outbox.mark_sent(index, delivery.id)
    assert purge_results(index, tmp_path / "results", 30, now=later) == 1
    assert not (tmp_path / "results" / series_uid).exists()
    assert series_status(index)[0].result_file is None and series_status(index)[0].state == "done"


def test_a_crashed_job_is_retried_then_failed_with_its_reason(index):
    record(index)
    SeriesTracker(index, CompletionRule(0, 30)).check(time.time() + 1)
    job_id, _, _ = index.claim_job()
    assert index.retry_or_fail(job_id, "analysis process died", max_attempts=2) == "queued"
    assert state(index) == "queued" and index.claim_job()[0] == job_id
    assert index.retry_or_fail(job_id, "timed out after 900 s", max_attempts=2) == "failed"
    row = index.query("SELECT state, reason FROM series")[0]
    assert row["state"] == "failed" and row["reason"] == "attempt 2 of 2: timed out after 900 s"
    assert index.claim_job() is None


def test_a_finished_job_keeps_its_result_file_and_the_series_its_paths(index):
    record(index, "1.2.3.2")
    record(index, "1.2.3.1")
    assert index.series_paths("1.2.3") == ["1.2/1.2.3/1.2.3.1.dcm", "1.2/1.2.3/1.2.3.2.dcm"]
    SeriesTracker(index, CompletionRule(0, 30)).check(time.time() + 1)
    job_id, _, _ = index.claim_job()
    assert index.finish_job(job_id, SeriesState.DONE, result_file="/r/result.json")
    assert index.query("SELECT result_file FROM jobs")[0][0] == "/r/result.json"


def test_an_index_of_an_older_node_gains_the_new_columns(tmp_path):
    import sqlite3

    old = sqlite3.connect(tmp_path / "old.sqlite3")
    old.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, series_uid TEXT NOT NULL, "
                "generation INTEGER NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL "
                "DEFAULT 0, created_at REAL NOT NULL, started_at REAL, finished_at REAL, "
                "error TEXT)")
    old.execute("INSERT INTO jobs (series_uid, generation, state, created_at) "
                "VALUES ('1.2', 1, 'done', 0)")
    old.commit()
    old.close()
    index = Index(tmp_path / "old.sqlite3")
    assert index.query("SELECT state, result_file FROM jobs")[0][:] == ("done", None)
    index.close()


def test_a_series_received_again_after_its_purge_is_purged_again(tmp_path, index):
    spool = Spool(tmp_path / "spool")

    def receive_and_finish(sop: str) -> None:
        spool.write_atomic(spool.instance_path("1.2", "1.2.3", sop), b"x")
        record(index, sop)
        SeriesTracker(index, CompletionRule(0, 30)).check(time.time() + 1)
        job_id, _, _ = index.claim_job()
        index.finish_job(job_id, SeriesState.DONE)

    receive_and_finish("1.2.3.1")
    assert purge_finished_series(index, spool, 30, now=time.time() + 31 * 86400) == ["1.2.3"]
    receive_and_finish("1.2.3.2")       # the PACS sends the series again, months later
    assert purge_finished_series(index, spool, 30) == []                      # too recent
    assert purge_finished_series(index, spool, 30, now=time.time() + 31 * 86400) == ["1.2.3"]
    assert not (spool.root / "1.2" / "1.2.3").exists()
    assert index.query("SELECT COUNT(*) FROM instances")[0][0] == 0


def test_free_space_is_read_once_a_while_and_counts_what_was_taken_since():
    from cdss_node.store.spool import FreeSpace

    readings = []

    def read_free() -> int:
        readings.append(1)
        return 1000

    free = FreeSpace(read_free, interval_s=3600, recheck_bytes=700)
    assert free.take(300, reserve=100)          # 1000 - 300 >= 100
    assert free.take(300, reserve=100)          # 400 left
    assert not free.take(350, reserve=100)      # would leave 50: refused, nothing counted
    assert free.take(300, reserve=0)            # 100 left, no reserve: taken
    assert len(readings) == 1                   # all of it on one reading
    assert free.take(900, reserve=100)          # 900 >= 700 taken: read again, 1000 free
    assert len(readings) == 2
    every_time = FreeSpace(read_free, interval_s=0.0)
    every_time.take(1, 0), every_time.take(1, 0)
    assert len(readings) == 4                   # interval 0: a reading at every take


def test_a_copy_received_earlier_does_not_replace_a_later_one(index):
    """Rows are written in batches, so one association's older copy of an instance can reach
    the index after another association's newer copy: the newer stays, the older file is the
    one no longer referenced."""
    def copy(series, at, size):
        return InstanceRecord(
            sop_instance_uid="1.2.3.1", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            study_uid="1.2", series_uid=series, modality="CT",
            transfer_syntax_uid="1.2.840.10008.1.2.1", path=f"1.2/{series}/1.2.3.1.dcm",
            size=size, association_id=None, received_at=at)

    assert index.record_instance(copy("1.2.9", at=2.0, size=20)) is None
    assert index.record_instance(copy("1.2.3", at=1.0, size=10)) == "1.2/1.2.3/1.2.3.1.dcm"
    assert index.record_instance(copy("1.2.9", at=1.5, size=15)) is None   # same place, older
    [row] = index.query("SELECT series_uid, size, received_at FROM instances")
    assert tuple(row) == ("1.2.9", 20, 2.0)
    assert index.record_instance(copy("1.2.3", at=3.0, size=30)) == "1.2/1.2.9/1.2.3.1.dcm"
    [row] = index.query("SELECT series_uid, size FROM instances")
    assert tuple(row) == ("1.2.3", 30)
