"""The SQLite index (WAL): associations, series, instances and jobs.

Every state change happens in one transaction. The index is the node's memory: after a crash,
``recover`` puts interrupted work back in the queue. One connection serves all threads behind a
lock; SQLite serialises writers anyway, and a status reader in another process reads the WAL.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cdss_node.store import requests
from cdss_node.store.states import FINISHED, SeriesState, check_transition

SCHEMA = """
CREATE TABLE IF NOT EXISTS associations (
    id INTEGER PRIMARY KEY, calling_aet TEXT NOT NULL, peer TEXT NOT NULL,
    opened_at REAL NOT NULL, released_at REAL, outcome TEXT);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY, study_uid TEXT NOT NULL, modality TEXT,
    state TEXT NOT NULL, generation INTEGER NOT NULL DEFAULT 1,
    first_received REAL NOT NULL, last_received REAL NOT NULL,
    completed_at REAL, reason TEXT, updated_at REAL NOT NULL, purged_at REAL);
CREATE INDEX IF NOT EXISTS series_state ON series(state);
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY, series_uid TEXT NOT NULL REFERENCES series(series_uid),
    sop_class_uid TEXT NOT NULL, transfer_syntax_uid TEXT NOT NULL, path TEXT NOT NULL,
    size INTEGER NOT NULL, received_at REAL NOT NULL,
    association_id INTEGER);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid);
CREATE TABLE IF NOT EXISTS series_associations (
    series_uid TEXT NOT NULL, association_id INTEGER NOT NULL,
    PRIMARY KEY (series_uid, association_id));
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY, series_uid TEXT NOT NULL, generation INTEGER NOT NULL,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
    started_at REAL, finished_at REAL, error TEXT, result_file TEXT);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY, series_uid TEXT NOT NULL, generation INTEGER NOT NULL,
    destination TEXT NOT NULL, path TEXT NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, next_attempt_at REAL NOT NULL,
    sent_at REAL, last_error TEXT);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_at);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, study_uid TEXT NOT NULL, series_uid TEXT,
    path TEXT, sop_instance_uid TEXT, state TEXT NOT NULL, detail TEXT, reason TEXT,
    job_id INTEGER, attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS requests_state ON requests(state);
CREATE TABLE IF NOT EXISTS health (
    id INTEGER PRIMARY KEY CHECK (id = 1), checked_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS series_events (
    id INTEGER PRIMARY KEY, series_uid TEXT NOT NULL, at REAL NOT NULL,
    from_state TEXT, to_state TEXT NOT NULL, reason TEXT);
"""


@dataclass(frozen=True)
class InstanceRecord:
    """One received instance, as the receiver writes it to the spool."""

    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    modality: str
    transfer_syntax_uid: str
    path: str
    size: int
    association_id: int | None
    received_at: float | None = None   # when its file was written; None: when it is recorded


@dataclass(frozen=True)
class StoredInstance:
    series_uid: str
    path: str
    size: int


@dataclass(frozen=True)
class ReceivingSeries:
    """A series still receiving, with what the completion rule needs to know."""

    series_uid: str
    last_received: float
    open_associations: int


@dataclass(frozen=True)
class RecoveryReport:
    associations_closed: int
    jobs_requeued: int
    series_requeued: int


class Index:
    def __init__(self, path: Path, fsync: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                   timeout=30.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Columns added since the first release, for an index made by an older node."""
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "result_file" not in columns:
            self._db.execute("ALTER TABLE jobs ADD COLUMN result_file TEXT")
        if "request_id" not in columns:
            self._db.execute("ALTER TABLE jobs ADD COLUMN request_id INTEGER")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back if the block raises."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def write_heartbeat(self, now: float) -> None:
        """One small write transaction: /healthz's proof that the index takes writes."""
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO health (id, checked_at) VALUES (1, ?)", (now,))

    def query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # ------------------------------------------------------------ associations

    def open_association(self, calling_aet: str, peer: str) -> int:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO associations (calling_aet, peer, opened_at) VALUES (?, ?, ?)",
                (calling_aet, peer, time.time()))
            return int(cur.lastrowid)

    def close_association(self, association_id: int, outcome: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE associations SET released_at=?, outcome=? WHERE id=? "
                       "AND released_at IS NULL", (time.time(), outcome, association_id))

    # ------------------------------------------------------------ instances

    def stored_instance(self, sop_instance_uid: str) -> StoredInstance | None:
        rows = self.query("SELECT series_uid, path, size FROM instances "
                          "WHERE sop_instance_uid=?", (sop_instance_uid,))
        return StoredInstance(**dict(rows[0])) if rows else None

    def record_instance(self, rec: InstanceRecord, link_association: bool = True) -> str | None:
        """Add or replace an instance and (re)open its series, in one transaction.
        ``link_association`` False: the association is already tied to the series. Returns a
        spool path no longer referenced, if any: the one the instance had until now if it moved
        to another study or series, or ``rec.path`` itself if the index already holds a copy
        received later at another place (``rec`` is then not recorded)."""
        return self.record_instances([(rec, link_association)])[0]

    def record_instances(self, batch: list[tuple[InstanceRecord, bool]]) -> list[str | None]:
        """``record_instance`` for each (record, link_association) in order, in one
        transaction: the receiver's batches."""
        now = time.time()
        with self.transaction() as db:
            return [self._record(db, rec, link, now) for rec, link in batch]

    def _record(self, db: sqlite3.Connection, rec: InstanceRecord, link_association: bool,
                now: float) -> str | None:
        received = now if rec.received_at is None else rec.received_at
        before = db.execute("SELECT path, received_at FROM instances WHERE sop_instance_uid=?",
                            (rec.sop_instance_uid,)).fetchone()
        if before and before["received_at"] > received:   # a later copy is indexed already
            if link_association and rec.association_id is not None:
                db.execute("INSERT INTO series_associations SELECT series_uid, ? FROM series "
                           "WHERE series_uid=? AND NOT EXISTS (SELECT 1 FROM "
                           "series_associations WHERE series_uid=? AND association_id=?)",
                           (rec.association_id, rec.series_uid, rec.series_uid,
                            rec.association_id))
            return rec.path if before["path"] != rec.path else None
        self._touch_series(db, rec, received)
        db.execute(
            "INSERT INTO instances (sop_instance_uid, series_uid, sop_class_uid, "
            "transfer_syntax_uid, path, size, received_at, association_id) "
            "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(sop_instance_uid) DO UPDATE SET "
            "series_uid=excluded.series_uid, sop_class_uid=excluded.sop_class_uid, "
            "transfer_syntax_uid=excluded.transfer_syntax_uid, path=excluded.path, "
            "size=excluded.size, received_at=excluded.received_at, "
            "association_id=excluded.association_id",
            (rec.sop_instance_uid, rec.series_uid, rec.sop_class_uid,
             rec.transfer_syntax_uid, rec.path, rec.size, received,
             rec.association_id))
        if rec.association_id is not None and link_association:
            db.execute("INSERT OR IGNORE INTO series_associations VALUES (?, ?)",
                       (rec.series_uid, rec.association_id))
        return before["path"] if before and before["path"] != rec.path else None

    def note_association(self, series_uid: str, association_id: int) -> None:
        """A harmless duplicate still ties its series to the association that sent it."""
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO series_associations VALUES (?, ?)",
                       (series_uid, association_id))

    def _touch_series(self, db: sqlite3.Connection, rec: InstanceRecord, now: float) -> None:
        row = db.execute("UPDATE series SET last_received=MAX(last_received, ?), updated_at=? "
                         "WHERE series_uid=? RETURNING state", (now, now, rec.series_uid)).fetchone()
        if row is None:
            db.execute(
                "INSERT INTO series (series_uid, study_uid, modality, state, first_received, "
                "last_received, updated_at) VALUES (?,?,?,?,?,?,?)",
                (rec.series_uid, rec.study_uid, rec.modality, SeriesState.RECEIVING, now, now,
                 now))
            _log_event(db, rec.series_uid, None, SeriesState.RECEIVING, "first instance", now)
            return
        if row["state"] != SeriesState.RECEIVING:
            self._reopen(db, rec.series_uid, row["state"], now)

    def _reopen(self, db: sqlite3.Connection, series_uid: str, state: str, now: float) -> None:
        check_transition(state, SeriesState.RECEIVING)
        db.execute("UPDATE series SET state=?, generation=generation+1, completed_at=NULL, "
                   "reason=NULL WHERE series_uid=?", (SeriesState.RECEIVING, series_uid))
        db.execute("UPDATE jobs SET state='superseded', finished_at=? WHERE series_uid=? "
                   "AND state IN ('queued', 'running')", (now, series_uid))
        requests.released(db, series_uid, now)
        _log_event(db, series_uid, state, SeriesState.RECEIVING,
                   "new instance after completion; the result will be superseded", now)

    # ------------------------------------------------------------ completion and jobs

    def receiving_series(self) -> list[ReceivingSeries]:
        rows = self.query(
            "SELECT s.series_uid, s.last_received, "
            "(SELECT COUNT(*) FROM series_associations sa JOIN associations a "
            " ON a.id = sa.association_id WHERE sa.series_uid = s.series_uid "
            " AND a.released_at IS NULL) AS open_associations "
            "FROM series s WHERE s.state = ?", (SeriesState.RECEIVING,))
        return [ReceivingSeries(**dict(r)) for r in rows]

    def complete_and_queue(self, series_uid: str, last_received: float, why: str) -> bool:
        """receiving → complete → queued, with a new job; False if the series moved on
        (an instance arrived since the decision was taken)."""
        now = time.time()
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE series SET state=?, completed_at=?, updated_at=? WHERE series_uid=? "
                "AND state=? AND last_received=?",
                (SeriesState.COMPLETE, now, now, series_uid, SeriesState.RECEIVING,
                 last_received))
            if cur.rowcount != 1:
                return False
            _log_event(db, series_uid, SeriesState.RECEIVING, SeriesState.COMPLETE, why, now)
            self._queue(db, series_uid, SeriesState.COMPLETE, now)
            return True

    def _queue(self, db: sqlite3.Connection, series_uid: str, state: str, now: float,
               request_id: int | None = None, why: str = "job queued") -> None:
        """A new job for the series; it carries ``request_id``, or else the newest mark that
        waits for this series (``store.requests``)."""
        check_transition(state, SeriesState.QUEUED)
        generation = db.execute("SELECT generation FROM series WHERE series_uid=?",
                                (series_uid,)).fetchone()[0]
        if request_id is None:
            request_id = requests.waiting_mark(db, series_uid)
        job = db.execute("INSERT INTO jobs (series_uid, generation, state, created_at, "
                         "request_id) VALUES (?, ?, 'queued', ?, ?)",
                         (series_uid, generation, now, request_id)).lastrowid
        db.execute("UPDATE series SET state=?, updated_at=? WHERE series_uid=?",
                   (SeriesState.QUEUED, now, series_uid))
        if request_id is not None:
            requests.attach(db, request_id, job, series_uid, now)
            why = "job queued for a request (a radiologist's mark or analyze-study)"
        _log_event(db, series_uid, state, SeriesState.QUEUED, why, now)

    def queue_requested(self, request_id: int, series_uid: str, study_uid: str,
                        modality: str = "CT", reason: str | None = None,
                        detail: str | None = None) -> str:
        """Analyse the series again for an open request, in one transaction: a finished
        series (or one the node never received) is queued at once with the next generation
        ("queued"); one still receiving, queued or processing is left to finish first
        ("waiting": its next job takes the request); a request no longer open is left to the
        job that took it ("taken"). ``reason`` (a NotEvaluableReason name): the job answers
        the request not evaluable for that reason."""
        now = time.time()
        with self.transaction() as db:
            if not requests.is_open(db, request_id):
                return "taken"
            if reason is not None:
                db.execute("UPDATE requests SET reason=?, detail=? WHERE id=?",
                           (reason, detail, request_id))
            row = db.execute("SELECT state FROM series WHERE series_uid=?",
                             (series_uid,)).fetchone()
            if row is not None and row["state"] not in FINISHED:
                requests.set_state(db, request_id, requests.WAITING,
                                   detail if reason else f"series {row['state']}", now,
                                   series_uid)
                return "waiting"
            state = self._requeue(db, series_uid, study_uid, modality, row, now)
            self._queue(db, series_uid, state, now, request_id)
            return "queued"

    def _requeue(self, db: sqlite3.Connection, series_uid: str, study_uid: str,
                 modality: str, row, now: float) -> str:
        """A finished series gets its next generation; a series never received a row."""
        if row is not None:
            db.execute("UPDATE series SET generation=generation+1 WHERE series_uid=?",
                       (series_uid,))
            return row["state"]
        db.execute("INSERT INTO series (series_uid, study_uid, modality, state, "
                   "first_received, last_received, completed_at, updated_at) VALUES "
                   "(?,?,?,?,?,?,?,?)", (series_uid, study_uid, modality,
                                         SeriesState.COMPLETE, now, now, now, now))
        _log_event(db, series_uid, None, SeriesState.COMPLETE, "requested", now)
        return SeriesState.COMPLETE

    def job_request(self, job_id: int) -> sqlite3.Row | None:
        """The request a job carries (kind, path of a mark), or None."""
        rows = self.query("SELECT r.* FROM requests r JOIN jobs j ON j.request_id = r.id "
                          "WHERE j.id=?", (job_id,))
        return rows[0] if rows else None

    def claim_job(self) -> tuple[int, str, int] | None:
        """The oldest queued job, now running: (job id, series UID, generation)."""
        now = time.time()
        with self.transaction() as db:
            row = db.execute("SELECT id, series_uid, generation FROM jobs WHERE state='queued' "
                             "ORDER BY id LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state='running', started_at=?, attempts=attempts+1 "
                       "WHERE id=?", (now, row["id"]))
            self._set_state(db, row["series_uid"], SeriesState.PROCESSING, "job started", now)
            return row["id"], row["series_uid"], row["generation"]

    def series_paths(self, series_uid: str) -> list[str]:
        """Spool paths (relative to the spool) of the series' instances."""
        rows = self.query("SELECT path FROM instances WHERE series_uid=? ORDER BY path",
                          (series_uid,))
        return [row["path"] for row in rows]

    def finish_job(self, job_id: int, state: SeriesState, reason: str | None = None,
                   result_file: str | None = None,
                   deliveries: tuple[tuple[str, str], ...] = (),
                   keep_previous: bool = False) -> bool:
        """Record a job's outcome and, in the same transaction, the (destination, file) pairs
        to send; False if its series was reopened meanwhile (superseded). ``keep_previous``:
        the series goes back to the finished state it had before a request queued it (its
        earlier answer stands; a mark the job could not use)."""
        now = time.time()
        with self.transaction() as db:
            cur = db.execute("UPDATE jobs SET state=?, finished_at=?, error=?, result_file=? "
                             "WHERE id=? AND state='running'",
                             (state.value, now, reason, result_file, job_id))
            if cur.rowcount != 1:
                return False
            series_uid, generation = db.execute("SELECT series_uid, generation FROM jobs "
                                                "WHERE id=?", (job_id,)).fetchone()
            series_state = (_state_before_request(db, series_uid) if keep_previous
                            else None) or state
            self._set_state(db, series_uid, series_state, reason, now)
            requests.finished(db, job_id, state.value, reason, now)
            db.executemany("INSERT INTO outbox (series_uid, generation, destination, path, "
                           "state, created_at, next_attempt_at) VALUES (?,?,?,?,'pending',?,?)",
                           [(series_uid, generation, d, p, now, now) for d, p in deliveries])
            return True

    def retry_or_fail(self, job_id: int, reason: str, max_attempts: int) -> SeriesState | None:
        """A job that crashed or timed out: queued again while attempts remain, else failed.
        None if its series was reopened meanwhile."""
        now = time.time()
        with self.transaction() as db:
            row = db.execute("SELECT series_uid, attempts FROM jobs WHERE id=? AND "
                             "state='running'", (job_id,)).fetchone()
            if row is None:
                return None
            to = SeriesState.QUEUED if row["attempts"] < max_attempts else SeriesState.FAILED
            db.execute("UPDATE jobs SET state=?, error=?, started_at=NULL, finished_at=? "
                       "WHERE id=?", (to.value, reason,
                                      None if to == SeriesState.QUEUED else now, job_id))
            note = f"attempt {row['attempts']} of {max_attempts}: {reason}"
            self._set_state(db, row["series_uid"], to, note, now)
            if to == SeriesState.FAILED:
                requests.finished(db, job_id, to.value, reason, now)
            return to

    def _set_state(self, db: sqlite3.Connection, series_uid: str, to: SeriesState,
                   reason: str | None, now: float) -> None:
        current = db.execute("SELECT state FROM series WHERE series_uid=?",
                             (series_uid,)).fetchone()[0]
        check_transition(current, to)
        db.execute("UPDATE series SET state=?, reason=?, updated_at=? WHERE series_uid=?",
                   (to, reason, now, series_uid))
        _log_event(db, series_uid, current, to, reason, now)

    # ------------------------------------------------------------ recovery

    def recover(self) -> RecoveryReport:
        """After a restart: no association is open any more, running jobs run again, and a
        series left complete without a job is queued."""
        now = time.time()
        with self.transaction() as db:
            closed = db.execute("UPDATE associations SET released_at=?, outcome='interrupted' "
                                "WHERE released_at IS NULL", (now,)).rowcount
            requeued = db.execute("UPDATE jobs SET state='queued', started_at=NULL "
                                  "WHERE state='running'").rowcount
            for (uid,) in db.execute("SELECT series_uid FROM series WHERE state=?",
                                     (SeriesState.PROCESSING,)).fetchall():
                self._set_state(db, uid, SeriesState.QUEUED, "requeued after restart", now)
            stranded = db.execute("SELECT series_uid FROM series WHERE state=?",
                                  (SeriesState.COMPLETE,)).fetchall()
            for (uid,) in stranded:
                self._queue(db, uid, SeriesState.COMPLETE, now)
        return RecoveryReport(closed, requeued, len(stranded))


def _state_before_request(db: sqlite3.Connection, series_uid: str) -> SeriesState | None:
    """The finished state the series had before it was last queued (None: it had none)."""
    row = db.execute("SELECT from_state FROM series_events WHERE series_uid=? AND to_state=? "
                     "ORDER BY id DESC LIMIT 1", (series_uid, SeriesState.QUEUED)).fetchone()
    return SeriesState(row[0]) if row and row[0] in FINISHED else None


def _log_event(db: sqlite3.Connection, series_uid: str, from_state: str | None, to_state: str,
               reason: str | None, now: float) -> None:
    db.execute("INSERT INTO series_events (series_uid, at, from_state, to_state, reason) "
               "VALUES (?,?,?,?,?)", (series_uid, now, from_state, to_state, reason))
