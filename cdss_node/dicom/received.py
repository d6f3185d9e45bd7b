"""The dataset of a received C-STORE, wherever it was received to.

A small dataset arrives in memory; one over ``wire.SPILL_BYTES`` in a spill file
(``dataset_sink``), which the header walk reads through a read-only memory map (it touches
element headers, not pixel data) and the spool copies in the kernel. With pynetdicom's own
code (a release the node was not checked against) it is the request's ``DataSet`` bytes.
"""

from __future__ import annotations

import mmap
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cdss_node.dicom.file_meta import file_meta_length
from cdss_node.store.spool import FileRange

COMPARE_CHUNK = 1024 * 1024
META_READ = 64 * 1024  # a file meta information group fits easily


class ReceivedDataset:
    def __init__(self, request):
        sink = getattr(request, "_dataset_file", None)
        self._sink = sink if hasattr(sink, "refusal") else None
        self._bytes = None if self._sink and self._sink.fileno is not None else (
            request.DataSet.getvalue() if request.DataSet is not None else b"")
        self.refusal: str | None = self._sink.refusal if self._sink else None

    @property
    def size(self) -> int:
        return len(self._bytes) if self._bytes is not None else self._sink.size

    @contextmanager
    def view(self) -> Iterator[bytes | mmap.mmap]:
        """The dataset's bytes to read (a memory map for a spilled one)."""
        if self._bytes is not None:
            yield self._bytes
            return
        if self.size == 0:
            yield b""
            return
        mapped = mmap.mmap(self._sink.fileno, 0, access=mmap.ACCESS_READ)
        try:
            yield mapped
        finally:
            mapped.close()

    def chunk(self) -> bytes | FileRange:
        """What ``Spool.write_atomic`` writes after the file meta."""
        if self._bytes is not None:
            return self._bytes
        return FileRange(self._sink.fileno, 0, self._sink.size)

    def same_as_file(self, path: Path) -> bool:
        """Does the file at ``path`` hold this dataset behind its file meta (which may name
        another sending AE)? Compared a megabyte at a time."""
        try:
            with open(path, "rb") as stored, self.view() as data:
                meta_end = file_meta_length(stored.read(META_READ))
                if meta_end is None or os.fstat(stored.fileno()).st_size - meta_end != self.size:
                    return False
                stored.seek(meta_end)
                return all(stored.read(COMPARE_CHUNK) == data[at:at + COMPARE_CHUNK]
                           for at in range(0, self.size, COMPARE_CHUNK))
        except FileNotFoundError:
            return False
