"""Assembling a DIMSE message from its fragments within bounds (PS3.7 6.3, PS3.8 E.2).

pynetdicom appends every fragment of a command set and of a dataset to a ``BytesIO`` with no
limit. For the receiver's associations the node assembles the same message, with the same
result, but:

- a command set longer than ``wire.MAX_COMMAND_BYTES`` is a protocol error (the association
  is aborted, as for any undecodable message);
- a dataset goes to a ``DatasetSink``: in memory up to ``spill_bytes``, then to a file in the
  spool's temporary folder as it arrives; past ``max_dataset_bytes`` (or when the disk nears
  its reserve) it is read to its end and discarded, and the sink says why, so the C-STORE
  handler refuses it with a status instead of the node running out of memory.

The sink travels to the handler as the request's ``_dataset_file`` (pynetdicom's own slot for
a dataset received to a file); pynetdicom closes it once the handler has answered.
"""

from __future__ import annotations

import itertools
import os
import shutil
from io import BytesIO
from pathlib import Path

from pynetdicom.dimse_messages import _MESSAGE_TYPES, C_STORE_RQ, DIMSEMessage
from pynetdicom.dsutils import decode
from pynetdicom.pdu_primitives import P_DATA

from cdss_node.dicom import wire

_ORIGINAL_DECODE = DIMSEMessage.decode_msg
NO_DATA_SET = 0x0101
DISK_CHECK_BYTES = 64 * wire.MIB   # free space is looked at again after this much is spilled
_names = itertools.count()


class CommandSetTooLong(ValueError):
    """A command set longer than any real one."""


class DatasetSink:
    """The bytes of one received dataset: in memory while small, then in a spill file."""

    def __init__(self, limits: wire.WireLimits, keep: bool = True):
        self.limits = limits
        self.size = 0                 # bytes received, kept or not
        self.refusal: str | None = None if keep else "not a C-STORE dataset"
        self.buffer: BytesIO | None = BytesIO()
        self.path: Path | None = None  # the spill file, once there is one
        self._fd: int | None = None
        self._next_disk_check = 0
        self.name = ""                 # pynetdicom unlinks ``name`` after the handler

    # ------------------------------------------------------------ receiving

    def write(self, data) -> None:
        self.size += len(data)
        if self.refusal is not None:
            return
        if self.size > self.limits.max_dataset_bytes:
            mb = self.limits.max_dataset_bytes // wire.MIB
            return self._refuse(f"dataset larger than max_dataset_mb ({mb} MB)")
        if self._fd is None and self.size > self.limits.spill_bytes:
            self._spill()
        if self._fd is not None:
            self._write_file(data)
        elif self.buffer is not None:
            self.buffer.write(data)

    def _spill(self) -> None:
        self.path = self.limits.spill_dir / f"{os.getpid()}-rx{next(_names)}.part"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        self.name = str(self.path)
        memory, self.buffer = self.buffer, None
        with memory.getbuffer() as held:
            _write_all(self._fd, held)
        memory.seek(0)
        memory.truncate()  # the message's data_set is this object: empty it

    def _write_file(self, data) -> None:
        if self.size >= self._next_disk_check:
            self._next_disk_check = self.size + DISK_CHECK_BYTES
            if shutil.disk_usage(self.limits.spill_dir).free < self.limits.reserve_bytes:
                return self._refuse("disk below the configured reserve")
        try:
            _write_all(self._fd, data)
        except OSError as error:
            self._refuse(f"cannot write: {error.strerror}")

    def _refuse(self, why: str) -> None:
        self.refusal = why
        self.close()

    # ------------------------------------------------------------ handing over

    def getvalue(self) -> bytes:
        """The dataset in memory (pynetdicom's ``DataSet.getvalue()``); b"" once spilled."""
        return self.buffer.getvalue() if self.buffer is not None else b""

    @property
    def fileno(self) -> int | None:
        return self._fd

    def close(self) -> None:
        """Free the memory and remove the spill file (a handler that kept the data has
        written it elsewhere)."""
        if self.buffer is not None:
            self.buffer.seek(0)
            self.buffer.truncate()
            self.buffer = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# ------------------------------------------------------------------ DIMSEMessage.decode_msg

def decode_msg(self: DIMSEMessage, primitive: P_DATA, assoc=None) -> bool:
    """``DIMSEMessage.decode_msg`` within the association's ``WireLimits``."""
    limits = wire.limits_of(assoc.ae) if assoc is not None else None
    if limits is None:
        return _ORIGINAL_DECODE(self, primitive, assoc)
    if primitive.__class__ != P_DATA or primitive is None:
        return False
    for context_id, data in primitive.presentation_data_value_list:
        control = data[0]
        if control & 1:
            if _command_fragment(self, context_id, data, control, limits):
                return True
        else:
            _dataset_sink(self, limits).write(memoryview(data)[1:])
            if control & 2:
                return True
    return False


def check_command_size(have: int, fragment) -> None:
    """Raise if a command set of ``have`` bytes would grow past ``wire.MAX_COMMAND_BYTES``
    with ``fragment`` (a PDV value, its control header first)."""
    if have + len(fragment) - 1 > wire.MAX_COMMAND_BYTES:
        raise CommandSetTooLong(f"command set longer than {wire.MAX_COMMAND_BYTES} bytes")


def _command_fragment(message: DIMSEMessage, context_id: int, data, control: int,
                      limits: wire.WireLimits) -> bool:
    """Add a command fragment; True when the message is complete without a dataset."""
    buffer = message.encoded_command_set
    check_command_size(buffer.tell(), data)
    buffer.write(memoryview(data)[1:])
    if not control & 2:
        return False
    message.context_id = context_id
    message.command_set = decode(buffer, True, True)  # as pynetdicom does
    message.__class__ = _MESSAGE_TYPES[message.command_set.CommandField][1]
    if message.command_set.CommandDataSetType == NO_DATA_SET:
        return True
    _dataset_sink(message, limits)
    return False


def _dataset_sink(message: DIMSEMessage, limits: wire.WireLimits) -> DatasetSink:
    sink = message._data_set_file
    if not isinstance(sink, DatasetSink):
        sink = DatasetSink(limits, keep=isinstance(message, C_STORE_RQ))
        message._data_set_file = sink
        message.data_set = sink.buffer  # pynetdicom's DataSet (a BytesIO) while in memory
    return sink


def discard_pending(assoc) -> None:
    """Close the sinks of messages an ended association will never serve (a dataset cut
    off by an abort, requests still queued), so no spill file outlives its connection."""
    dimse = getattr(assoc, "dimse", None)
    if dimse is None:
        return
    messages = [getattr(dimse, "message", None)]
    messages += [item[1] for item in list(dimse.msg_queue.queue)]
    for message in messages:
        sink = getattr(message, "_data_set_file", None) or getattr(message, "_dataset_file", None)
        if isinstance(sink, DatasetSink):
            sink.close()


PATCHES = {(DIMSEMessage, "decode_msg"): (_ORIGINAL_DECODE, decode_msg)}
