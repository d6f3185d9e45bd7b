"""Connections and associations, counted apart, so that peers that never associate cannot
lock out those that do.

pynetdicom counts every open connection against ``maximum_associations``, associated or not:
17 silent sockets, reopened every 30 s, kept every PACS out. Here a connection is *pending*
from its TCP (and TLS) opening until its A-ASSOCIATE-RQ arrives, then *associated*:

- at most ``max_pending`` pending connections; one more closes the oldest pending one (a
  real peer's A-ASSOCIATE-RQ is read within milliseconds of its connection, and from then on
  it is no longer pending, so only idlers are ever oldest);
- at most ``max_associations`` associations; one more is rejected "local limit exceeded"
  (A-ASSOCIATE-RJ transient, service provider (presentation), reason 2: PS3.8 9.3.4);
- the TLS handshake runs in the connection's own thread with ``handshake_timeout_s``, not in
  the thread that accepts connections, where one silent TLS client held every other peer out.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from typing import Callable

from pynetdicom.transport import ThreadedAssociationServer

from cdss_node.dicom import wire
from cdss_node.logs import get_logger

log = get_logger(__name__)

REJECT_LOCAL_LIMIT = (0x02, 0x03, 0x02)
LOG_EVERY_S = 10.0   # a flood of refused connections logs one line per reason this often


class RefusalLog:
    """Counts refused connections by reason for /metrics (``on_refused``) and logs the first
    of a reason, then at most one line per ``LOG_EVERY_S`` with how many it stands for: a
    flood of thousands a second must not become thousands of log lines."""

    def __init__(self, on_refused: Callable[[str], None] = lambda reason: None):
        self.on_refused = on_refused
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def refused(self, reason: str, **fields) -> None:
        self.on_refused(reason)
        now = time.monotonic()
        with self._lock:
            count = self._unlogged.get(reason, 0) + 1
            if now - self._last.get(reason, -LOG_EVERY_S) < LOG_EVERY_S:
                self._unlogged[reason] = count
                return
            self._last[reason], self._unlogged[reason] = now, 0
        log.warning("connection_refused", reason=reason, connections=count, **fields)


class ConnectionGuard:
    """Counts from the AE's live association threads, so nothing can leak: pynetdicom does
    not report every end (an A-ABORT from the peer fires no EVT_CONN_CLOSE). Connections
    still at the server's gate (``GuardedServer``) count as pending too."""

    def __init__(self, max_associations: int, max_pending: int,
                 refusals: RefusalLog | None = None):
        self.max_associations = max_associations
        self.max_pending = max_pending
        self.refusals = refusals or RefusalLog()
        self._lock = threading.Lock()
        self._gated: dict[int, tuple[float, socket.socket]] = {}
        self.evicted = 0

    def gate_opened(self, sock: socket.socket, ae) -> None:
        with self._lock:
            self._gated[id(sock)] = (time.monotonic(), sock)
        self._evict_oldest(ae)

    def gate_closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._gated.pop(id(sock), None)

    def opened(self, assoc) -> None:
        """A connection reached pynetdicom; past ``max_pending`` the oldest pending one is
        closed."""
        assoc.cdss_opened = time.monotonic()
        self._evict_oldest(assoc.ae)

    def _evict_oldest(self, ae) -> None:
        with self._lock:
            pending = [(opened, sock) for opened, sock in self._gated.values()]
            pending += [(_opened(a), a) for a in self._pending(ae)]
            if len(pending) <= self.max_pending:
                return
            _, oldest = min(pending, key=lambda entry: entry[0])
            if isinstance(oldest, socket.socket):
                self._gated.pop(id(oldest), None)
            else:
                oldest.cdss_evicted = True
            self.evicted += 1
        self.refusals.refused("too many connections without an association: the oldest "
                              "closed", max_pending_connections=self.max_pending)
        if isinstance(oldest, socket.socket):
            _shutdown(oldest)
        else:
            close_transport(oldest)

    def requested(self, assoc) -> bool:
        """An A-ASSOCIATE-RQ arrived: may it become an association?"""
        with self._lock:
            if len(self._associated(assoc.ae)) >= self.max_associations:
                return False
            assoc.cdss_admitted = True
            return True

    def counts(self, ae) -> tuple[int, int]:
        """(pending connections, associations)."""
        with self._lock:
            return len(self._gated) + len(self._pending(ae)), len(self._associated(ae))

    @staticmethod
    def _pending(ae) -> list:
        """Connections whose A-ASSOCIATE-RQ has not been read (``pdu_reader`` marks it) nor
        taken by the association."""
        return [a for a in ae.active_associations if a.is_acceptor
                and a.requestor.primitive is None and not getattr(a, "cdss_evicted", False)
                and not getattr(a.dul, "cdss_associate_rq_read", False)]

    @staticmethod
    def _associated(ae) -> list:
        return [a for a in ae.active_associations if getattr(a, "cdss_admitted", False)
                and not (a.is_released or a.is_aborted)]


def _opened(assoc) -> float:
    return getattr(assoc, "cdss_opened", 0.0)


def close_transport(assoc) -> None:
    """End a connection from another thread: its DUL reads the end and closes as usual."""
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        _shutdown(sock)
    wake_acceptor(assoc)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed
        pass


def wake_acceptor(assoc) -> None:
    """An acceptor waits up to its ACSE timeout (30 s) for an A-ASSOCIATE-RQ, even after
    its connection ended; told ``None`` it stops at once, as on that timeout, and its thread
    and connection slot are free."""
    if assoc.is_acceptor and not assoc.is_established and assoc.requestor.primitive is None:
        assoc.dul.to_user_queue.put(None)


# A-ABORT, source 2 (service provider), reason 1 (unrecognized PDU) (PS3.8 9.3.8)
ABORT_UNRECOGNIZED_PDU = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 2, 1])


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's server, with a gate before pynetdicom sees a connection, and the TLS
    handshake moved off the accepting thread.

    The gate waits (at most ``gate_timeout_s``) for the first PDU header of a plain TCP
    connection and lets only an A-ASSOCIATE-RQ of a plausible length through to pynetdicom;
    anything else gets an A-ABORT and is closed at once, without the two threads and the
    state machine pynetdicom builds for each connection. A flood of such connections (8000 in
    40 s in bench/hostile.py) then costs the node a thread each instead of three.
    """

    handshake_timeout_s = 10.0
    max_handshakes = 64

    def __init__(self, *args, guard: ConnectionGuard | None = None,
                 gate_timeout_s: float = 30.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.guard, self.gate_timeout_s = guard, gate_timeout_s
        self._handshakes = threading.BoundedSemaphore(self.max_handshakes)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        return self.socket.accept()

    def process_request_thread(self, request, client_address) -> None:
        if self.ssl_context is not None:
            request = self._handshake(request, client_address)
        elif not self._through_gate(request, client_address):
            request = None
        if request is not None:
            super().process_request_thread(request, client_address)

    def _through_gate(self, sock: socket.socket, client_address) -> bool:
        if self.guard is not None:
            self.guard.gate_opened(sock, self.ae)
        try:
            sock.settimeout(self.gate_timeout_s)
            header = sock.recv(6, socket.MSG_PEEK | socket.MSG_WAITALL)
            sock.settimeout(None)
        except OSError:           # silent until the timeout, reset, or closed by the guard
            header = b""
        finally:
            if self.guard is not None:
                self.guard.gate_closed(sock)
        if _plausible_associate_rq(header):
            return True
        _refuse(sock, header)
        reason = ("no A-ASSOCIATE-RQ of a plausible length first" if header else
                  "closed or silent before an A-ASSOCIATE-RQ")
        if self.guard is not None:
            self.guard.refusals.refused(reason, peer=client_address[0])
        return False

    def _handshake(self, sock: socket.socket, client_address) -> ssl.SSLSocket | None:
        if not self._handshakes.acquire(blocking=False):
            log.warning("tls_refused", reason="too many TLS handshakes at once",
                        peer=client_address[0])
            sock.close()
            return None
        try:
            sock.settimeout(self.handshake_timeout_s)
            tls = self.ssl_context.wrap_socket(sock, server_side=True)
            tls.settimeout(None)
            return tls
        except (OSError, ValueError) as error:   # ssl.SSLError and timeouts are OSErrors
            log.warning("tls_handshake_failed", peer=client_address[0], error=str(error)[:200])
            sock.close()
            return None
        finally:
            self._handshakes.release()


def _plausible_associate_rq(header: bytes) -> bool:
    return (len(header) == 6 and header[0] == 0x01
            and int.from_bytes(header[2:6], "big") <= wire.MAX_ASSOCIATION_PDU_BYTES)


def _refuse(sock: socket.socket, header: bytes) -> None:
    """Close a connection that did not begin with an A-ASSOCIATE-RQ; A-ABORT if it sent a
    PDU header (PS3.8 AA-1), nothing if it sent nothing."""
    if len(header) == 6:
        try:
            sock.settimeout(1.0)
            sock.sendall(ABORT_UNRECOGNIZED_PDU)
        except OSError:
            pass
    _shutdown(sock)
    sock.close()


def start_server(ae, address: tuple[str, int], evt_handlers: list,
                 ssl_context: ssl.SSLContext | None, guard: ConnectionGuard,
                 gate_timeout_s: float) -> GuardedServer:
    """``ae.start_server(block=False)`` with a ``GuardedServer``."""
    server = ae.make_server(address, ssl_context=ssl_context, evt_handlers=evt_handlers,
                            server_class=GuardedServer, guard=guard,
                            gate_timeout_s=gate_timeout_s)
    thread = threading.Thread(target=server.serve_forever, name="CdssAcceptor", daemon=True)
    thread.start()
    ae._servers.append(server)
    return server
