"""The worker: claims analysis jobs from the index and runs each in a separate process.

The analysis process (spawned, so the GPU and torch live only there) loads the model bundle
and the segmenter once and then analyses series as they are handed to it. The node's thread
waits for each answer at most ``[analysis] job_timeout_s``; a process that overruns or dies is
replaced, and the job is queued again until ``max_attempts`` is reached, then marked failed.
A series that cannot be analysed is ``not_evaluable`` with its coded reason. Jobs are never
dropped: while no analysis process can be started (a damaged bundle, say), they stay queued,
and the log says why every minute.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Callable

import pydicom
from pydicom.errors import InvalidDicomError
from structlog.contextvars import bound_contextvars

from cdss_node.config import Config
from cdss_node.jobs import SR_FILE, AheadRequest, AnalysisRequest, AnalysisSettings, Outcome
from cdss_node.logs import configure_logging, get_logger
from cdss_node.store import requests
from cdss_node.store.requests import MARKS_DIR
from cdss_node.store.index import Index
from cdss_node.store.states import SeriesState
from cdss_node.uids import result_series_uid

log = get_logger(__name__)

RESULTS_DIR = "results"
START_TIMEOUT_S = 300.0     # loading torch, the bundle and the segmenter
RESTART_EVERY_S = 60.0      # while the analysis process cannot be started
IDLE_POLL_S = 1.0
PR_SET_PDEATHSIG = 1         # prctl(2)


class AnalysisFailed(RuntimeError):
    """The analysis process timed out, died or raised; the message says which."""


def serve_analyses(conn: Connection, settings: AnalysisSettings, level: str, fmt: str,
                   parent: int = 0) -> None:
    """The analysis process: load once, then answer requests until the pipe closes."""
    _die_with_parent(parent)
    configure_logging(level, fmt)
    from cdss_node.analysis import Analyzer

    try:
        analyzer = Analyzer(settings)
    except Exception as error:  # a bundle or weights file that cannot be loaded
        conn.send(("error", f"{type(error).__name__}: {error}"))
        return
    conn.send(("ready", analyzer.identity()))
    while True:
        try:
            request: AnalysisRequest | AheadRequest = conn.recv()
        except EOFError:
            return
        if isinstance(request, AheadRequest):    # no answer: its job takes the result
            analyzer.ahead.start([Path(p) for p in request.paths])
            continue
        conn.send(_answer(analyzer, request))
        log.info("analysis_process_memory", peak_rss_mb=_peak_rss_mb())


def _peak_rss_mb() -> int:
    """The analysis process's largest resident memory so far (Linux: ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this process when the node's process dies (kill -9, OOM), so
    that no orphan goes on writing results of a job the restarted node runs again."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):     # not Linux: the orphan ends at its next answer
        return
    if parent and os.getppid() != parent:  # the node died before prctl took effect
        os._exit(1)


def _answer(analyzer, request: AnalysisRequest) -> tuple[str, object]:
    from cdss_node.dicom.outputs import read_report
    from cdss_node.dicom.sr import Version

    try:
        paths = [Path(p) for p in request.paths]
        previous = read_report(request.previous_sr) if request.previous_sr else None
        version = Version(instance_number=request.generation, previous=previous)
        if request.mark or request.reason:
            return "ok", analyzer.analyze_requested(paths, Path(request.out_dir), version,
                                                    request.mark, request.reason,
                                                    request.detail)
        return "ok", analyzer.analyze(paths, Path(request.out_dir), version=version)
    except Exception as error:  # the one broad catch: the worker loop's top
        log.exception("analysis_failed")
        return "error", f"{type(error).__name__}: {error}"


class AnalysisProcess:
    """The parent's handle on one analysis process."""

    def __init__(self, settings: AnalysisSettings, level: str, fmt: str):
        self._args = (settings, level, fmt)
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self.model: dict | None = None       # the loaded model's identity, once ready
        self.bundle: Path | None = None      # the bundle it loaded (resolved at each start)

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        self.bundle = self._args[0].bundle_path
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=serve_analyses,
                                        args=(child, *self._args, os.getpid()),
                                        name="cdss-analysis", daemon=True)
        self._process.start()
        child.close()
        self.model = self._receive(timeout_s, "starting")  # type: ignore[assignment]

    def send_ahead(self, request: AheadRequest) -> None:
        """Ask for an analysis ahead of completion (nothing is answered)."""
        assert self._conn is not None, "start() first"
        self._conn.send(request)

    def run(self, request: AnalysisRequest, timeout_s: float) -> Outcome:
        assert self._conn is not None, "start() first"
        self._conn.send(request)
        return self._receive(timeout_s, "analysing")  # type: ignore[return-value]

    def _receive(self, timeout_s: float, doing: str) -> object:
        conn = self._conn
        if not conn.poll(timeout_s):
            self.stop()
            raise AnalysisFailed(f"analysis process timed out after {timeout_s:.0f} s {doing}")
        try:
            kind, payload = conn.recv()
        except (EOFError, ConnectionError):
            code = self.stop()
            raise AnalysisFailed(f"analysis process died {doing} (exit code {code})") from None
        if kind == "error":
            if doing == "starting":
                self.stop()
            raise AnalysisFailed(str(payload))
        return payload

    def stop(self) -> int | None:
        self.model = None
        if self._conn is not None:
            self._conn.close()
        process, self._process, self._conn = self._process, None, None
        if process is None:
            return None
        process.join(2.0)
        if process.is_alive():
            process.kill()
            process.join(5.0)
        return process.exitcode


class Worker:
    """A thread of the node: job after job, each in the analysis process."""

    def __init__(self, config: Config, index: Index, spool_root: Path,
                 on_results: Callable[[], None] = lambda: None):
        self.config, self.index, self.spool_root = config, index, spool_root
        self.on_results = on_results  # told when results wait in the outbox
        self.results_root = config.data_path.resolve() / RESULTS_DIR
        self.settings = AnalysisSettings.from_config(config.analysis, config.node.data_dir,
                                                     config.outputs)
        self.process = AnalysisProcess(self.settings, config.logging.level,
                                       _child_format(config))
        self.last_error: tuple[float, str] | None = None   # (time, message), for /healthz
        self._stop, self._wake = threading.Event(), threading.Event()
        self._ahead_wanted = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cdss-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def series_released(self) -> None:
        """An association ended: its series may be analysed ahead of completion."""
        if self.config.analysis.ahead_of_completion:
            self._ahead_wanted.set()
            self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(30.0)
        self.process.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._ensure_process():
                self._stop.wait(RESTART_EVERY_S)
                continue
            job = self.index.claim_job()
            if job is None:
                self._start_ahead()
                self._wake.wait(IDLE_POLL_S)
                self._wake.clear()
                continue
            self.run_job(*job)

    def _ensure_process(self) -> bool:
        wanted = self.settings.bundle_path        # reads data_dir/models/ACTIVE
        if self.process.alive and self.process.bundle != wanted:
            log.info("model_changed", bundle=str(wanted))
            self.process.stop()                   # `cdss-node model use`: load the new one
        if self.process.alive:
            return True
        try:
            self.process.start()
        except AnalysisFailed as error:
            self.last_error = (time.time(), str(error))
            log.error("analysis_unavailable", error=str(error),
                      consequence="completed series stay queued until this is fixed",
                      retry_in_s=RESTART_EVERY_S)
            return False
        log.info("analysis_process_ready", **(self.process.model or {}))
        return True

    def _start_ahead(self) -> None:
        """When an association has ended: of the series waiting out their grace period, the
        one whose job comes first (the earliest last instance), analysed ahead of completion.
        Only a speed-up: whatever goes wrong is logged and the jobs run as usual."""
        if not self._ahead_wanted.is_set():
            return
        self._ahead_wanted.clear()
        try:
            waiting = [s for s in self.index.receiving_series() if s.open_associations == 0
                       and not requests.waits_for(self.index, s.series_uid)]
            if not waiting:
                return
            series = min(waiting, key=lambda s: s.last_received)
            paths = self._paths(series.series_uid)
            self.process.send_ahead(AheadRequest(paths))
        except (OSError, sqlite3.Error) as error:  # a closed pipe: the next job restarts it
            log.warning("analysis_ahead_not_asked", error=repr(error)[:300])
            if isinstance(error, OSError):
                self.process.stop()
            return
        log.info("analysis_ahead_asked", series_uid=series.series_uid, instances=len(paths))

    def _paths(self, series_uid: str) -> tuple[str, ...]:
        return tuple(str(self.spool_root / p) for p in self.index.series_paths(series_uid))

    def run_job(self, job_id: int, series_uid: str, generation: int) -> None:
        with bound_contextvars(job_id=job_id, series_uid=series_uid):
            request = AnalysisRequest(
                paths=self._paths(series_uid),
                out_dir=str(self.results_root / series_uid / f"g{generation}"),
                generation=generation, previous_sr=self._previous_sr(series_uid, generation),
                **self._asked(job_id))
            log.info("analysis_started", instances=len(request.paths),
                     mark=bool(request.mark), reason=request.reason or None)
            try:
                outcome = self.process.run(request, self.config.analysis.job_timeout_s)
            except AnalysisFailed as error:
                self.last_error = (time.time(), str(error))
                state = self.index.retry_or_fail(job_id, str(error),
                                                 self.config.analysis.max_attempts)
                log.error("analysis_failed", error=str(error), now=state and state.value)
                return
            self._record(job_id, outcome)

    def _asked(self, job_id: int) -> dict:
        """What the job's request adds: the mark's SR file, or why it cannot be acted on."""
        row = self.index.job_request(job_id)
        if row is None:
            return {}
        mark = str(self.config.data_path.resolve() / MARKS_DIR / row["path"]) if row["path"] \
            else ""
        return {"mark": mark, "reason": row["reason"] or "", "detail": row["detail"] or ""}

    def _previous_sr(self, series_uid: str, generation: int) -> str:
        """The SR of the latest earlier analysis of the series, if one was written (an
        answer to a mark the node could not use lies in another series and is passed over)."""
        ours = result_series_uid(series_uid, "SR")
        for earlier in range(generation - 1, 0, -1):
            path = self.results_root / series_uid / f"g{earlier}" / SR_FILE
            if path.is_file() and _series_of_file(path) == ours:
                return str(path)
        return ""

    def _record(self, job_id: int, outcome: Outcome) -> None:
        state = SeriesState.DONE if outcome.status == "ok" else SeriesState.NOT_EVALUABLE
        deliveries = tuple((d.name, path) for d in self.config.destinations
                           for path in outcome.dicom_files)
        current = self.index.finish_job(job_id, state, outcome.reason, outcome.result_file,
                                        deliveries, keep_previous=outcome.keeps_answer)
        log.info("analysis_finished", status=outcome.status, reason_code=outcome.reason_code,
                 probability=outcome.probability, label=outcome.label,
                 result_file=outcome.result_file, superseded=not current)
        if current and deliveries:
            self.on_results()


def _series_of_file(path: Path) -> str:
    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True,
                                   specific_tags=["SeriesInstanceUID"]).SeriesInstanceUID)
    except (InvalidDicomError, OSError, AttributeError, ValueError, EOFError):
        return ""                       # a damaged file is no predecessor


def _child_format(config: Config) -> str:
    """The analysis process writes to the same stderr, so 'auto' decides there as here."""
    return config.logging.format
