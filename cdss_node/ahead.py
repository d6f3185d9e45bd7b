"""Analysis ahead of completion: the grace period after an association's release is spent on
the analysis, not waiting for it.

A series is complete only once ``[series] grace_s`` has passed with no new instance, so that
instances sent in a further association join it. The node does not wait idle meanwhile: when
an association ends, the analysis process runs the pipeline (load, segmentation, radiomics,
prediction) on the series' files as they are, in a thread of its own, and keeps the result with
the identity of every file it read (path, inode, size, modification time). When the series'
job comes, the result is taken only if the job's files are exactly those files; an instance
that arrived, or was replaced, since makes it stale, and it is thrown away and the series
analysed anew. Nothing of an analysis ahead leaves the process before its job: result files,
SEG and SR are written by the job.

One analysis ahead at a time, and one kept: a job waits for a running one to end (so that two
volumes never compete for memory and cores), and takes or discards it. A request that comes
while one runs (the same series, grown by a further association) is begun when it ends, unless
a job has come by then; the newest such request replaces an older one.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generic, Sequence, TypeVar

from cdss_node.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")
FileIdentity = tuple[str, int, int, int]   # path, inode, size, modification time (ns)


def files_key(paths: Sequence[Path | str]) -> tuple[FileIdentity, ...] | None:
    """What identifies the files' contents as the spool holds them (a stored instance is
    written to a new file and renamed into place, so a replaced one has a new inode); None
    where a file cannot be looked at."""
    key = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        key.append((str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(key)


@dataclass(frozen=True)
class _Done(Generic[T]):
    key: tuple[FileIdentity, ...]
    result: T
    seconds: float


class AheadOfCompletion(Generic[T]):
    """Runs ``analyse(paths)`` in a thread when asked, and hands its result to the job whose
    files are the same, once."""

    def __init__(self, analyse: Callable[[Sequence[Path]], T]):
        self._analyse = analyse
        self._thread: threading.Thread | None = None
        self._done: _Done[T] | None = None
        self._next: list[Path] | None = None     # asked for while one ran
        self._running: tuple[FileIdentity, ...] | None = None
        self._lock = threading.Lock()

    def start(self, paths: Sequence[Path]) -> bool:
        """Begin an analysis of ``paths`` ahead; while one runs, ``paths`` are analysed when it
        ends. False when nothing began now (also when these very files are being, or have
        been, analysed ahead)."""
        key = files_key(paths)
        with self._lock:
            if key is None or key in (self._running, self._done and self._done.key):
                return False
            if self._thread is not None and self._thread.is_alive():
                self._next = list(paths)
                return False
            self._begin(list(paths), key)
            return True

    def _begin(self, paths: list[Path], key: tuple[FileIdentity, ...]) -> None:
        """(With the lock held.) The analysis of ``paths`` in a thread of its own; ``key`` is
        taken before the files are read, so that a later change makes the result stale."""
        self._done, self._running = None, key   # one kept: the newest
        self._thread = threading.Thread(target=self._run, args=(paths, key),
                                        name="cdss-ahead", daemon=True)
        self._thread.start()

    def _run(self, paths: list[Path], key: tuple[FileIdentity, ...]) -> None:
        started = time.perf_counter()
        try:
            done = _Done(key, self._analyse(paths), time.perf_counter() - started)
        except Exception as error:      # the job analyses anew, and meets the error itself
            log.warning("analysis_ahead_failed", error=repr(error)[:300])
            done = None
        with self._lock:
            self._done, self._running = done, None
            following, self._next = self._next, None
            key = files_key(following) if following is not None else None
            if key is not None:
                self._begin(following, key)

    def take(self, paths: Sequence[Path]) -> T | None:
        """The result for exactly these files, if one was made ahead; waits for a running
        analysis first (and begins no further one). What is not taken is let go."""
        with self._lock:
            self._next = None
        while True:
            thread = self._thread
            if thread is not None:
                thread.join()
            with self._lock:
                if self._thread is thread:
                    done, self._done = self._done, None
                    break
        if done is None:
            return None
        if done.key != files_key(paths):
            log.info("analysis_ahead_stale", reason="the series' files changed since")
            return None
        log.info("analysis_ahead_taken", seconds=round(done.seconds, 2))
        return done.result
