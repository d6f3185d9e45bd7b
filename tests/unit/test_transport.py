import socket
import threading

import pytest

from cdss_node.dicom import transport


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
