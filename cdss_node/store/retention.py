"""Retention: what the node keeps on disk, and for how long.

Spool: instances of series whose analysis finished ``[store] retention_days`` ago leave the
disk. The series row stays (with ``purged_at``), so ``cdss-node status`` can still say what
happened. Series still receiving, queued or processing are never purged. A series received
again after its purge is purged again (its instances are newer than ``purged_at``).

Results: an analysis' folder (``results/<series>/g<n>``: SEG, SR, result.json, mask) leaves the
disk ``[store] results_retention_days`` after it was last written, once every destination has
taken its files (a pending or dead delivery keeps it, so ``cdss-node resend`` still works).
The PACS holds the SEG and SR; the index keeps the series' state and reason.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from cdss_node.logs import get_logger
from cdss_node.store.index import Index
from cdss_node.store.spool import Spool
from cdss_node.store.states import FINISHED

log = get_logger(__name__)
_MARKS = ",".join("?" * len(FINISHED))
_NOT_PURGED = "(purged_at IS NULL OR purged_at < updated_at)"   # or received again since


def purge_finished_series(index: Index, spool: Spool, retention_days: int,
                          now: float | None = None) -> list[str]:
    """Delete spooled instances of finished series older than ``retention_days``."""
    now = time.time() if now is None else now
    cutoff = now - retention_days * 86400
    rows = index.query(
        f"SELECT series_uid FROM series WHERE state IN ({_MARKS}) "
        f"AND updated_at < ? AND {_NOT_PURGED}", (*FINISHED, cutoff))
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
                         f"({_MARKS}) AND updated_at < ? AND {_NOT_PURGED}",
                         (started, series_uid, *FINISHED, cutoff))
        if cur.rowcount != 1:
            return False
        paths = [r[0] for r in db.execute("SELECT path FROM instances WHERE series_uid=?",
                                          (series_uid,))]
        db.execute("DELETE FROM instances WHERE series_uid=?", (series_uid,))
    for path in paths:
        spool.remove_if_older(path, started)
    return True


def purge_results(index: Index, results_root: Path, retention_days: int,
                  now: float | None = None) -> int:
    """Delete result folders older than ``retention_days`` whose files were all delivered."""
    cutoff = (time.time() if now is None else now) - retention_days * 86400
    purged = 0
    for folder in sorted(Path(results_root).glob("*/g*")):
        generation = folder.name[1:]
        if not generation.isdigit() or folder.stat().st_mtime >= cutoff:
            continue
        if _undelivered(index, folder.parent.name, int(generation)):
            continue
        with index.transaction() as db:
            db.execute("UPDATE jobs SET result_file=NULL WHERE series_uid=? AND generation=?",
                       (folder.parent.name, int(generation)))
        shutil.rmtree(folder, ignore_errors=True)
        if not any(folder.parent.iterdir()):
            folder.parent.rmdir()
        purged += 1
        log.info("results_purged", series_uid=folder.parent.name, generation=int(generation),
                 retention_days=retention_days)
    return purged


def _undelivered(index: Index, series_uid: str, generation: int) -> bool:
    return bool(index.query("SELECT 1 FROM outbox WHERE series_uid=? AND generation=? "
                            "AND state != 'sent' LIMIT 1", (series_uid, generation)))
