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


def purge_finished_series(index: Index, spool: Spool, retention_days: int,
                          now: float | None = None) -> list[str]:
    """Delete spooled instances of finished series older than ``retention_days``."""
    now = time.time() if now is None else now
    cutoff = now - retention_days * 86400
    marks = ",".join("?" * len(FINISHED))
    rows = index.query(
        f"SELECT series_uid, study_uid FROM series WHERE state IN ({marks}) "
        "AND updated_at < ? AND purged_at IS NULL", (*FINISHED, cutoff))
    for row in rows:
        spool.remove_series(row["study_uid"], row["series_uid"])
        with index.transaction() as db:
            db.execute("DELETE FROM instances WHERE series_uid=?", (row["series_uid"],))
            db.execute("UPDATE series SET purged_at=? WHERE series_uid=?",
                       (now, row["series_uid"]))
        log.info("series_purged", series_uid=row["series_uid"], retention_days=retention_days)
    return [row["series_uid"] for row in rows]
