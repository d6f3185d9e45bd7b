"""Spool retention: instances of series whose analysis finished long ago leave the disk.

The series row stays (with ``purged_at``), so ``cdss-node status`` can still say what happened.
Series still receiving, queued or processing are never purged.
"""

from __future__ import annotations

import time

from cdss_node.logs import get_logger
from cdss_node.store.index import Index
from cdss_node.store.spool import Spool
from cdss_node.store.states import FINISHED

log = get_logger(__name__)
_MARKS = ",".join("?" * len(FINISHED))


def purge_finished_series(index: Index, spool: Spool, retention_days: int,
                          now: float | None = None) -> list[str]:
    """Delete spooled instances of finished series older than ``retention_days``."""
    now = time.time() if now is None else now
    cutoff = now - retention_days * 86400
    rows = index.query(
        f"SELECT series_uid FROM series WHERE state IN ({_MARKS}) "
        "AND updated_at < ? AND purged_at IS NULL", (*FINISHED, cutoff))
    purged = [row["series_uid"] for row in rows if _purge(index, spool, row["series_uid"],
                                                          cutoff)]
    for series_uid in purged:
        log.info("series_purged", series_uid=series_uid, retention_days=retention_days)
    return purged


def _purge(index: Index, spool: Spool, series_uid: str, cutoff: float) -> bool:
    """Forget the series' instances in one transaction that re-checks its state, then delete
    exactly those files: an instance that arrives meanwhile reopens the series and is kept."""
    started = time.time()
    with index.transaction() as db:
        cur = db.execute(f"UPDATE series SET purged_at=? WHERE series_uid=? AND state IN "
                         f"({_MARKS}) AND updated_at < ? AND purged_at IS NULL",
                         (started, series_uid, *FINISHED, cutoff))
        if cur.rowcount != 1:
            return False
        paths = [r[0] for r in db.execute("SELECT path FROM instances WHERE series_uid=?",
                                          (series_uid,))]
        db.execute("DELETE FROM instances WHERE series_uid=?", (series_uid,))
    for path in paths:
        spool.remove_if_older(path, started)
    return True
