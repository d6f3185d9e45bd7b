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
    assert ahead.start(series)
    assert not ahead.start(series[:2])              # busy: nothing else begun
    threading.Timer(0.2, go.set).start()
    started = time.monotonic()
    assert ahead.take(series) == "analysis of 3"    # waited for the running one
    assert time.monotonic() - started >= 0.15
    assert len(analyse.calls) == 1


def test_files_that_cannot_be_looked_at_begin_nothing(series, tmp_path):
    ahead = AheadOfCompletion(Counting())
    assert files_key([tmp_path / "gone.dcm"]) is None
    assert not ahead.start([*series, tmp_path / "gone.dcm"])
    assert ahead.take(series) is None
