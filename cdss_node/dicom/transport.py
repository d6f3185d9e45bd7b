"""The node's changes to pynetdicom's transport: bounds against hostile peers, and the
tunings that ingest speed depends on.

Bounds (``wire``): PDUs read within their type's length and a deadline (``pdu_reader``),
messages assembled with a bounded command set and datasets spilled to disk (``dataset_sink``),
a prompt failure for services the node does not offer (``services``).

Speed, measured with dcmtk storescu sending 244 CT images of 512 x 512 to a pynetdicom SCP
whose handler does nothing: about 300 images/s as shipped, 395 with a 0.2 ms DUL poll, 565
with the poll and a PDU read into one buffer, 605 without pynetdicom's logging handlers
(dcmtk storescp in the same runs: 700-800); C-STORE messages then take ``dimse_fast``.
With the receiver's handler in place the node reached 0.40-0.46x storescp; serving C-STOREs
on the DUL thread that reads them (``dul_store``: no hand-offs to the association thread,
which then naps until a release or abort) brought it to 0.63-0.69x; index rows in batches
(``receiver.INDEX_BATCH``), the disk's free space read once a second (``spool.FreeSpace``),
the log context bound once per thread and the rest of a message read without a reactor turn
(``pdu_reader``) to 0.75-0.79x (``bench/ingest.py``, 7-11 interleaved runs).

Every patch acts only for the associations of an AE that carries ``wire`` limits (the
receiver's) and hands every other association to pynetdicom's own code. ``apply`` installs
them only on the exact pynetdicom releases they were checked against, and only if the
pynetdicom names they use still import; otherwise pynetdicom stays as it is, the log says so,
and the node still has what needs no patch: the socket timeout, the connection limits and the
TLS handshake off the accepting thread (``connections``), and a dataset size checked after
receipt.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import socket

import pynetdicom
from pynetdicom import _config, evt

from cdss_node.dicom import reactor_wait
from cdss_node.logs import get_logger

log = get_logger(__name__)

CHECKED_RELEASES = ("3.0.4",)
# pynetdicom's DUL thread sleeps this long between polls of an idle socket (its default is
# 1 ms), and every C-STORE waits on such polls. Shorter polls also take the GIL from the
# handler more often; 0.5 ms was best in paired runs against storescp (0.38x at 1 ms:
# 0.28x, at 0.2 ms: 0.35x).
DUL_POLL_S = 0.0005
_applied: dict = {}  # (class, name) -> (original, patched) as installed by apply()


def patches() -> dict | None:
    """(class, name) → (pynetdicom's function, the node's); None if they cannot be had."""
    try:
        from cdss_node.dicom import dataset_sink, dimse_fast, dul_store, pdu_reader, services
    except (ImportError, AttributeError) as error:  # a pynetdicom without the private names
        log.warning("pynetdicom_patches_unavailable", error=str(error))
        return None
    return {**pdu_reader.PATCHES, **dataset_sink.PATCHES, **dimse_fast.PATCHES,
            **services.PATCHES, **dul_store.PATCHES}


def apply(verbose_pynetdicom_logs: bool = False) -> bool:
    """Install the patches if this pynetdicom release was checked; idempotent.

    pynetdicom's standard event handlers format a summary of every PDU and DIMSE message
    (0.4 ms of CPU per C-STORE) even when its logger discards them; they stay off unless
    ``verbose_pynetdicom_logs`` (the node's debug level), and with them the C-STORE fast
    paths step aside. The node logs associations itself.
    """
    _config.LOG_HANDLER_LEVEL = "standard" if verbose_pynetdicom_logs else "none"
    found = patches() if pynetdicom.__version__ in CHECKED_RELEASES else None
    if found is None:
        log.warning("pynetdicom_not_tuned", version=pynetdicom.__version__,
                    checked=CHECKED_RELEASES)
        return False
    for (cls, name), (_, patched) in found.items():
        setattr(cls, name, patched)
    _applied.update(found)
    reactor_wait.apply()
    keep_buffers_on_heap()
    return True


def restore() -> None:
    """Put back pynetdicom's own functions."""
    for (cls, name), (original, _) in _applied.items():
        setattr(cls, name, original)
    _applied.clear()
    reactor_wait.restore()


def applied() -> bool:
    return bool(_applied)


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
    """EVT_CONN_OPEN: a read/write timeout on the socket (a stalled peer is let go even where
    the patches are not installed), no Nagle delay on our small responses, a shorter DUL
    poll that ends when data arrives or a response is queued."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.settimeout(event.assoc.ae.network_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if hasattr(event.assoc.dul, "_run_loop_delay"):
        event.assoc.dul._run_loop_delay = DUL_POLL_S
    if _applied:
        reactor_wait.watch_connection(event.assoc.dul)


def release_connection(event: evt.Event) -> None:
    """EVT_CONN_CLOSE: close what ``tune_connection`` opened, and the spill files of any
    dataset the association will never hand to the handler."""
    reactor_wait.unwatch_connection(event.assoc.dul)
    if _applied:
        from cdss_node.dicom import dataset_sink, dul_store
        dataset_sink.discard_pending(event.assoc)
        dul_store.discard(event.assoc.dul)


def never_serves(ae) -> None:
    """Mark an AE whose associations only send requests (the node's sender): its reactor
    then takes no message meant for the waiting ``send_*`` call (``reactor_wait.get_msg``)."""
    ae.cdss_never_serves = True

