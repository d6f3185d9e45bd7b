"""Wake pynetdicom's reactor threads when their work arrives, not at their next poll.

Each association has two threads that poll: the association reactor naps 1 ms before it looks
for a decoded DIMSE message, and the DUL reactor naps (``transport.DUL_POLL_S``) before it
looks for a PDU to send or to read. A C-STORE passes both several times (the request arrives
in several PDUs, the response goes back), so each instance waited a millisecond or more for
naps to end: a fifth of its time.

The naps are calls of ``time.sleep`` in those two modules. ``apply`` gives each module a
stand-in for ``time`` whose ``sleep``, when called by that module's reactor thread for its
nap, waits for the work the thread is about to look for, and so returns as soon as it is
there; every other call is ``time.sleep`` itself:

- the association reactor waits on its DIMSE message queue;
- the DUL reactor waits (``select``) on its socket and on a wake-up socket that is written to
  whenever a primitive is queued for it to send (``watch_connection`` sets this up when the
  connection opens, ``unwatch_connection`` closes it).
"""

from __future__ import annotations

import queue
import select
import socket
import ssl
import threading
import time
from typing import Callable

from pynetdicom import association, dimse, dul

from cdss_node.dicom import dul_store, wire

ASSOCIATION_NAP_S = 0.001  # the association reactor's hard-coded nap
# Where the DUL thread serves the requests, the association thread still looks, after each nap,
# at its idle timer and whether the DUL thread lives; both are checks of seconds.
SERVED_NAP_S = 0.02


class QueueWaitClock:
    """Stands in for the ``time`` module: ``sleep`` in a reactor thread, for its nap, waits
    with ``wait_for(thread, seconds)``; ``wait_for`` returns False for any other call."""

    def __init__(self, wait_for: Callable[[threading.Thread, float], bool]):
        self._wait_for = wait_for

    def __getattr__(self, name: str):
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        if not self._wait_for(threading.current_thread(), seconds):
            time.sleep(seconds)


def wait_on_queue(waiting_on: queue.Queue, seconds: float) -> None:
    """Until something is put on the queue, at most ``seconds``."""
    with waiting_on.not_empty:
        if not waiting_on.queue:
            waiting_on.not_empty.wait(seconds)


def association_nap(thread: threading.Thread, seconds: float) -> bool:
    """The association reactor's nap: until a DIMSE message is queued for it; where the DUL
    thread serves the messages (``dul_store``), until the DUL queues it a release or abort
    indication, the only work left to it, at most ``SERVED_NAP_S``."""
    if not (isinstance(thread, association.Association) and seconds == ASSOCIATION_NAP_S
            and _tuned(thread.ae)):
        return False
    if dul_store.serves_requests(thread.dul) and not thread.dul.to_user_queue.queue:
        wait_on_queue(thread.dul.to_user_queue, SERVED_NAP_S)
    else:
        wait_on_queue(thread.dimse.msg_queue, seconds)
    return True


def dul_nap(thread: threading.Thread, seconds: float) -> bool:
    """The DUL reactor's nap: until its socket is readable or a primitive is queued."""
    if not (isinstance(thread, dul.DULServiceProvider) and seconds == thread._run_loop_delay
            and _tuned(thread.assoc.ae)):
        return False
    wake = getattr(thread, "_cdss_wake", None)
    raw = getattr(thread.socket, "socket", None) if thread.socket else None
    if wake is None or raw is None:
        wait_on_queue(thread.to_provider_queue, seconds)
        return True
    if thread.to_provider_queue.queue or (isinstance(raw, ssl.SSLSocket) and raw.pending()):
        return True
    try:
        readable, _, _ = select.select([raw, wake[0]], [], [], seconds)
    except (OSError, ValueError):  # the connection closed meanwhile: the reactor will see it
        return True
    if wake[0] in readable:
        _drain(wake[0])
    return True


def _tuned(ae) -> bool:
    """An AE of the node's (the receiver's, or its sender's): naps shortened for it only."""
    return wire.limits_of(ae) is not None or getattr(ae, "cdss_never_serves", False)


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except (BlockingIOError, OSError):
        pass


def watch_connection(provider: dul.DULServiceProvider) -> None:
    """Give the DUL a wake-up socket, written to by every put on its queue of primitives."""
    wake = socket.socketpair()
    for end in wake:
        end.setblocking(False)
    to_send = provider.to_provider_queue
    plain_put = to_send.put

    def put(item, block: bool = True, timeout: float | None = None) -> None:
        plain_put(item, block, timeout)
        try:
            wake[1].send(b"\x00")
        except OSError:  # full (the DUL is behind anyway) or closed (the connection ended)
            pass

    to_send.put = put  # type: ignore[method-assign]
    provider._cdss_wake = wake


def unwatch_connection(provider: dul.DULServiceProvider) -> None:
    wake = getattr(provider, "_cdss_wake", None)
    if wake is not None:
        provider._cdss_wake = None
        for end in wake:
            end.close()


_original_get_msg = dimse.DIMSEServiceProvider.get_msg


def get_msg(self: dimse.DIMSEServiceProvider, block: bool = False):
    """pynetdicom's ``get_msg``, except that a requestor's own reactor thread takes nothing.

    A requestor of the node's sender (``transport.never_serves``) waits for each response in
    ``send_c_store``, and pauses its reactor meanwhile; but the pause can come late (the
    reactor's "paused" flag still holds from the previous message), and a reactor that then
    takes the response loses it ("Received unexpected C-STORE service message") and the send
    times out. Seen once in
    80 sends with a fast peer on a loaded machine. A requestor of this node never serves
    requests, so its reactor has nothing to take. Other requestors (a C-GET SCU receives
    C-STOREs on its own association) keep pynetdicom's behaviour.
    """
    assoc = self.assoc
    if (assoc.is_requestor and threading.current_thread() is assoc
            and getattr(assoc.ae, "cdss_never_serves", False)):
        return None, None
    return _original_get_msg(self, block)


def apply() -> None:
    association.time = QueueWaitClock(association_nap)
    dul.time = QueueWaitClock(dul_nap)
    dimse.DIMSEServiceProvider.get_msg = get_msg


def restore() -> None:
    association.time = time
    dul.time = time
    dimse.DIMSEServiceProvider.get_msg = _original_get_msg
