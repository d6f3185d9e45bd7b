"""The outbox: rows made with the job's outcome, backoff, dead letters, resend."""

from __future__ import annotations

import time

import pytest

from cdss_node.series import CompletionRule, SeriesTracker
from cdss_node.store import outbox
from cdss_node.store.index import Index
from cdss_node.store.states import SeriesState
from tests.unit.test_store import record


@pytest.fixture
def index(tmp_path):
    idx = Index(tmp_path / "index.sqlite3")
    yield idx
    idx.close()


def finished_with_deliveries(index, files=("/r/seg.dcm", "/r/sr.dcm")) -> None:
    """One series received, completed and analysed; its ``files`` wait for "pacs"."""
    record(index)
    SeriesTracker(index, CompletionRule(0, 30)).check(time.time() + 1)
    job_id, _, _ = index.claim_job()
    assert index.finish_job(job_id, SeriesState.DONE,
                            deliveries=tuple(("pacs", str(path)) for path in files))


def test_rows_are_made_with_the_outcome_and_survive_a_restart(tmp_path, index):
    finished_with_deliveries(index)
    index.close()
    reopened = Index(tmp_path / "index.sqlite3")
    assert [d.path for d in outbox.due(reopened)] == ["/r/seg.dcm", "/r/sr.dcm"]
    reopened.close()


def test_a_superseded_job_sends_nothing(index):
    record(index)
    SeriesTracker(index, CompletionRule(0, 30)).check(time.time() + 1)
    job_id, _, _ = index.claim_job()
    record(index, "1.2.3.9")  # reopened while processing
    assert not index.finish_job(job_id, SeriesState.DONE, deliveries=(("pacs", "/r/sr.dcm"),))
    assert outbox.counts(index) == {}


def test_failures_back_off_exponentially_then_go_dead_and_resend_revives_them(index):
    policy = outbox.RetryPolicy(initial_s=10, max_s=40, give_up_after_s=100)
    finished_with_deliveries(index)
    start = outbox.due(index)[0].created_at
    waits = []
    for k in range(4):
        row = outbox.due(index, now=start + 1000)[0]
        assert outbox.mark_failed(index, row, "refused", policy, now=start + 10 * k) == "pending"
        waits.append(index.query("SELECT next_attempt_at FROM outbox WHERE id=?",
                                 (row.id,))[0][0] - (start + 10 * k))
    assert waits == [10, 20, 40, 40]
    row = outbox.due(index, now=start + 1000)[0]
    assert outbox.mark_failed(index, row, "refused", policy, now=start + 100) == "dead"
    assert outbox.counts(index) == {"pending": 1, "dead": 1}
    assert outbox.dead_rows(index)[0]["last_error"] == "refused"
    assert outbox.resend_dead(index) == 1 and outbox.counts(index) == {"pending": 2}


def test_a_sent_row_is_not_due_again(index):
    finished_with_deliveries(index)
    for row in outbox.due(index):
        outbox.mark_sent(index, row.id)
    assert outbox.due(index, now=time.time() + 10**6) == []
    assert outbox.counts(index) == {"sent": 2}


def test_status_lists_dead_results_and_resend_queues_them(tmp_path, capsys):
    from cdss_node.cli import main

    index = Index(tmp_path / "var" / "index.sqlite3")
    finished_with_deliveries(index)
    for row in outbox.due(index):
        outbox.mark_failed(index, row, "no association with PACS@127.0.0.1:104",
                           outbox.RetryPolicy(give_up_after_s=0))
    index.close()
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ndata_dir = "{tmp_path / "var"}"\n')
    assert main(["--config", str(config), "status"]) == 0
    shown = capsys.readouterr().out
    assert "outbox (results to destinations): dead 2" in shown
    assert "seg.dcm -> pacs after 1 attempts: no association with PACS@127.0.0.1:104" in shown
    assert main(["--config", str(config), "resend"]) == 0
    assert capsys.readouterr().out.startswith("2 dead result(s) queued again")
    assert main(["--config", str(config), "status", "--json"]) == 0
    assert '"pending": 2' in capsys.readouterr().out


def test_rows_that_wait_for_an_unreachable_destination_can_be_made_due_at_once(index):
    policy = outbox.RetryPolicy(initial_s=600, max_s=600)
    finished_with_deliveries(index)
    seg, sr = outbox.due(index)
    outbox.mark_failed(index, seg, f"{outbox.NO_ASSOCIATION} PACS@10.0.0.5:104", policy)
    outbox.mark_failed(index, sr, "C-STORE status 0xa700", policy)
    assert outbox.due(index) == []
    assert outbox.unreachable_destinations(index) == ["pacs"]
    assert outbox.make_due(index, "elsewhere") == 0 and outbox.due(index) == []
    assert outbox.make_due(index, "pacs") == 2
    assert [d.path for d in outbox.due(index)] == ["/r/seg.dcm", "/r/sr.dcm"]
    assert outbox.unreachable_destinations(index) == []
