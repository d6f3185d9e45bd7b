"""Analysis ahead of completion: taken for exactly the files it read, once; thrown away when
the series changed; a failure leaves the job to analyse anew."""

from __future__ import annotations

import os
import threading
import time

import pytest

from cdss_node.ahead import AheadOfCompletion, files_key


@pytest.fixture
def series(tmp_path):
    paths = []
    for k in range(3):
        path = tmp_path / f"CT{k}.dcm"
        path.write_bytes(b"instance %d" % k)
        paths.append(path)
    return paths


class Counting:
    def __init__(self, fail: bool = False, wait: threading.Event | None = None):
        self.calls, self.fail, self.wait = [], fail, wait

    def __call__(self, paths):
        if self.wait is not None:
            self.wait.wait(10)
        self.calls.append(list(paths))
        if self.fail:
            raise RuntimeError("broken series")
        return f"analysis of {len(paths)}"


def test_taken_for_the_same_files_once(series):
    analyse = Counting()
    ahead = AheadOfCompletion(analyse)
    assert ahead.start(series)
    assert ahead.take(series) == "analysis of 3"
    assert ahead.take(series) is None               # once: the next job analyses anew
    assert len(analyse.calls) == 1


def replaced(path):
    """Stored again: a new file renamed into place, as the spool writes."""
    partial = path.with_suffix(".partial")
    partial.write_bytes(path.read_bytes())
    os.replace(partial, path)


@pytest.mark.parametrize("change", ["an instance added", "an instance replaced",
                                    "an instance removed", "other files"])
def test_stale_when_the_series_changed(series, tmp_path, change):
    ahead = AheadOfCompletion(Counting())
    assert ahead.start(series)
    job_paths = list(series)
    if change == "an instance added":
        extra = tmp_path / "CT9.dcm"
        extra.write_bytes(b"late")
        job_paths.append(extra)
    elif change == "an instance replaced":
        ahead.take([])                              # let the analysis end first
        assert ahead.start(series)
        time.sleep(0.01)
        replaced(series[1])
    elif change == "an instance removed":
        job_paths = job_paths[:2]
    else:
        job_paths = [tmp_path / "other.dcm"]
        job_paths[0].write_bytes(b"x")
    assert ahead.take(job_paths) is None
    assert ahead.take(series) is None               # what was not taken is let go


def test_a_file_replaced_while_it_was_read_makes_the_result_stale(series):
    """The key is taken before the files are read: a change during the analysis shows."""
    go = threading.Event()
    ahead = AheadOfCompletion(Counting(wait=go))
    assert ahead.start(series)
    replaced(series[0])
    go.set()
    assert ahead.take(series) is None


def test_a_failed_analysis_ahead_leaves_the_job_to_analyse(series):
    ahead = AheadOfCompletion(Counting(fail=True))
    assert ahead.start(series)
    assert ahead.take(series) is None


def test_one_at_a_time_and_the_job_waits_for_it(series):
    go = threading.Event()
    analyse = Counting(wait=go)
    ahead = AheadOfCompletion(analyse)
    assert ahead.start(series[:2])
    assert not ahead.start(series)                  # busy: asked for next
    threading.Timer(0.2, go.set).start()
    started = time.monotonic()
    assert ahead.take(series) is None               # waited for the running one: stale
    assert time.monotonic() - started >= 0.15
    assert len(analyse.calls) == 1                  # a job came: the next one never began


def test_the_series_grown_meanwhile_is_analysed_next(series):
    """A further association ended while the first part was analysed: the whole series is
    analysed as soon as that ends, and the job takes it."""
    go = threading.Event()
    analyse = Counting(wait=go)
    ahead = AheadOfCompletion(analyse)
    assert ahead.start(series[:2])
    assert not ahead.start(series)
    go.set()
    deadline = time.monotonic() + 10
    while len(analyse.calls) < 2:
        assert time.monotonic() < deadline, "the whole series was never analysed ahead"
        time.sleep(0.01)
    assert ahead.take(series) == "analysis of 3"
    assert analyse.calls == [series[:2], series]


def test_the_same_files_are_not_analysed_twice(series):
    analyse = Counting()
    ahead = AheadOfCompletion(analyse)
    assert ahead.start(series)
    ahead._thread.join()
    assert not ahead.start(series)                  # already made, waiting for its job
    assert ahead.take(series) == "analysis of 3"
    assert len(analyse.calls) == 1


def test_files_that_cannot_be_looked_at_begin_nothing(series, tmp_path):
    ahead = AheadOfCompletion(Counting())
    assert files_key([tmp_path / "gone.dcm"]) is None
    assert not ahead.start([*series, tmp_path / "gone.dcm"])
    assert ahead.take(series) is None


# ---------------------------------------------------------------- the worker's side

class Waiting:
    def __init__(self, uid, last):
        self.series_uid, self.last_received, self.open_associations = uid, last, 0


class Index:
    def __init__(self, fail=None, requested=()):
        self.fail, self.requested = fail, requested

    def query(self, sql, params):        # requests.waits_for: a request waits for the series
        assert "FROM requests" in sql
        return [{"1": 1}] if params[0] in self.requested else []

    def receiving_series(self):
        if self.fail:
            raise self.fail
        return [Waiting("1.2.3", 20.0), Waiting("1.2.4", 10.0)]

    def series_paths(self, series_uid):
        return [f"{series_uid}/CT1.dcm"]


class Process:
    def __init__(self, fail=None):
        self.sent, self.stopped, self.fail = [], False, fail

    def send_ahead(self, request):
        if self.fail:
            raise self.fail
        self.sent.append(request)

    def stop(self):
        self.stopped = True


def worker_with(tmp_path, index, process):
    from cdss_node.config import Config, NodeSection
    from cdss_node.worker import Worker

    worker = Worker(Config(node=NodeSection(data_dir=str(tmp_path))), index=index,
                    spool_root=tmp_path)
    worker.process = process
    worker.series_released()
    return worker


def test_a_series_a_request_waits_for_is_not_analysed_ahead(tmp_path):
    """Its job takes the radiologist's mark: an analysis without it would be of no use."""
    worker = worker_with(tmp_path, Index(requested=("1.2.4",)), Process())
    worker._start_ahead()
    assert [r.paths for r in worker.process.sent] == [(str(tmp_path / "1.2.3/CT1.dcm"),)]


def test_the_worker_asks_for_the_series_whose_job_comes_first(tmp_path):
    worker = worker_with(tmp_path, Index(), Process())
    worker._start_ahead()
    assert [r.paths for r in worker.process.sent] == [(str(tmp_path / "1.2.4/CT1.dcm"),)]
    worker._start_ahead()                           # asked once per association end
    assert len(worker.process.sent) == 1


@pytest.mark.parametrize("failure", ["index", "pipe"])
def test_a_failed_ask_is_logged_and_the_worker_goes_on(tmp_path, failure):
    import sqlite3

    index = Index(sqlite3.OperationalError("database is locked") if failure == "index" else None)
    process = Process(BrokenPipeError(32, "Broken pipe") if failure == "pipe" else None)
    worker = worker_with(tmp_path, index, process)
    worker._start_ahead()                           # no exception leaves it
    assert process.sent == [] and process.stopped == (failure == "pipe")
