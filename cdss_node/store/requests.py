"""Analyses asked for from outside the series tracker: a radiologist's mark (an SR the viewer
saved, routed to the node by the PACS) and ``cdss-node analyze-study``. Rows of the index's
``requests`` table; the mark's SR file lies in the data folder's ``marks/``.

A request is ``received``; then ``ignored`` (the node's own report, an SR without a mark),
``waiting`` (for its series to finish receiving or analysing), ``retrieving`` (from the PACS;
back to ``received`` for another try after a failure) or ``queued`` (a job carries it); then
``done``, ``not_evaluable`` or ``failed`` as its job ends (or ``failed`` when an analyze-study
series cannot be had). A job superseded by new instances gives its request back to
``waiting``, and the series' next job takes it. The desk moves a request only while it is
open (received, waiting, retrieving): a request a job took is the job's.
"""

from __future__ import annotations

import sqlite3
import time

MARKS_DIR = "marks"   # in the data folder, beside the spool: the SR files of marks
MARK, STUDY = "mark", "study"
RECEIVED, IGNORED, WAITING, RETRIEVING, QUEUED = (
    "received", "ignored", "waiting", "retrieving", "queued")
SUPERSEDED, FAILED = "superseded", "failed"
OPEN = (RECEIVED, WAITING, RETRIEVING)
_OPEN = ",".join("?" * len(OPEN))
ENDED = ("done", "not_evaluable", FAILED, IGNORED, SUPERSEDED)


def add(index, kind: str, study_uid: str, path: str | None = None,
        sop_instance_uid: str | None = None, series_uid: str | None = None) -> int:
    now = time.time()
    with index.transaction() as db:
        return int(db.execute(
            "INSERT INTO requests (kind, study_uid, series_uid, path, sop_instance_uid, state, "
            "created_at, updated_at) VALUES (?,?,?,?,?,?,?,?)",
            (kind, study_uid, series_uid, path, sop_instance_uid, RECEIVED, now, now)).lastrowid)


def in_states(index, *states: str) -> list[sqlite3.Row]:
    marks = ",".join("?" * len(states))
    return index.query(f"SELECT * FROM requests WHERE state IN ({marks}) ORDER BY id", states)


def get(index, request_id: int) -> sqlite3.Row | None:
    rows = index.query("SELECT * FROM requests WHERE id=?", (request_id,))
    return rows[0] if rows else None


def update(index, request_id: int, state: str, detail: str | None = None,
           series_uid: str | None = None) -> None:
    """Move an open request (a request no longer open is left as it is)."""
    with index.transaction() as db:
        set_state(db, request_id, state, detail, time.time(), series_uid)


def retry(index, request_id: int, detail: str, counts: bool = True) -> None:
    """A retrieval failed: ``received`` again, one attempt more (``counts``)."""
    with index.transaction() as db:
        db.execute(f"UPDATE requests SET state=?, detail=?, updated_at=?, attempts=attempts+? "
                   f"WHERE id=? AND state IN ({_OPEN})",
                   (RECEIVED, detail, time.time(), int(counts), request_id, *OPEN))


def waits_for(index, series_uid: str) -> bool:
    """A request waits for this series (its next job takes it: nothing to analyse ahead)."""
    return bool(index.query("SELECT 1 FROM requests WHERE series_uid=? AND state IN (?, ?)",
                            (series_uid, WAITING, RETRIEVING)))


def purge_marks(index, marks, retention_days: int, now: float | None = None) -> int:
    """Delete the SR files of requests that ended ``retention_days`` ago (the row stays, its
    path cleared); the PACS holds the radiologist's SR. Returns how many."""
    cutoff = (time.time() if now is None else now) - retention_days * 86400
    marks_ = ",".join("?" * len(ENDED))
    rows = index.query(f"SELECT id, path FROM requests WHERE path IS NOT NULL AND state IN "
                       f"({marks_}) AND updated_at < ?", (*ENDED, cutoff))
    purged = 0
    for row in rows:
        marks.remove(row["path"])
        if (marks.root / row["path"]).exists():
            continue                          # not deleted (logged by the spool): kept named
        with index.transaction() as db:
            db.execute("UPDATE requests SET path=NULL WHERE id=?", (row["id"],))
        purged += 1
    return purged


def recent(index, limit: int = 10) -> list[dict]:
    """The latest requests, newest first, for ``cdss-node status``."""
    rows = index.query("SELECT id, kind, state, study_uid, series_uid, sop_instance_uid, "
                       "reason, detail, job_id, created_at, updated_at FROM requests "
                       "ORDER BY id DESC LIMIT ?", (limit,))
    return [dict(row) for row in rows]


def known_path(index, path: str) -> bool:
    return bool(index.query("SELECT 1 FROM requests WHERE path=?", (path,)))


def known_mark(index, path: str, sop_instance_uid: str) -> bool:
    """A request names this SR file, or this SR (whose file retention could not delete)."""
    return known_path(index, path) or bool(index.query(
        "SELECT 1 FROM requests WHERE sop_instance_uid=?", (sop_instance_uid,)))


# ---------------------------------------------------------------- inside an index transaction

def set_state(db: sqlite3.Connection, request_id: int, state: str, detail: str | None,
              now: float, series_uid: str | None = None) -> bool:
    """Move the request if it is still open; False if it is not (a job took it)."""
    return db.execute(f"UPDATE requests SET state=?, detail=?, updated_at=?, "
                      f"series_uid=COALESCE(?, series_uid) WHERE id=? AND state IN ({_OPEN})",
                      (state, detail, now, series_uid, request_id, *OPEN)).rowcount == 1


def is_open(db: sqlite3.Connection, request_id: int) -> bool:
    row = db.execute("SELECT state FROM requests WHERE id=?", (request_id,)).fetchone()
    return row is not None and row[0] in OPEN


def waiting_mark(db: sqlite3.Connection, series_uid: str) -> int | None:
    """The request the series' next job takes: the newest mark waiting for this series (or
    for its retrieval), else the newest analyze-study request; None if none waits."""
    row = db.execute("SELECT id FROM requests WHERE series_uid=? AND state IN (?, ?) AND "
                     "reason IS NULL ORDER BY kind = ? DESC, id DESC LIMIT 1",
                     (series_uid, WAITING, RETRIEVING, MARK)).fetchone()
    return row[0] if row else None


def attach(db: sqlite3.Connection, request_id: int, job_id: int, series_uid: str,
           now: float) -> None:
    """The request rides on ``job_id``, and so do the analyze-study requests waiting for the
    series (the job analyses it); older marks still waiting for it are superseded (the
    radiologist's latest mark counts)."""
    db.execute("UPDATE requests SET state=?, job_id=?, series_uid=?, updated_at=? WHERE id=?",
               (QUEUED, job_id, series_uid, now, request_id))
    waiting = (series_uid, WAITING, RETRIEVING)
    db.execute("UPDATE requests SET state=?, job_id=?, updated_at=? WHERE series_uid=? AND "
               "state IN (?, ?) AND reason IS NULL AND kind=?",
               (QUEUED, job_id, now, *waiting, STUDY))
    db.execute("UPDATE requests SET state=?, detail=?, updated_at=? WHERE series_uid=? AND "
               "state IN (?, ?) AND reason IS NULL AND kind=? AND id < ?",
               (SUPERSEDED, f"a later mark (request {request_id}) was queued", now, *waiting,
                MARK, request_id))


def finished(db: sqlite3.Connection, job_id: int, state: str, reason: str | None,
             now: float) -> None:
    db.execute("UPDATE requests SET state=?, detail=?, updated_at=? WHERE job_id=? AND state=?",
               (state, reason, now, job_id, QUEUED))


def released(db: sqlite3.Connection, series_uid: str, now: float) -> None:
    """The series' queued or running jobs were superseded: their requests wait again."""
    db.execute("UPDATE requests SET state=?, job_id=NULL, detail=?, updated_at=? WHERE "
               "state=? AND job_id IN (SELECT id FROM jobs WHERE series_uid=? AND "
               "state='superseded')", (WAITING, "new instances of the series", now, QUEUED,
                                       series_uid))
