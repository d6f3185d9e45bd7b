"""Connections and associations, counted apart, so that peers that never associate cannot
lock out those that do.

pynetdicom counts every open connection against ``maximum_associations``, associated or not:
17 silent sockets, reopened every 30 s, kept every PACS out. Here a connection is *pending*
from its TCP (and TLS) opening until its A-ASSOCIATE-RQ arrives, then *associated*:

- at most ``max_pending`` pending connections; one more closes the oldest pending one (a
  real peer sends its A-ASSOCIATE-RQ within milliseconds, so only idlers are ever oldest);
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

from pynetdicom.transport import ThreadedAssociationServer

from cdss_node.logs import get_logger

log = get_logger(__name__)

REJECT_LOCAL_LIMIT = (0x02, 0x03, 0x02)


class ConnectionGuard:
    """Counts from the AE's live association threads, so nothing can leak: pynetdicom does
    not report every end (an A-ABORT from the peer fires no EVT_CONN_CLOSE)."""

    def __init__(self, max_associations: int, max_pending: int):
        self.max_associations = max_associations
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self.evicted = 0

    def opened(self, assoc) -> None:
        """A connection opened; past ``max_pending`` the oldest pending one is closed."""
        assoc.cdss_opened = time.monotonic()
        with self._lock:
            pending = self._pending(assoc.ae)
            oldest = min(pending, key=_opened) if len(pending) > self.max_pending else None
            if oldest is not None:
                oldest.cdss_evicted = True
                self.evicted += 1
        if oldest is not None:
            log.warning("connection_evicted", reason="too many connections without an "
                        "association", max_pending_connections=self.max_pending,
                        peer=getattr(oldest.requestor, "address", None))
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
            return len(self._pending(ae)), len(self._associated(ae))

    @staticmethod
    def _pending(ae) -> list:
        return [a for a in ae.active_associations if a.is_acceptor
                and a.requestor.primitive is None and not getattr(a, "cdss_evicted", False)]

    @staticmethod
    def _associated(ae) -> list:
        return [a for a in ae.active_associations if getattr(a, "cdss_admitted", False)
                and not (a.is_released or a.is_aborted)]


def _opened(assoc) -> float:
    return getattr(assoc, "cdss_opened", 0.0)


def close_transport(assoc) -> None:
    """End a connection from another thread: its DUL reads the end and closes as usual."""
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    try:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed
        pass
    wake_acceptor(assoc)


def wake_acceptor(assoc) -> None:
    """An acceptor waits up to its ACSE timeout (30 s) for an A-ASSOCIATE-RQ, even after
    its connection ended; told ``None`` it stops at once, as on that timeout, and its thread
    and connection slot are free."""
    if assoc.is_acceptor and not assoc.is_established and assoc.requestor.primitive is None:
        assoc.dul.to_user_queue.put(None)


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's server, with the TLS handshake moved off the accepting thread."""

    handshake_timeout_s = 10.0
    max_handshakes = 64

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._handshakes = threading.BoundedSemaphore(self.max_handshakes)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        return self.socket.accept()

    def process_request_thread(self, request, client_address) -> None:
        if self.ssl_context is not None:
            request = self._handshake(request, client_address)
            if request is None:
                return
        super().process_request_thread(request, client_address)

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


def start_server(ae, address: tuple[str, int], evt_handlers: list,
                 ssl_context: ssl.SSLContext | None) -> GuardedServer:
    """``ae.start_server(block=False)`` with a ``GuardedServer``."""
    server = ae.make_server(address, ssl_context=ssl_context, evt_handlers=evt_handlers,
                            server_class=GuardedServer)
    thread = threading.Thread(target=server.serve_forever, name="CdssAcceptor", daemon=True)
    thread.start()
    ae._servers.append(server)
    return server
