"""The outbox: result files waiting to be sent to a destination, and what became of them.

A row is written in the same transaction as the job's outcome (``Index.finish_job``), so a
crash between "result written" and "result sent" loses nothing: the row is still pending when
the node starts again. A failed send is tried again after an exponential backoff
(``retry_initial_s``, doubling, at most ``retry_max_s``) until ``give_up_after_h`` have passed
since the row was made; then it is ``dead``, shown by ``cdss-node status`` and sent again by
``cdss-node resend``. Sending an instance twice is harmless: the PACS keeps one copy per SOP
Instance UID.

A long backoff must not delay a destination that is back: while rows wait because no
association could be made (``NO_ASSOCIATION``), the node probes that destination with C-ECHO
and, when it answers, makes its rows due at once (``make_due``). A node that starts makes every
pending row due too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from cdss_node.store.index import Index

PENDING, SENT, DEAD = "pending", "sent", "dead"
NO_ASSOCIATION = "no association with"  # how a failed send's last_error starts when the peer
                                        # could not be reached or refused the association


@dataclass(frozen=True)
class RetryPolicy:
    initial_s: float = 10.0
    max_s: float = 600.0
    give_up_after_s: float = 24 * 3600.0

    def delay(self, attempts: int) -> float:
        """Seconds before the next try after ``attempts`` failed ones."""
        return min(self.initial_s * 2 ** max(attempts - 1, 0), self.max_s)


@dataclass(frozen=True)
class Delivery:
    id: int
    destination: str
    path: str
    attempts: int
    created_at: float


def due(index: Index, now: float | None = None, limit: int = 200) -> list[Delivery]:
    """Pending rows whose time has come, oldest first."""
    now = time.time() if now is None else now
    rows = index.query("SELECT id, destination, path, attempts, created_at FROM outbox "
                       "WHERE state=? AND next_attempt_at<=? ORDER BY id LIMIT ?",
                       (PENDING, now, limit))
    return [Delivery(**dict(row)) for row in rows]


def mark_sent(index: Index, delivery_id: int, now: float | None = None) -> None:
    with index.transaction() as db:
        db.execute("UPDATE outbox SET state=?, sent_at=?, attempts=attempts+1, last_error=NULL "
                   "WHERE id=?", (SENT, time.time() if now is None else now, delivery_id))


def mark_failed(index: Index, delivery: Delivery, error: str, policy: RetryPolicy,
                now: float | None = None) -> str:
    """Back off, or give up: returns the row's new state."""
    now = time.time() if now is None else now
    attempts = delivery.attempts + 1
    state = DEAD if now - delivery.created_at >= policy.give_up_after_s else PENDING
    with index.transaction() as db:
        db.execute("UPDATE outbox SET state=?, attempts=?, next_attempt_at=?, last_error=? "
                   "WHERE id=?", (state, attempts, now + policy.delay(attempts), error[:500],
                                  delivery.id))
    return state


def resend_dead(index: Index, now: float | None = None) -> int:
    """Dead rows are pending again, with a new retry window; returns how many."""
    now = time.time() if now is None else now
    with index.transaction() as db:
        return db.execute("UPDATE outbox SET state=?, created_at=?, next_attempt_at=? "
                          "WHERE state=?", (PENDING, now, now, DEAD)).rowcount


def unreachable_destinations(index: Index, now: float | None = None) -> list[str]:
    """Destinations with rows waiting for a later try because no association could be made."""
    now = time.time() if now is None else now
    rows = index.query("SELECT DISTINCT destination FROM outbox WHERE state=? AND "
                       "next_attempt_at>? AND last_error LIKE ? ORDER BY destination",
                       (PENDING, now, NO_ASSOCIATION + "%"))
    return [row["destination"] for row in rows]


def make_due(index: Index, destination: str | None = None, now: float | None = None) -> int:
    """Pending rows (of one destination, or all) are due now; returns how many."""
    now = time.time() if now is None else now
    where, args = ("state=? AND next_attempt_at>?", [PENDING, now])
    if destination is not None:
        where, args = where + " AND destination=?", args + [destination]
    with index.transaction() as db:
        return db.execute(f"UPDATE outbox SET next_attempt_at=? WHERE {where}",
                          (now, *args)).rowcount


def counts(index: Index) -> dict[str, int]:
    return {row["state"]: row["n"] for row in
            index.query("SELECT state, COUNT(*) AS n FROM outbox GROUP BY state")}


def dead_rows(index: Index, limit: int = 20) -> list[dict]:
    rows = index.query("SELECT series_uid, destination, path, attempts, last_error FROM outbox "
                       "WHERE state=? ORDER BY id DESC LIMIT ?", (DEAD, limit))
    return [dict(row) for row in rows]
