"""The spool: received instances on disk, exactly as they arrived.

Layout: ``<data_dir>/spool/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``.
Files are written to ``spool/.tmp`` and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from cdss_node.uids import is_valid_uid

TMP_DIR = ".tmp"


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

    def write_atomic(self, path: Path, *chunks: bytes) -> None:
        """Write ``chunks`` one after the other to ``path`` via a temporary file and a rename."""
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.writelines(chunks)
                if self.fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        if self.fsync:
            _fsync_dir(path.parent)

    def clean_tmp(self) -> int:
        """Remove partial files left by a crash; returns how many."""
        removed = 0
        for part in self.tmp.glob("*.part"):
            part.unlink(missing_ok=True)
            removed += 1
        return removed

    def remove_series(self, study_uid: str, series_uid: str) -> None:
        if is_valid_uid(study_uid) and is_valid_uid(series_uid):
            shutil.rmtree(self.root / study_uid / series_uid, ignore_errors=True)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
