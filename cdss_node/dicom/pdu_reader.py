"""Reading a PDU from a peer within bounds (PS3.8 9.3).

pynetdicom's DUL reads a PDU's 6-byte header and then as many bytes as the header claims. The
node reads the same PDUs, with the same events, but:

- a PDU longer than its type allows (a P-DATA-TF over the Maximum Length Received the node
  announced, an A-ASSOCIATE-RQ over ``wire.MAX_ASSOCIATION_PDU_BYTES``, a release or abort over
  a few bytes) is never read: Evt19, and the state machine aborts the association;
- memory follows the data: the buffer grows as bytes arrive, never to a length only claimed;
- a PDU whose first byte arrived must arrive whole within ``pdu_timeout_s``, however slowly
  or stalled the peer sends it: Evt17, and the connection is closed.

A P-DATA-TF is split into views of the buffer (``dimse_fast.decode_p_data_tf``) unless
pynetdicom's verbose handlers want its own objects.
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import time

from pynetdicom import evt
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF

from cdss_node.dicom import connections, dimse_fast, dul_store, wire
from cdss_node.logs import get_logger

log = get_logger(__name__)

P_DATA_TF_TYPE = 0x04
PDU_TYPES = range(0x01, 0x08)   # A-ASSOCIATE-RQ .. A-ABORT (PS3.8 9.3.1)
FIRST_READ_BYTES = 64 * 1024    # the buffer's first size; it grows fourfold as data arrives
ENDING_PDUS = {0x05: "released", 0x07: "aborted"}   # A-RELEASE-RQ, A-ABORT
A_ASSOCIATE_RQ_TYPE = 0x01

_ORIGINAL_READ = DULServiceProvider._read_pdu_data


class UnknownPdu(ValueError):
    """A PDU type that PS3.8 does not define."""


class PduTooLong(ValueError):
    """A PDU whose length field exceeds what its type may carry here."""


class PduTimeout(ConnectionError):
    """The peer began a PDU and did not finish it in time."""


def read_pdu(self: DULServiceProvider) -> None:
    """``DULServiceProvider._read_pdu_data`` within the association's ``WireLimits``."""
    limits = wire.limits_of(self.assoc.ae) if getattr(self, "assoc", None) else None
    if limits is None:
        return _ORIGINAL_READ(self)
    raw = getattr(self.socket, "socket", None)
    while _read_one(self, raw, limits) and _rest_of_message_waiting(self, raw):
        self._idle_timer.restart()


def _rest_of_message_waiting(dul: DULServiceProvider, raw) -> bool:
    """Is the DUL thread's C-STORE (``dul_store``) mid-message, with the next bytes already
    here? Then they are read at once, without a turn of pynetdicom's reactor loop (two
    selects and a queue, ~20 us a PDU). Never waiting, and never while the loop has a
    primitive to send (an abort) or an event to act on, however fast the peer sends."""
    if (not dul_store.mid_message(dul) or dul._kill_thread or dul.to_provider_queue.queue
            or dul.event_queue.queue):
        return False
    if isinstance(raw, ssl.SSLSocket) and raw.pending():
        return True
    try:
        return bool(select.select([raw], [], [], 0)[0])
    except (OSError, ValueError):          # closed meanwhile: the reactor will see it
        return False


def _read_one(self: DULServiceProvider, raw, limits: wire.WireLimits) -> bool:
    """Read and pass on one PDU; True if the DUL thread's C-STORE took it."""
    try:
        pdu_bytes = receive_pdu(raw, limits) if raw is not None else None
    except (OSError, ValueError) as error:
        log.warning("pdu_read_failed", error=str(error)[:200])
        _ended(self, "aborted" if isinstance(error, ValueError) else
               "timed out" if isinstance(error, PduTimeout) else "closed")
        self.event_queue.put("Evt19" if isinstance(error, ValueError) else "Evt17")
        connections.wake_acceptor(self.assoc)
        return False
    if pdu_bytes is None:  # the peer closed the connection between PDUs
        _ended(self, "closed")
        self.event_queue.put("Evt17")
        connections.wake_acceptor(self.assoc)
        return False
    if pdu_bytes[0] in ENDING_PDUS:
        _ended(self, ENDING_PDUS[pdu_bytes[0]])
    elif pdu_bytes[0] == A_ASSOCIATE_RQ_TYPE:
        self.cdss_associate_rq_read = True     # no longer a pending connection
    try:
        if pdu_bytes[0] == P_DATA_TF_TYPE and dul_store.take(self, pdu_bytes):
            return True
        pdu, event = _decode(self, pdu_bytes)
    except Exception as error:  # as pynetdicom: an undecodable PDU is Evt19, never a crash
        log.warning("pdu_undecodable", error=f"{type(error).__name__}: {error}"[:200])
        _ended(self, "aborted")
        self.event_queue.put("Evt19")
        connections.wake_acceptor(self.assoc)
        return False
    self.event_queue.put(event)
    self._recv_pdu.put(pdu)
    return False


def _ended(dul: DULServiceProvider, outcome: str) -> None:
    """How the peer ended the association, as the receiver records it: the first word."""
    if getattr(dul, "cdss_outcome", None) is None:
        dul.cdss_outcome = outcome


def receive_pdu(sock: socket.socket, limits: wire.WireLimits) -> bytearray | None:
    """One whole PDU from ``sock``; None if the peer closed the connection before it began."""
    deadline = time.monotonic() + limits.pdu_timeout_s
    pdu = bytearray()
    _read_into(sock, pdu, 6, deadline, may_end_before=True)
    if not pdu:
        return None
    pdu_type, _, length = struct.unpack(">BBL", pdu)
    if pdu_type not in PDU_TYPES:
        raise UnknownPdu(f"unknown PDU type 0x{pdu_type:02X}")
    if length > limits.max_pdu_length(pdu_type):
        raise PduTooLong(f"PDU type 0x{pdu_type:02X} claims {length} bytes, more than the "
                         f"{limits.max_pdu_length(pdu_type)} accepted")
    _read_into(sock, pdu, 6 + length, deadline)  # the same buffer grows on
    return pdu


def _read_into(sock, buffer: bytearray, total: int, deadline: float,
               may_end_before: bool = False) -> None:
    """Grow ``buffer`` to ``total`` bytes from ``sock``, its size following the data."""
    got = len(buffer)
    timeout = sock.gettimeout()
    try:
        while got < total:
            if got == len(buffer):
                buffer.extend(bytes(min(total, max(FIRST_READ_BYTES, 4 * got)) - got))
            sock.settimeout(_remaining(deadline, total, got))
            with memoryview(buffer) as view:
                try:
                    n = sock.recv_into(view[got:])
                except TimeoutError:
                    raise PduTimeout(f"PDU not complete in time ({got} of {total} bytes)") \
                        from None
            if not n:
                if may_end_before and got == 0:
                    del buffer[:]
                    return
                raise ConnectionError(f"connection closed inside a PDU ({got} of {total} bytes)")
            got += n
    finally:
        sock.settimeout(timeout)
    del buffer[total:]


def _remaining(deadline: float, total: int, got: int) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise PduTimeout(f"PDU not complete in time ({got} of {total} bytes)")
    return left


def _decode(dul: DULServiceProvider, pdu_bytes: bytearray):
    if pdu_bytes[0] != P_DATA_TF_TYPE or dimse_fast.verbose_handlers(dul.assoc):
        return dul._decode_pdu(pdu_bytes)
    pdu = P_DATA_TF()
    dimse_fast.decode_p_data_tf(pdu, pdu_bytes)
    evt.trigger(dul.assoc, evt.EVT_PDU_RECV, {"pdu": pdu})
    return pdu, "Evt10"


PATCHES = {(DULServiceProvider, "_read_pdu_data"): (_ORIGINAL_READ, read_pdu)}
