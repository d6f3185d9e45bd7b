"""Spool files that no index row names, found when the node starts.

The receiver renames an instance into the spool and then records its row; a crash between the
two leaves a file that retention (which deletes what the index names) would keep forever. So
does a crash inside retention's purge, or after an instance moved to another series. At start,
before anything is received, the spool's files are compared with the index's paths (one
query, one walk of the folders) and only the difference is read:

- a file that reads as the instance its place names, is not indexed at another place and was
  written after any purge of its series, is indexed as the receiver would have done (its series
  opens again, and completes as usual: nothing the node took in is lost);
- any other file is deleted with a warning: unreadable, a stale copy of an instance that moved,
  a leftover of a purge;
- a /healthz probe left behind is deleted (the temporary folder is emptied by ``Spool``).

While the node runs, partial files older than ``PART_MAX_AGE_S`` are deleted by the hourly
retention: a write that failed half-way may leave one.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cdss_node.logs import get_logger
from cdss_node.store.index import Index, InstanceRecord
from cdss_node.store.spool import Spool

log = get_logger(__name__)

PROBE_PREFIX = ".healthz-"   # /healthz's probe file in the spool's root
# Older than any file still being written: a dataset spilled to disk while it arrives grows at
# least once per [node] network_timeout_s (at most an hour).
PART_MAX_AGE_S = 3 * 3600

Reader = Callable[[Path, str], InstanceRecord]   # (file, its spool path) → record; ValueError


@dataclass(frozen=True)
class OrphanReport:
    indexed: int
    removed: int


def recover_orphans(index: Index, spool: Spool, read: Reader) -> OrphanReport:
    """Index or delete every spooled file the index does not name; see the module's text."""
    _remove_probes(spool.root)
    known = {row["path"] for row in index.query("SELECT path FROM instances")}
    indexed = removed = 0
    for relative in sorted(spooled_files(spool.root) - known):
        why = _adopt(index, spool, relative, read)
        if why is None:
            indexed += 1
            log.info("spool_orphan_indexed", path=relative)
        else:
            spool.remove(relative)
            removed += 1
            log.warning("spool_orphan_removed", path=relative, reason=why)
    return OrphanReport(indexed, removed)


def _adopt(index: Index, spool: Spool, relative: str, read: Reader) -> str | None:
    """Index the file as the instance it holds; else why it is not one to keep."""
    path = spool.root / relative
    try:
        record = read(path, relative)
    except (ValueError, OSError) as error:
        return str(error)
    indexed = index.query("SELECT path, received_at FROM instances WHERE sop_instance_uid=?",
                          (record.sop_instance_uid,))
    written_at = path.stat().st_mtime
    if indexed and indexed[0]["received_at"] >= written_at:
        return "a stale copy: the index has the instance at another place"
    if indexed:   # a newer copy whose row was pending at the crash: it replaces the indexed one
        replaced = index.record_instance(dataclasses.replace(record, received_at=written_at))
        if replaced:
            spool.remove(replaced)
        return None
    purged = index.query("SELECT purged_at FROM series WHERE series_uid=?", (record.series_uid,))
    if purged and purged[0]["purged_at"] and path.stat().st_mtime < purged[0]["purged_at"]:
        return "left by the retention of its series"
    index.record_instance(record)
    return None


def spooled_files(root: Path) -> set[str]:
    """``study/series/file`` of every file in the spool's instance folders."""
    found = set()
    for study in _folders(root):
        for series in _folders(study):
            found.update(f"{study.name}/{series.name}/{entry.name}"
                         for entry in os.scandir(series) if entry.is_file(follow_symlinks=False))
    return found


def _folders(parent: Path) -> list[Path]:
    """Subfolders, without the spool's own (``.tmp``)."""
    return [Path(entry.path) for entry in os.scandir(parent)
            if entry.is_dir(follow_symlinks=False) and not entry.name.startswith(".")]


def _remove_probes(root: Path) -> None:
    for probe in root.glob(PROBE_PREFIX + "*"):
        probe.unlink(missing_ok=True)


def remove_stale_parts(spool: Spool, now: float | None = None) -> int:
    """Delete partial files in the spool's temporary folder older than ``PART_MAX_AGE_S``."""
    cutoff = (time.time() if now is None else now) - PART_MAX_AGE_S
    removed = 0
    for part in spool.tmp.glob("*.part"):
        try:
            if part.stat().st_mtime < cutoff:
                part.unlink()
                removed += 1
        except FileNotFoundError:     # renamed into place or deleted meanwhile
            continue
    if removed:
        log.warning("spool_partial_files_removed", count=removed, older_than_s=PART_MAX_AGE_S)
    return removed
