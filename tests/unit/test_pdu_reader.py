"""PDUs are read within their type's length and a deadline; memory follows the data."""

from __future__ import annotations

import threading
import time
import tracemalloc

import pytest

from cdss_node.dicom import pdu_reader, wire

LIMITS = wire.WireLimits(max_pdu_bytes=1 << 20, pdu_timeout_s=1.0, max_dataset_bytes=1 << 30,
                         spill_dir=None)


def p_data(payload: bytes) -> bytes:
    item = len(payload).to_bytes(4, "big") + payload
    return b"\x04\x00" + len(item).to_bytes(4, "big") + item


def test_a_pdu_sent_in_many_pieces_is_read_whole(pair):
    a, b = pair
    raw = p_data(b"\x01\x02" + bytes(range(256)) * 3000)    # 768 KiB: the buffer grows twice
    sender = threading.Thread(target=lambda: [b.sendall(raw[i:i + 7000])
                                              for i in range(0, len(raw), 7000)])
    sender.start()
    assert bytes(pdu_reader.receive_pdu(a, LIMITS)) == raw
    sender.join()


@pytest.mark.parametrize("header, why", [
    (b"\x04\x00\xff\xff\xff\xf0", "claims 4294967280 bytes"),   # P-DATA over max_pdu_bytes
    (b"\x01\x00\x00\x10\x00\x00", "claims 1048576 bytes"),      # A-ASSOCIATE-RQ over 512 KiB
    (b"\x07\x00\x00\x00\x10\x00", "claims 4096 bytes"),         # an A-ABORT of 4 KiB
])
def test_a_pdu_longer_than_its_type_allows_is_refused_unread(pair, header, why):
    a, b = pair
    b.sendall(header)
    tracemalloc.start()
    with pytest.raises(pdu_reader.PduTooLong, match=why):
        pdu_reader.receive_pdu(a, LIMITS)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 * 1024


def test_memory_follows_the_data_not_the_claimed_length(pair):
    """A P-DATA header that claims 1 MiB, followed by 10 bytes and an end: the buffer that
    was grown for them is small."""
    a, b = pair
    b.sendall(b"\x04\x00" + (1 << 20).to_bytes(4, "big") + b"x" * 10)
    b.close()
    tracemalloc.start()
    with pytest.raises(ConnectionError, match="16 of 1048582"):
        pdu_reader.receive_pdu(a, LIMITS)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 200 * 1024


@pytest.mark.parametrize("sent", [b"\x04\x00\x00", b"\x04\x00\x00\x00\x00\x20" + b"x" * 10])
def test_a_pdu_that_stalls_midway_times_out(pair, sent):
    a, b = pair
    b.sendall(sent)
    started = time.monotonic()
    with pytest.raises(pdu_reader.PduTimeout):
        pdu_reader.receive_pdu(a, LIMITS)
    assert 0.9 < time.monotonic() - started < 3.0
    assert a.gettimeout() is None          # the socket's own timeout is put back


def test_a_slow_sender_cannot_stretch_one_pdu_past_the_deadline(pair):
    """One byte every 0.2 s keeps every single read alive; the PDU's deadline still ends it."""
    a, b = pair
    stop = threading.Event()

    def trickle():
        b.sendall(b"\x04\x00\x00\x00\x00\x40")
        while not stop.wait(0.2):
            try:
                b.sendall(b"x")
            except OSError:
                return

    sender = threading.Thread(target=trickle)
    sender.start()
    started = time.monotonic()
    try:
        with pytest.raises(pdu_reader.PduTimeout):
            pdu_reader.receive_pdu(a, LIMITS)
    finally:
        stop.set()
        sender.join()
    assert time.monotonic() - started < 3.0


def test_an_end_between_pdus_is_none_and_an_unknown_type_is_refused(pair):
    a, b = pair
    b.sendall(b"\x09\x00\x00\x00\x00\x00")
    with pytest.raises(pdu_reader.UnknownPdu):
        pdu_reader.receive_pdu(a, LIMITS)
    b.close()
    assert pdu_reader.receive_pdu(a, LIMITS) is None


def test_the_rest_of_a_message_is_read_on_only_if_it_is_here_and_nothing_else_waits():
    import queue
    import socket
    from types import SimpleNamespace

    from cdss_node.dicom import dul_store
    from cdss_node.dicom.pdu_reader import _rest_of_message_waiting

    ours, peer = socket.socketpair()
    server = dul_store.DulStore(limits=None)
    dul = SimpleNamespace(cdss_dul_store=server, _kill_thread=False,
                          to_provider_queue=queue.Queue(), event_queue=queue.Queue())
    try:
        peer.sendall(b"\x04")
        assert not _rest_of_message_waiting(dul, ours)        # no message begun
        server.message = dul_store.StoreMessage(context_id=1)
        assert _rest_of_message_waiting(dul, ours)            # begun, and bytes are here
        dul.to_provider_queue.put("an A-ABORT to send")
        assert not _rest_of_message_waiting(dul, ours)        # the reactor's turn first
        dul.to_provider_queue.get()
        dul.event_queue.put("Evt18")
        assert not _rest_of_message_waiting(dul, ours)
        dul.event_queue.get()
        ours.recv(1)
        assert not _rest_of_message_waiting(dul, ours)        # nothing here: never waits
        server.handed_over = True
        peer.sendall(b"\x04")
        assert not _rest_of_message_waiting(dul, ours)        # pynetdicom's association
    finally:
        ours.close()
        peer.close()
