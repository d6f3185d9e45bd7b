"""The node's front door: a pynetdicom AE that answers C-ECHO and C-STORE.

A C-STORE handler checks the dataset (never decoding pixel data), writes the encoded dataset to
the spool (temporary file + rename), records one index row and answers a status that means
something. Handlers never raise: every outcome is a status code.
"""

from __future__ import annotations

import functools
import ssl
import threading
from dataclasses import dataclass, field
from typing import Callable

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification
from structlog.contextvars import bind_contextvars

from cdss_node.config import Config
from cdss_node.dicom import checks, connections, transport, wire
from cdss_node.dicom.checks import InstanceHeader, StoreProblem
from cdss_node.dicom.file_meta import file_meta
from cdss_node.dicom.mark import MARK_SOP_CLASSES
from cdss_node.dicom.received import ReceivedDataset
from cdss_node.dicom.sop import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES, UNCOMPRESSED
from cdss_node.logs import get_logger
from cdss_node.monitor.telemetry import Telemetry
from cdss_node.store import requests
from cdss_node.store.index import Index, InstanceRecord
from cdss_node.store.spool import FreeSpace, Spool

log = get_logger(__name__)

ARTIM_S = 30.0   # pynetdicom's ARTIM: the longest a connection may wait to associate
# Index rows of an association's stored instances are written this many at a time (one
# transaction of 64 costs about what 5 single ones do); the first instance of each series in
# an association is written at once, tying the series to the open association so that it
# cannot complete meanwhile, and the rest when the association ends.
INDEX_BATCH = 64
# A-ASSOCIATE-RJ: rejected-permanent, service-user, calling-AE-title-not-recognized
_REJECT_CALLING_AE = (0x01, 0x01, 0x03)


@dataclass
class AssociationTally:
    """What one association did; logged when it ends. Also its instances stored and answered
    but not yet in the index (``pending``, see ``Receiver._index``)."""

    association_id: int
    calling_aet: str
    stored: int = 0
    duplicates: int = 0
    series: set[str] = field(default_factory=set)  # series already tied to it in the index
    refused: dict[str, int] = field(default_factory=dict)
    pending: list[InstanceRecord] = field(default_factory=list)
    ended: str | None = None       # its outcome, once it ended
    closed: bool = False           # its end recorded in the index
    lock: threading.Lock = field(default_factory=threading.Lock)          # for ``pending``
    writing: threading.RLock = field(default_factory=threading.RLock)     # rows to the index


class Receiver:
    """Owns the AE and the listening server; ``on_association_end`` is told of each release."""

    def __init__(self, config: Config, index: Index, spool: Spool,
                 on_association_end: Callable[[], None] = lambda: None,
                 telemetry: Telemetry | None = None, marks: Spool | None = None,
                 on_mark: Callable[[], None] = lambda: None):
        self.config = config
        self.telemetry = telemetry or Telemetry()
        self.index = index
        self.spool = spool
        self.marks = marks or Spool(spool.root.parent / requests.MARKS_DIR, fsync=spool.fsync)
        self.on_association_end = on_association_end
        self.on_mark = on_mark                         # told of each radiologist's SR stored
        self._reserve_bytes = config.store.reserve_mb * 1024 * 1024
        self._free_space = FreeSpace(spool.free_bytes)
        self._log_instances = config.logging.level == "debug"  # a skipped call costs 30 us
        self._server = None
        self.ae = None
        self._end_lock = threading.Lock()
        self._open: dict[int, AssociationTally] = {}   # by association id, until closed
        node = config.node
        self.guard = connections.ConnectionGuard(
            node.max_associations, node.max_pending_connections, connections.RefusalLog(
                lambda reason: self.telemetry.rejected_association(reason, "")))
        transport.apply(verbose_pynetdicom_logs=config.logging.level == "debug")

    # ------------------------------------------------------------ life cycle

    def start(self) -> None:
        ae = self.ae = self._make_ae()
        node = self.config.node
        self._server = connections.start_server(
            ae, (node.host, node.port), self._handlers(), self._ssl_context(), self.guard,
            gate_timeout_s=min(node.network_timeout_s, ARTIM_S))
        log.info("receiver_listening", ae_title=node.ae_title, host=node.host, port=node.port,
                 tls=self.config.tls_enabled)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
            log.info("receiver_stopped")

    def _make_ae(self) -> AE:
        node = self.config.node
        ae = AE(ae_title=node.ae_title)
        ae.maximum_pdu_size = node.max_pdu_bytes
        # pynetdicom counts every connection; the guard counts associations and pending
        # connections apart, and rejects itself (see connections.py).
        ae.maximum_associations = node.max_associations + node.max_pending_connections + 64
        ae.network_timeout = node.network_timeout_s
        ae.dimse_timeout = node.network_timeout_s
        ae.acse_timeout = node.network_timeout_s  # the wait for an A-ASSOCIATE-RQ too
        wire.attach(ae, wire.WireLimits(
            max_pdu_bytes=node.max_pdu_bytes, pdu_timeout_s=node.network_timeout_s,
            max_dataset_bytes=node.max_dataset_mb * wire.MIB, spill_dir=self.spool.tmp,
            reserve_bytes=self._reserve_bytes))
        ae.add_supported_context(Verification)
        for sop_class in STORAGE_SOP_CLASSES:
            ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
        for sop_class in MARK_SOP_CLASSES:    # a radiologist's mark (cdss_node.dicom.mark)
            ae.add_supported_context(sop_class, list(UNCOMPRESSED))
        return ae

    def _ssl_context(self) -> ssl.SSLContext | None:
        sec = self.config.security
        if not sec.tls_cert:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(sec.tls_cert, sec.tls_key)
        if sec.tls_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(sec.tls_ca)
        return ctx

    def _handlers(self) -> list:
        return [
            (evt.EVT_CONN_OPEN, transport.tune_connection),
            (evt.EVT_CONN_OPEN, lambda event: self.guard.opened(event.assoc)),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_RELEASED, self._on_ended, ["released"]),
            (evt.EVT_ABORTED, self._on_ended, ["aborted"]),
            (evt.EVT_CONN_CLOSE, self._on_ended, ["closed"]),
            (evt.EVT_CONN_CLOSE, transport.release_connection),
            (evt.EVT_C_ECHO, lambda event: checks.SUCCESS),
            (evt.EVT_C_STORE, self._on_store),
        ]

    # ------------------------------------------------------------ associations

    def calling_ae_allowed(self, calling_aet: str, host: str) -> bool:
        allowed = self.config.security.allowed_calling_aets
        if not allowed:
            return True
        for entry in allowed:
            aet, _, only_host = entry.partition("@")
            if aet.strip() == calling_aet.strip() and (not only_host or only_host == host):
                return True
        return False

    def _on_requested(self, event: evt.Event) -> None:
        calling = event.assoc.requestor.primitive.calling_ae_title
        host = event.assoc.requestor.address
        if not self.calling_ae_allowed(calling, host):
            self._reject(event, "calling AE title not allowed", _REJECT_CALLING_AE)
        elif not self.guard.requested(event.assoc):
            self._reject(event, "local limit exceeded (max_associations)",
                         connections.REJECT_LOCAL_LIMIT)

    def _reject(self, event: evt.Event, reason: str, result: tuple[int, int, int]) -> None:
        calling = event.assoc.requestor.primitive.calling_ae_title
        log.warning("association_rejected", calling_aet=calling,
                    peer=event.assoc.requestor.address, reason=reason)
        self.telemetry.rejected_association(reason, calling)
        event.assoc.acse.send_reject(*result)
        event.assoc.kill()

    def _on_accepted(self, event: evt.Event) -> None:
        calling = event.assoc.requestor.ae_title
        peer = f"{event.assoc.requestor.address}:{event.assoc.requestor.port}"
        tally = self._open_tally(event.assoc, calling, peer)
        log.info("association_accepted", association_id=tally.association_id,
                 calling_aet=calling, peer=peer)

    def _open_tally(self, assoc, calling: str, peer: str) -> AssociationTally:
        association_id = self.index.open_association(calling, peer)
        assoc.cdss_tally = tally = AssociationTally(association_id, calling)
        with self._end_lock:
            self._open[association_id] = tally
        return tally

    def retrieval(self, source_aet: str) -> tuple[Callable, Callable, Callable]:
        """A C-GET on the node's own association, served as a received association:
        (prepare, on_store, end) for ``retrieve.get_series``. ``prepare`` gives the
        association its index row (its series wait for it to end), ``on_store`` is the
        C-STORE handler, ``end(outcome)`` records the end once its rows are written."""
        opened: list[AssociationTally] = []

        def prepare(assoc) -> None:
            peer = f"{assoc.acceptor.address}:{assoc.acceptor.port}"
            opened.append(self._open_tally(assoc, source_aet, peer))

        def end(outcome: str) -> None:
            for tally in opened:
                with tally.lock:
                    tally.ended = outcome
                self._close_when_indexed(tally)
        return prepare, self._on_store, end

    def _on_ended(self, event: evt.Event, outcome: str) -> None:
        """The first of EVT_RELEASED, EVT_ABORTED and EVT_CONN_CLOSE (pynetdicom fires some of
        them, in an order that varies) records the end. Where the node reads the PDUs itself
        (``pdu_reader``), the outcome is what the peer did: released, aborted, closed (the
        connection dropped, which pynetdicom calls an abort) or timed out."""
        tally: AssociationTally | None = getattr(event.assoc, "cdss_tally", None)
        with self._end_lock:   # the DUL's and the association's threads both report ends
            if tally is None or getattr(event.assoc, "cdss_ended", False):
                return
            event.assoc.cdss_ended = True
        with tally.lock:
            tally.ended = getattr(event.assoc.dul, "cdss_outcome", None) or outcome
        self._close_when_indexed(tally)

    def _close_when_indexed(self, tally: AssociationTally) -> None:
        """Record an ended association's end once all its rows are in the index: until then
        it counts as open, and its series cannot complete without them. A refused write or
        close is tried again by ``index_pending`` (the completion check's)."""
        with tally.writing:
            if tally.closed or not self._index_pending(tally):
                return
            try:
                self.index.close_association(tally.association_id, tally.ended)
            except Exception:
                log.exception("association_end_not_recorded",
                              association_id=tally.association_id)
                return
            tally.closed = True
        self._forget_if_done(tally)
        log.info("association_ended", association_id=tally.association_id, outcome=tally.ended,
                 calling_aet=tally.calling_aet, stored=tally.stored,
                 duplicates=tally.duplicates, refused=tally.refused)
        self.on_association_end()

    def index_pending(self) -> None:
        """Write every association's pending rows (before each completion check, so that
        the check sees every instance received, within ``check_interval_s``), and record
        the ends that waited for theirs."""
        with self._end_lock:
            tallies = list(self._open.values())
        for tally in tallies:
            if tally.ended and not tally.closed:
                self._close_when_indexed(tally)
            elif self._index_pending(tally):
                self._forget_if_done(tally)

    def _forget_if_done(self, tally: AssociationTally) -> None:
        """Out of the open ones once its end is recorded and no row waits (a store that
        finishes after the end puts it back while its row waits: ``_index_pending``)."""
        with self._end_lock, tally.lock:
            if tally.closed and not tally.pending:
                self._open.pop(tally.association_id, None)

    # ------------------------------------------------------------ index rows

    def _index(self, tally: AssociationTally, record: InstanceRecord) -> None:
        """The index row of an instance now in the spool. The spool file, renamed into
        place before the answer, is the durable record: a row still pending when the node
        dies is written at its next start (``store.orphans``), so nothing answered with
        Success is lost. Rows are written in order: a new series' first row and those pending
        before it at once, the others ``INDEX_BATCH`` at a time and when the association ends
        (also for a store that finishes after that)."""
        if record.series_uid not in tally.series:
            self._index_pending(tally, first_of_series=record)
            tally.series.add(record.series_uid)
            return
        with tally.lock:
            tally.pending.append(record)
            due = tally.ended or len(tally.pending) >= INDEX_BATCH
        if due:
            self._index_pending(tally)

    def _index_pending(self, tally: AssociationTally,
                       first_of_series: InstanceRecord | None = None) -> bool:
        """Write the pending rows (and ``first_of_series``) in one transaction; False if
        the index refused them (they stay pending; a refused ``first_of_series`` raises)."""
        with tally.writing:       # taken, written and put back as one, in order
            with tally.lock:
                batch = [(r, False) for r in tally.pending]
                tally.pending = []
            if first_of_series is not None:
                batch.append((first_of_series, True))
            if not batch:
                return True
            try:
                unreferenced = self.index.record_instances(batch)
            except Exception:
                self._keep_pending(tally, [r for r, link in batch if not link])
                if first_of_series is not None:
                    raise         # answered with a failure status: the peer sends it again
                log.exception("index_write_failed", pending=len(batch))
                return False
        for (record, _), path in zip(batch, unreferenced):
            if path:      # moved to another study or series, or a copy older than the indexed
                self.spool.remove_if_older(path, record.received_at)
                log.info("instance_moved", sop_instance_uid=record.sop_instance_uid,
                         study_uid=record.study_uid, series_uid=record.series_uid,
                         removed=path)
        return True

    def _keep_pending(self, tally: AssociationTally, records: list[InstanceRecord]) -> None:
        """Rows the index refused: pending again, and the association among the open ones,
        so that ``index_pending`` tries them again (at worst, the next start indexes them)."""
        with tally.lock:
            tally.pending[:0] = records
        with self._end_lock:
            self._open.setdefault(tally.association_id, tally)

    # ------------------------------------------------------------ C-STORE

    def _on_store(self, event: evt.Event) -> int | Dataset:
        tally: AssociationTally = event.assoc.cdss_tally
        bind_association(tally.association_id)
        try:
            outcome = self._store(event, tally)
        except OSError as exc:  # disk full, permissions: out of resources
            log.error("store_failed", error=str(exc))
            outcome = StoreProblem(checks.OUT_OF_RESOURCES, f"cannot write: {exc.strerror}")
        except Exception as exc:  # never let an exception escape a handler
            log.exception("store_failed")
            outcome = StoreProblem(checks.PROCESSING_FAILURE, type(exc).__name__)
        if isinstance(outcome, StoreProblem):
            tally.refused[hex(outcome.status)] = tally.refused.get(hex(outcome.status), 0) + 1
            self.telemetry.refused_store(outcome.status, outcome.comment, tally.calling_aet)
            return _status(outcome)
        return checks.SUCCESS

    def _store(self, event: evt.Event, tally: AssociationTally) -> StoreProblem | None:
        received = ReceivedDataset(event.request)
        problem = self._size_problem(received)
        if problem:
            return self._refused(problem, event)
        with received.view() as raw:
            return self._check_and_write(event, received, raw, tally)

    def _size_problem(self, received: ReceivedDataset) -> StoreProblem | None:
        if received.refusal:
            return StoreProblem(checks.OUT_OF_RESOURCES, received.refusal)
        if received.size > self.config.node.max_dataset_mb * wire.MIB:  # pynetdicom's path
            return StoreProblem(checks.OUT_OF_RESOURCES, "dataset larger than max_dataset_mb")
        if not self._free_space.take(received.size, self._reserve_bytes):
            log.warning("store_refused_disk_reserve", reserve_mb=self.config.store.reserve_mb)
            return StoreProblem(checks.OUT_OF_RESOURCES, "disk below the configured reserve")
        return None

    def _check_and_write(self, event: evt.Event, received: ReceivedDataset, raw,
                         tally: AssociationTally) -> StoreProblem | None:
        ts = transfer_syntax(event.context.transfer_syntax)
        scan = checks.scan_dataset(raw, ts)
        if isinstance(scan, StoreProblem):
            return self._refused(scan, event)
        header = checks.instance_header(scan, event.context.abstract_syntax,
                                        event.request.AffectedSOPInstanceUID)
        if not isinstance(header, StoreProblem) and header.sop_class_uid in MARK_SOP_CLASSES:
            return self._write_mark(event, received, header, tally)
        problem = header if isinstance(header, StoreProblem) else checks.image_problem(scan, ts)
        if problem:
            return self._refused(problem, event)
        return self._write(event, received, header, tally)

    def _refused(self, problem: StoreProblem, event: evt.Event) -> StoreProblem:
        log.warning("store_refused", status=hex(problem.status), reason=problem.comment,
                    sop_class=event.context.abstract_syntax)
        return problem

    def _write(self, event: evt.Event, received: ReceivedDataset, header: InstanceHeader,
               tally: AssociationTally) -> None:
        sop_uid = header.sop_instance_uid
        path = self.spool.instance_path(header.study_uid, header.series_uid, sop_uid)
        known = self.index.stored_instance(sop_uid) if path.exists() else None
        if known and known.series_uid == header.series_uid and received.same_as_file(path):
            if known.series_uid not in tally.series:
                self.index.note_association(known.series_uid, tally.association_id)
                tally.series.add(known.series_uid)
            tally.duplicates += 1
            if self._log_instances:
                log.debug("instance_duplicate", sop_instance_uid=sop_uid,
                          study_uid=header.study_uid, series_uid=header.series_uid)
            return None
        meta = file_meta(header.sop_class_uid, sop_uid, event.context.transfer_syntax,
                         tally.calling_aet)
        written_at = self.spool.write_atomic(path, meta, received.chunk())
        self._index(tally, InstanceRecord(
            sop_instance_uid=sop_uid, sop_class_uid=header.sop_class_uid,
            study_uid=header.study_uid, series_uid=header.series_uid, modality=header.modality,
            transfer_syntax_uid=event.context.transfer_syntax,
            path=str(path.relative_to(self.spool.root)), size=len(meta) + received.size,
            association_id=tally.association_id, received_at=written_at))
        tally.stored += 1
        self.telemetry.instances_received.inc()
        if self._log_instances:
            log.debug("instance_stored", sop_instance_uid=sop_uid, replaced=known is not None,
                      study_uid=header.study_uid, series_uid=header.series_uid)
        return None


    def _write_mark(self, event: evt.Event, received: ReceivedDataset, header: InstanceHeader,
                    tally: AssociationTally) -> None:
        """A radiologist's SR: its file into ``marks/`` and a request row, written before
        the answer (the node's mark desk reads it: ``cdss_node.marks``); the same SR again
        is a duplicate."""
        path = self.marks.instance_path(header.study_uid, header.series_uid,
                                        header.sop_instance_uid)
        relative = str(path.relative_to(self.marks.root))
        if path.exists() and received.same_as_file(path) and requests.known_path(
                self.index, relative):
            tally.duplicates += 1
            return None
        meta = file_meta(header.sop_class_uid, header.sop_instance_uid,
                         event.context.transfer_syntax, tally.calling_aet)
        self.marks.write_atomic(path, meta, received.chunk())
        request_id = requests.add(self.index, requests.MARK, header.study_uid, path=relative,
                                  sop_instance_uid=header.sop_instance_uid)
        tally.stored += 1
        log.info("mark_report_received", request_id=request_id, study_uid=header.study_uid,
                 sop_instance_uid=header.sop_instance_uid)
        self.on_mark()
        return None


@functools.lru_cache(maxsize=64)   # one entry per transfer syntax the node accepts
def transfer_syntax(uid: str) -> UID:
    """A negotiated transfer syntax as a pydicom UID, made once (``UID()`` validates: 60 us)."""
    return UID(uid)


_thread_bound = threading.local()


def bind_association(association_id: int) -> None:
    """Name the association in every log line of this thread from now on. A thread that runs
    the C-STORE handler serves one association (pynetdicom makes two per association), so
    it is bound once, not per instance (``bound_contextvars`` cost 40 us a store)."""
    if getattr(_thread_bound, "association_id", None) != association_id:
        bind_contextvars(association_id=association_id)
        _thread_bound.association_id = association_id


def _status(problem: StoreProblem) -> Dataset:
    status = Dataset()
    status.Status = problem.status
    status.ErrorComment = problem.comment
    return status
