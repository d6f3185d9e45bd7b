"""Tunings of pynetdicom's transport that ingest speed depends on.

Measured with dcmtk storescu sending 244 CT images of 512 x 512 to a pynetdicom SCP whose
handler does nothing: about 300 images/s as shipped, 395 with a 0.2 ms DUL poll, 565 with the
poll and ``recv_into`` below, 605 without pynetdicom's logging handlers (dcmtk storescp in
the same runs: 700-800). pynetdicom reads a PDU in 4 KiB
``recv`` calls, a Python loop of 128 turns per 512 KiB image; reading straight into one
buffer of the PDU's size does the same work in a few system calls.

``apply`` patches only the pynetdicom releases this was checked against; on any other it
leaves pynetdicom as it is and says so in the log.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import socket

import pynetdicom
from pynetdicom import _config, evt
from pynetdicom.transport import AssociationSocket

from cdss_node.dicom import dimse_fast, reactor_wait
from cdss_node.logs import get_logger

log = get_logger(__name__)

CHECKED_RELEASES = ("3.0.",)
# pynetdicom's DUL thread sleeps this long between polls of an idle socket (its default is
# 1 ms), and every C-STORE waits on such polls. Shorter polls also take the GIL from the
# handler more often; 0.5 ms was best in paired runs against storescp (0.38x at 1 ms:
# 0.28x, at 0.2 ms: 0.35x).
DUL_POLL_S = 0.0005
_applied = False  # apply() patched this pynetdicom release


def recv_into_buffer(self: AssociationSocket, nr_bytes: int) -> bytearray:
    """``AssociationSocket.recv`` with the same contract: block until ``nr_bytes`` are read,
    return what was read so far if the peer closes the connection."""
    buffer = bytearray(nr_bytes)
    view = memoryview(buffer)
    nr_read = 0
    while nr_read < nr_bytes:
        n = self.socket.recv_into(view[nr_read:], nr_bytes - nr_read)
        if not n:
            del view
            return buffer[:nr_read]
        nr_read += n
    return buffer


def apply(verbose_pynetdicom_logs: bool = False) -> bool:
    """Patch ``AssociationSocket.recv`` if this pynetdicom release was checked; idempotent.

    pynetdicom's standard event handlers format a summary of every PDU and DIMSE message
    (0.4 ms of CPU per C-STORE) even when its logger discards them; they stay off unless
    ``verbose_pynetdicom_logs`` (the node's debug level). The node logs associations itself.
    Without them, C-STORE messages take the fast paths of ``dimse_fast``.
    """
    _config.LOG_HANDLER_LEVEL = "standard" if verbose_pynetdicom_logs else "none"
    if not pynetdicom.__version__.startswith(CHECKED_RELEASES):
        log.warning("pynetdicom_not_tuned", version=pynetdicom.__version__,
                    checked=CHECKED_RELEASES)
        return False
    global _applied
    AssociationSocket.recv = recv_into_buffer
    reactor_wait.apply()
    _applied = True
    keep_buffers_on_heap()
    if verbose_pynetdicom_logs:  # its handlers read the response's pydicom command set
        dimse_fast.restore()
    else:
        dimse_fast.apply()
    return True


# glibc's mallopt: instance-sized buffers (~0.5 MB) come from the heap and stay there, instead
# of a fresh mmap per buffer that faults in ~130 pages for every received image.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024      # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024


def keep_buffers_on_heap() -> bool:
    """Tell glibc's malloc to serve large buffers from the heap; False where there is no
    glibc (the node then works as before, with more page faults)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return bool(libc and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                    and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


def tune_connection(event: evt.Event) -> None:
    """EVT_CONN_OPEN: no Nagle delay on our small responses, a shorter DUL poll that ends
    when data arrives or a response is queued."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if hasattr(event.assoc.dul, "_run_loop_delay"):
        event.assoc.dul._run_loop_delay = DUL_POLL_S
    if _applied:
        reactor_wait.watch_connection(event.assoc.dul)


def release_connection(event: evt.Event) -> None:
    """EVT_CONN_CLOSE: close what ``tune_connection`` opened."""
    reactor_wait.unwatch_connection(event.assoc.dul)
