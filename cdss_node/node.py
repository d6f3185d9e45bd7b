"""The running node: index, spool, receiver, worker and the periodic work, started and stopped
together."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

from apscheduler.schedulers.background import BackgroundScheduler

from cdss_node.config import Config
from cdss_node.dicom.receiver import Receiver
from cdss_node.dicom.retrieve import get_series, move_series
from cdss_node.dicom.sender import DestinationProbe, deliver_due
from cdss_node.dicom.spooled import spooled_record
from cdss_node.logs import get_logger
from cdss_node.monitor.metrics import IndexCollector
from cdss_node.monitor.server import HttpServer
from cdss_node.monitor.telemetry import Telemetry
from cdss_node.requested import RequestDesk
from cdss_node.series import CompletionRule, SeriesTracker
from cdss_node.store.index import Index
from cdss_node.store import outbox, requests
from cdss_node.store.orphans import recover_orphans, remove_stale_parts
from cdss_node.store.retention import purge_finished_series, purge_results
from cdss_node.store.spool import Spool
from cdss_node.store.states import FINISHED
from cdss_node.uids import node_device_uid
from cdss_node.worker import RESULTS_DIR, Worker

log = get_logger(__name__)

INDEX_FILE = "index.sqlite3"
SPOOL_DIR = "spool"
RETENTION_EVERY_S = 3600
REQUESTS_EVERY_S = 2.0      # marks and analyze-study requests are looked at this often


class Node:
    def __init__(self, config: Config):
        self.config = config
        data = config.data_path
        data.mkdir(parents=True, exist_ok=True)
        self.index = Index(data / INDEX_FILE, fsync=config.store.fsync)
        self.spool = Spool(data / SPOOL_DIR, fsync=config.store.fsync)
        rule = CompletionRule(config.series.grace_s, config.series.quiet_s)
        self.tracker = SeriesTracker(self.index, rule)
        self.telemetry = Telemetry()
        self.telemetry.registry.register(IndexCollector(self))
        self.marks = Spool(data / requests.MARKS_DIR, fsync=config.store.fsync)
        self.receiver = Receiver(config, self.index, self.spool, self._after_association,
                                 self.telemetry, self.marks, self._request_arrived)
        self.desk = RequestDesk(config, self.index, self.spool, self.marks,
                                node_device_uid(data), self._retrieve
                                if config.retrieve_source else None)
        self.worker = (Worker(config, self.index, self.spool.root, self._results_waiting)
                       if config.analysis.workers else None)
        self.scheduler = BackgroundScheduler(timezone=timezone.utc)
        self._delivering = threading.Lock()
        self.probe = DestinationProbe(config.outbox.probe_interval_s)
        self.retry_policy = outbox.RetryPolicy(
            config.outbox.retry_initial_s, config.outbox.retry_max_s,
            config.outbox.give_up_after_h * 3600)
        self.http = HttpServer(self) if config.http.enabled else None

    def start(self) -> None:
        report = self.index.recover()
        partial = self.spool.clean_tmp()
        orphans = recover_orphans(self.index, self.spool, spooled_record)
        log.info("node_recovered", associations_closed=report.associations_closed,
                 jobs_requeued=report.jobs_requeued, series_requeued=report.series_requeued,
                 partial_files_removed=partial, orphans_indexed=orphans.indexed,
                 orphans_removed=orphans.removed, results_due_now=outbox.make_due(self.index),
                 requests_resumed=self.desk.recover())
        if self.http:
            self.http.start()       # first: a port in use stops the start before anything runs
        self._schedule_periodic()
        self.scheduler.start()
        self.receiver.start()
        if self.worker:
            self.worker.start()

    def stop(self) -> None:
        if self.http:
            self.http.stop()
        self.desk.stopping = True       # a retrieval the stop cuts short is tried again
        self.receiver.stop()
        self.scheduler.shutdown(wait=True)
        if self.worker:
            self.worker.stop()
        self.index.close()
        log.info("node_stopped")

    def _schedule_periodic(self) -> None:
        series = self.config.series
        self.scheduler.add_job(self._check_completion, "interval", seconds=series.check_interval_s,
                               id="completion", max_instances=1, coalesce=True)
        self.scheduler.add_job(self._deliver, "interval",
                               seconds=self.config.outbox.check_interval_s, id="outbox",
                               max_instances=1, coalesce=True)
        self.scheduler.add_job(self._take_requests, "interval", seconds=REQUESTS_EVERY_S,
                               id="requests", max_instances=1, coalesce=True)
        self.scheduler.add_job(self._retention, "interval", seconds=RETENTION_EVERY_S,
                               id="retention", max_instances=1, coalesce=True,
                               next_run_time=datetime.now(timezone.utc) + timedelta(seconds=5))

    def _after_association(self) -> None:
        """Check completion as soon as the grace period after a release has passed."""
        when = datetime.now(timezone.utc) + timedelta(seconds=self.config.series.grace_s + 0.05)
        self.scheduler.add_job(self._check_completion, "date", run_date=when)
        if self.worker:
            self.worker.series_released()

    def _check_completion(self) -> None:
        self.telemetry.beat("completion")
        self.receiver.index_pending()
        if self.tracker.check() and self.worker:
            self.worker.wake()

    def _request_arrived(self) -> None:
        """A radiologist's SR was stored: take it now rather than at the next round."""
        self.scheduler.modify_job("requests", next_run_time=datetime.now(timezone.utc))

    def _take_requests(self) -> None:
        if self.desk.check() and self.worker:
            self.worker.wake()

    def _retrieve(self, series_uid: str, study_uid: str) -> bool:
        """Fetch a series from ``[retrieve] source`` into the node: C-MOVE to the node's own
        AE title (the receiver takes it as any sending), or C-GET served by the receiver's
        handler on this association. True when the PACS delivered it."""
        source, section = self.config.retrieve_source, self.config.retrieve
        aet = self.config.node.ae_title
        if section.method == "move":
            outcome = move_series(source, aet, study_uid, series_uid, aet, section.timeout_s)
        else:
            prepare, on_store, end = self.receiver.retrieval(source.ae_title)
            outcome = None
            try:
                outcome = get_series(source, aet, study_uid, series_uid, on_store,
                                     section.timeout_s, prepare)
            finally:
                end("released" if outcome is not None and outcome.status is not None
                    else "aborted")
        self.receiver.index_pending()
        return outcome.ok

    def _results_waiting(self) -> None:
        """Send new results now rather than at the next look at the outbox."""
        self.scheduler.add_job(self._deliver, "date", run_date=datetime.now(timezone.utc))

    def _deliver(self) -> None:
        """Send due results to the destinations (one association each), one round at a time."""
        with self._delivering:
            self._deliver_round()

    def _deliver_round(self) -> None:
        if not self.config.destinations:
            return
        aet = self.config.node.ae_title
        if self.config.outbox.probe_interval_s:
            self.probe.run(self.index, self.config.destinations, aet)
        deliver_due(self.index, self.config.destinations, self.retry_policy, aet)

    def _retention(self) -> None:
        remove_stale_parts(self.spool)
        purge_finished_series(self.index, self.spool, self.config.store.retention_days)
        purge_results(self.index, self.config.data_path.resolve() / RESULTS_DIR,
                      self.config.store.results_retention_days)
        requests.purge_marks(self.index, self.marks, self.config.store.retention_days)

    @property
    def loaded_model(self) -> dict | None:
        """The identity of the model the analysis process holds (None: none, or no worker)."""
        return self.worker.process.model if self.worker else None

    def wait_until_analysed(self, series_uid: str, timeout_s: float) -> str | None:
        """The series' final state once its analysis has finished, or None on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rows = self.index.query("SELECT state FROM series WHERE series_uid=?", (series_uid,))
            if rows and rows[0]["state"] in FINISHED:
                return rows[0]["state"]
            time.sleep(0.2)
        return None

    def wait_until_settled(self, timeout_s: float) -> bool:
        """Wait until no series is receiving (used by the demo and tests)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.index.receiving_series():
                return True
            time.sleep(0.1)
        return False
