import queue
import socket
import time
import threading

import pytest

from cdss_node.dicom import reactor_wait, transport


class FakeAssociationSocket:
    def __init__(self, sock):
        self.socket = sock


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_recv_into_buffer_reads_exactly_what_was_asked_across_many_sends(pair):
    a, b = pair
    payload = bytes(range(256)) * 4096  # 1 MiB
    sender = threading.Thread(target=lambda: [b.sendall(payload[i:i + 7000])
                                              for i in range(0, len(payload), 7000)])
    sender.start()
    first = transport.recv_into_buffer(FakeAssociationSocket(a), 6)
    rest = transport.recv_into_buffer(FakeAssociationSocket(a), len(payload) - 6)
    sender.join()
    assert bytes(first + rest) == payload


def test_recv_into_buffer_returns_what_it_had_when_the_peer_closes(pair):
    a, b = pair
    b.sendall(b"abc")
    b.close()
    assert transport.recv_into_buffer(FakeAssociationSocket(a), 10) == bytearray(b"abc")


def test_apply_patches_the_checked_release_only(monkeypatch):
    import pynetdicom
    from pynetdicom.transport import AssociationSocket

    original = AssociationSocket.recv
    monkeypatch.setattr(AssociationSocket, "recv", original)
    monkeypatch.setattr(pynetdicom, "__version__", "9.9.9")
    assert transport.apply() is False and AssociationSocket.recv is original
    monkeypatch.setattr(pynetdicom, "__version__", "3.0.4")
    assert transport.apply() is True
    assert AssociationSocket.recv is transport.recv_into_buffer


def test_malloc_is_told_to_keep_large_buffers_on_the_heap():
    assert transport.keep_buffers_on_heap() is True  # glibc, as on every machine we run on


class _Reactor(threading.Thread):
    """Stands for a pynetdicom reactor thread that naps on a queue."""

    def __init__(self, clock, nap_s):
        super().__init__()
        self.clock, self.nap_s, self.waited = clock, nap_s, None

    def run(self):
        started = time.monotonic()
        self.clock.sleep(self.nap_s)
        self.waited = time.monotonic() - started


def test_reactor_nap_ends_when_its_queue_gets_work():
    work = queue.Queue()
    clock = reactor_wait.QueueWaitClock(
        lambda thread, seconds: work if isinstance(thread, _Reactor) else None)
    reactor = _Reactor(clock, nap_s=5.0)
    reactor.start()
    time.sleep(0.05)
    work.put("message")
    reactor.join(2.0)
    assert not reactor.is_alive() and reactor.waited < 1.0


def test_other_threads_and_naps_sleep_as_time_sleep_does():
    clock = reactor_wait.QueueWaitClock(lambda thread, seconds: None)
    started = time.monotonic()
    clock.sleep(0.05)
    assert time.monotonic() - started >= 0.05
    assert clock.monotonic is time.monotonic  # the rest of the time module passes through
    assert reactor_wait.association_queue(threading.current_thread(), 0.001) is None
