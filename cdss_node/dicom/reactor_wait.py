"""Wake pynetdicom's reactor threads when their work arrives, not at their next poll.

Each association has two threads that poll: the association reactor naps 1 ms before it looks
for a decoded DIMSE message, and the DUL reactor naps (``transport.DUL_POLL_S``) before it
looks for a PDU to send or to read. A C-STORE passes both, once as a request and once as a
response, so each instance waited about a millisecond for naps to end: a fifth of its time.

The naps are calls of ``time.sleep`` in those two modules. ``apply`` gives each module a
stand-in for ``time`` whose ``sleep``, when called by that module's reactor thread for its
nap, waits on the queue the thread is about to look at, and so returns as soon as something
is put there; every other call is ``time.sleep`` itself. The association reactor waits on its
DIMSE message queue; the DUL reactor on the queue of primitives to send (a PDU arriving from
the peer is still found at the end of the nap).
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable

from pynetdicom import association, dul

ASSOCIATION_NAP_S = 0.001  # the association reactor's hard-coded nap


class QueueWaitClock:
    """Stands in for the ``time`` module; see the module's docstring."""

    def __init__(self, queue_of: Callable[[threading.Thread, float], queue.Queue | None]):
        self._queue_of = queue_of

    def __getattr__(self, name: str):
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        waiting_on = self._queue_of(threading.current_thread(), seconds)
        if waiting_on is None:
            time.sleep(seconds)
            return
        with waiting_on.not_empty:
            if not waiting_on.queue:
                waiting_on.not_empty.wait(seconds)


def association_queue(thread: threading.Thread, seconds: float) -> queue.Queue | None:
    if isinstance(thread, association.Association) and seconds == ASSOCIATION_NAP_S:
        return thread.dimse.msg_queue
    return None


def dul_queue(thread: threading.Thread, seconds: float) -> queue.Queue | None:
    if isinstance(thread, dul.DULServiceProvider) and seconds == thread._run_loop_delay:
        return thread.to_provider_queue
    return None


def apply() -> None:
    association.time = QueueWaitClock(association_queue)
    dul.time = QueueWaitClock(dul_queue)


def restore() -> None:
    association.time = time
    dul.time = time
