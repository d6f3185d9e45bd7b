"""Spool files without an index row (a crash between the rename and the index commit, inside a
purge, or after an instance moved): indexed when they hold the instance their place names,
else deleted; found by comparing paths, reading only the difference."""

import dataclasses
import os
import shutil
import time

import pydicom
import pytest

from cdss_node.dicom.spooled import spooled_record
from cdss_node.series import CompletionRule, SeriesTracker
from cdss_node.store.index import Index
from cdss_node.store.orphans import PART_MAX_AGE_S, recover_orphans, remove_stale_parts
from cdss_node.store.retention import purge_finished_series
from cdss_node.store.spool import Spool
from cdss_node.store.states import SeriesState
from tests.conftest import write_series


@pytest.fixture
def index(tmp_path):
    idx = Index(tmp_path / "index.sqlite3")
    yield idx
    idx.close()


@pytest.fixture
def spool(tmp_path):
    return Spool(tmp_path / "spool")


@pytest.fixture(scope="module")
def ct_files(tmp_path_factory):
    return write_series(tmp_path_factory.mktemp("ct"), rows=64, slices=8).files


def spool_file(spool: Spool, source) -> str:
    """Copy a DICOM file to its place in the spool, as the receiver's rename leaves it."""
    header = pydicom.dcmread(source, stop_before_pixels=True)
    path = spool.instance_path(header.StudyInstanceUID, header.SeriesInstanceUID,
                               header.SOPInstanceUID)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, path)
    return str(path.relative_to(spool.root))


def counting(calls: list):
    def read(path, relative):
        calls.append(relative)
        return spooled_record(path, relative)
    return read


def test_an_instance_renamed_into_the_spool_but_never_indexed_joins_its_series(
        index, spool, ct_files):
    indexed = [spool_file(spool, f) for f in ct_files[:2]]
    for relative in indexed:
        index.record_instance(spooled_record(spool.root / relative, relative))
    orphan = spool_file(spool, ct_files[2])
    calls: list = []
    report = recover_orphans(index, spool, counting(calls))
    assert (report.indexed, report.removed, calls) == (1, 0, [orphan])   # only it was read
    header = pydicom.dcmread(ct_files[2], stop_before_pixels=True)
    row = index.query("SELECT * FROM instances WHERE path=?", (orphan,))[0]
    assert (row["sop_instance_uid"], row["series_uid"], row["sop_class_uid"]) == (
        header.SOPInstanceUID, header.SeriesInstanceUID, header.SOPClassUID)
    assert row["transfer_syntax_uid"] == header.file_meta.TransferSyntaxUID
    assert row["size"] == (spool.root / orphan).stat().st_size
    assert sorted(index.series_paths(header.SeriesInstanceUID)) == sorted([*indexed, orphan])
    assert recover_orphans(index, spool, counting(calls)) == report.__class__(0, 0)
    assert calls == [orphan]                 # the next start reads nothing


def test_retention_deletes_the_recovered_instance_with_its_series(index, spool, ct_files):
    orphan = spool_file(spool, ct_files[0])
    recover_orphans(index, spool, spooled_record)
    SeriesTracker(index, CompletionRule(0, 30)).check(time.time() + 1)
    job_id, series_uid, _ = index.claim_job()
    index.finish_job(job_id, SeriesState.DONE)
    assert purge_finished_series(index, spool, 30, now=time.time() + 31 * 86400) == [series_uid]
    assert not (spool.root / orphan).exists()


def test_unreadable_misplaced_and_stale_files_are_removed(index, spool, ct_files, tmp_path):
    broken = spool.root / "1.2" / "1.2.3" / "1.2.3.4.dcm"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"half a file")
    misplaced = spool.root / "1.2" / "1.2.3" / "1.2.3.5.dcm"      # holds another instance
    shutil.copyfile(ct_files[0], misplaced)
    moved = spool_file(spool, ct_files[1])        # the instance now lives in another series
    record = spooled_record(spool.root / moved, moved)
    index.record_instance(record.__class__(**{**record.__dict__, "series_uid": "1.2.9",
                                              "path": "1.2/1.2.9/x.dcm"}))
    report = recover_orphans(index, spool, spooled_record)
    assert (report.indexed, report.removed) == (0, 3)
    assert not broken.exists() and not misplaced.exists() and not (spool.root / moved).exists()
    assert not broken.parent.exists()             # the emptied series folder too
    assert index.query("SELECT path FROM instances")[0][0] == "1.2/1.2.9/x.dcm"


def test_a_file_left_by_a_purge_of_its_series_is_removed_not_reindexed(index, spool, ct_files):
    relative = spool_file(spool, ct_files[0])
    index.record_instance(spooled_record(spool.root / relative, relative))
    SeriesTracker(index, CompletionRule(0, 30)).check(time.time() + 1)
    job_id, series_uid, _ = index.claim_job()
    index.finish_job(job_id, SeriesState.DONE)
    kept = spool.remove_if_older
    spool.remove_if_older = lambda *args: None    # the node dies before it deletes the files
    purge_finished_series(index, spool, 30, now=time.time() + 31 * 86400)
    spool.remove_if_older = kept
    past = time.time() - 60
    os.utime(spool.root / relative, (past, past))
    assert recover_orphans(index, spool, spooled_record).removed == 1
    assert not (spool.root / relative).exists()
    assert index.query("SELECT state FROM series")[0][0] == "done"      # not reopened


def test_leftover_probes_and_old_partial_files_are_removed(index, spool):
    (spool.root / ".healthz-7").write_bytes(b"healthz\n")
    old, fresh = spool.tmp / "1-0.part", spool.tmp / "1-rx1.part"
    old.write_bytes(b"x")
    fresh.write_bytes(b"still arriving")
    past = time.time() - PART_MAX_AGE_S - 60
    os.utime(old, (past, past))
    recover_orphans(index, spool, spooled_record)
    assert [p.name for p in spool.root.iterdir()] == [".tmp"]
    assert remove_stale_parts(spool) == 1
    assert [p.name for p in spool.tmp.iterdir()] == ["1-rx1.part"]


def test_a_newer_copy_whose_row_was_pending_at_the_crash_replaces_the_indexed_one(
        index, spool, ct_files):
    """Rows are written in batches: a crash can leave the index with an older copy of an
    instance (another series) while the newer copy's file has no row. The newer one wins."""
    newer = spool_file(spool, ct_files[2])
    record = spooled_record(spool.root / newer, newer)
    older = spool.root / "1.2" / "1.2.9" / "older.dcm"
    older.parent.mkdir(parents=True)
    shutil.copyfile(ct_files[2], older)
    index.record_instance(dataclasses.replace(
        record, series_uid="1.2.9", path="1.2/1.2.9/older.dcm",
        received_at=(spool.root / newer).stat().st_mtime - 60))
    report = recover_orphans(index, spool, spooled_record)
    assert (report.indexed, report.removed) == (1, 0)
    assert index.query("SELECT path FROM instances")[0][0] == newer
    assert not older.exists() and (spool.root / newer).exists()
