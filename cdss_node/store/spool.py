"""The spool: received instances on disk, exactly as they arrived.

Layout: ``<data_dir>/spool/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``.
Files are written to ``spool/.tmp`` and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Callable, NamedTuple

from cdss_node.uids import is_valid_uid

TMP_DIR = ".tmp"
_names = itertools.count()  # unique temporary names within this process (next() is atomic)


class Spool:
    def __init__(self, root: Path, fsync: bool = False):
        self.root = Path(root).resolve()
        self.fsync = fsync
        self.tmp = self.root / TMP_DIR
        self.tmp.mkdir(parents=True, exist_ok=True)

    def instance_path(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> Path:
        """Where an instance lives; raises ValueError for a UID that is not a UID."""
        for name, uid in (("study", study_uid), ("series", series_uid),
                          ("SOP instance", sop_instance_uid)):
            if not is_valid_uid(uid):
                raise ValueError(f"{name} UID {uid!r} is not a valid UID")
        # A valid UID is digits and dots and never "." or "..": it cannot leave the spool.
        return self.root / study_uid / series_uid / f"{sop_instance_uid}.dcm"

    def write_atomic(self, path: Path, *chunks: bytes) -> float:
        """Write ``chunks`` one after the other to ``path`` via a temporary file and a rename;
        the file's modification time (the clock ``remove_if_older`` compares with).
        Files are readable by the node's user only (they hold patient data)."""
        tmp = self.tmp / f"{os.getpid()}-{next(_names)}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, chunks)
            if self.fsync:
                os.fsync(fd)
            written_at = os.fstat(fd).st_mtime
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        try:
            _replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)   # nothing half-done stays in .tmp
            raise
        if self.fsync:
            _fsync_dir(path.parent)
        return written_at

    def clean_tmp(self) -> int:
        """Remove partial files left by a crash; returns how many."""
        removed = 0
        for part in self.tmp.glob("*.part"):
            part.unlink(missing_ok=True)
            removed += 1
        return removed

    def remove_if_older(self, relative_path: str, before: float) -> None:
        """Delete a spooled file unless it was written at or after ``before`` (a new copy),
        and its series folder once empty."""
        path = self.root / relative_path
        try:
            if path.stat().st_mtime < before:
                path.unlink()
            path.parent.rmdir()  # only succeeds when empty
        except OSError:  # already gone, or the folder is not empty
            pass

    def remove(self, relative_path: str) -> None:
        """Delete a spooled file the index no longer names, and its series folder once empty."""
        self.remove_if_older(relative_path, math.inf)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free


class FreeSpace:
    """Free bytes on the spool's disk as the receiver checks them for every instance: read
    from the disk at most once per ``interval_s`` or ``recheck_bytes`` taken, and in between
    the last reading less what was taken since (a ``statvfs`` per instance was 3 % of the
    node's time per image). The estimate can only be lower than a fresh reading, unless
    another program writes to the disk: that is seen within ``interval_s``."""

    def __init__(self, read_free: Callable[[], int], interval_s: float = 1.0,
                 recheck_bytes: int = 64 * 1024 * 1024):
        self.read_free, self.interval_s, self.recheck_bytes = read_free, interval_s, recheck_bytes
        self._lock = threading.Lock()
        self._free = 0
        self._taken = 0
        self._read_at = -math.inf

    def take(self, size: int, reserve: int) -> bool:
        """Count ``size`` bytes as written if the disk keeps ``reserve`` bytes free after
        them; False (nothing counted) if it would not."""
        with self._lock:
            now = time.monotonic()
            if now - self._read_at >= self.interval_s or self._taken >= self.recheck_bytes:
                self._free, self._taken, self._read_at = self.read_free(), 0, now
            if self._free - self._taken - size < reserve:
                return False
            self._taken += size
            return True


def _replace(tmp: Path, path: Path) -> None:
    try:
        os.replace(tmp, path)
    except FileNotFoundError:  # first instance of its series: make the folder
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, path)


class FileRange(NamedTuple):
    """Bytes ``offset .. offset + length`` of an open file: a chunk that ``write_atomic``
    copies in the kernel (a large received dataset already on disk)."""

    fd: int
    offset: int
    length: int


def _write_all(fd: int, chunks: tuple[bytes | FileRange, ...]) -> None:
    """One writev for the usual case; the rest again if the kernel wrote less."""
    if any(isinstance(chunk, FileRange) for chunk in chunks):
        for chunk in chunks:
            if isinstance(chunk, FileRange):
                _copy_range(fd, chunk)
            else:
                _write_all(fd, (chunk,))
        return
    written = os.writev(fd, chunks)
    rest = b"".join(chunks)[written:] if written < sum(map(len, chunks)) else b""
    while rest:
        rest = rest[os.write(fd, rest):]


def _copy_range(fd: int, source: FileRange) -> None:
    offset, end = source.offset, source.offset + source.length
    while offset < end:
        sent = os.sendfile(fd, source.fd, offset, min(end - offset, 1 << 30))
        if not sent:
            raise OSError(f"source file ended at byte {offset} of {end}")
        offset += sent


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
