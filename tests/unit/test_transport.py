import queue
import time
import threading

import pytest

from cdss_node.dicom import reactor_wait, transport


class FakeAssociationSocket:
    def __init__(self, sock):
        self.socket = sock


def test_apply_patches_the_checked_release_only(monkeypatch):
    import pynetdicom
    from pynetdicom.dul import DULServiceProvider

    from cdss_node.dicom import pdu_reader

    transport.restore()
    original = DULServiceProvider._read_pdu_data
    monkeypatch.setattr(pynetdicom, "__version__", "3.0.5")
    try:
        assert transport.apply() is False and DULServiceProvider._read_pdu_data is original
        monkeypatch.setattr(pynetdicom, "__version__", "3.0.4")
        assert transport.apply() is True
        assert DULServiceProvider._read_pdu_data is pdu_reader.read_pdu
    finally:
        transport.restore()
    assert DULServiceProvider._read_pdu_data is original and not transport.applied()


def test_a_pynetdicom_without_the_private_names_is_left_as_it_is(monkeypatch):
    """The patches import pynetdicom names that are not its API; where they are gone, apply
    leaves pynetdicom alone instead of failing the node's start."""
    import sys

    import pynetdicom.dimse_messages

    import cdss_node.dicom

    monkeypatch.delattr(pynetdicom.dimse_messages, "_COMMAND_SET_KEYWORDS")
    for name in ("dimse_fast", "pdu_reader", "dataset_sink", "services"):  # imported anew
        monkeypatch.delitem(sys.modules, f"cdss_node.dicom.{name}", raising=False)
        monkeypatch.delattr(cdss_node.dicom, name, raising=False)
    transport.restore()
    assert transport.patches() is None
    assert transport.apply() is False and not transport.applied()


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

    def nap(thread, seconds):
        if not isinstance(thread, _Reactor):
            return False
        reactor_wait.wait_on_queue(work, seconds)
        return True

    clock = reactor_wait.QueueWaitClock(nap)
    reactor = _Reactor(clock, nap_s=5.0)
    reactor.start()
    time.sleep(0.05)
    work.put("message")
    reactor.join(2.0)
    assert not reactor.is_alive() and reactor.waited < 1.0


def test_other_threads_and_naps_sleep_as_time_sleep_does():
    clock = reactor_wait.QueueWaitClock(lambda thread, seconds: False)
    started = time.monotonic()
    clock.sleep(0.05)
    assert time.monotonic() - started >= 0.05
    assert clock.monotonic is time.monotonic  # the rest of the time module passes through
    assert reactor_wait.association_nap(threading.current_thread(), 0.001) is False
    assert reactor_wait.dul_nap(threading.current_thread(), 0.0005) is False


def _provider(sock):
    from pynetdicom.dul import DULServiceProvider

    from cdss_node.dicom import wire

    provider = DULServiceProvider.__new__(DULServiceProvider)
    ae = type("AE", (), {})()
    wire.attach(ae, wire.WireLimits(16384, 5.0, 2**20, None))
    provider._assoc = type("Assoc", (), {"ae": ae})()
    provider.to_provider_queue, provider._run_loop_delay = queue.Queue(), 5.0
    provider.socket = FakeAssociationSocket(sock)
    reactor_wait.watch_connection(provider)
    return provider


@pytest.mark.parametrize("wake_by", ["data from the peer", "a primitive to send"])
def test_dul_nap_ends_on_data_or_on_a_queued_primitive(pair, wake_by):
    a, b = pair
    provider = _provider(a)
    nap = threading.Thread(target=lambda: setattr(provider, "waited", _timed_nap(provider)))
    nap.start()
    time.sleep(0.05)
    if wake_by == "data from the peer":
        b.sendall(b"\x04")
    else:
        provider.to_provider_queue.put("P-DATA")
    nap.join(2.0)
    reactor_wait.unwatch_connection(provider)
    assert not nap.is_alive() and provider.waited < 1.0


def _timed_nap(provider) -> float:
    started = time.monotonic()
    assert reactor_wait.dul_nap(provider, 5.0)  # as the DUL's own thread calls it
    return time.monotonic() - started


def test_a_requestor_s_reactor_leaves_responses_to_the_sender():
    from pynetdicom.dimse import DIMSEServiceProvider

    reactor_wait.apply()
    provider = DIMSEServiceProvider.__new__(DIMSEServiceProvider)
    provider.msg_queue = queue.Queue()
    provider.msg_queue.put((1, "C-STORE-RSP"))
    seen = {}

    class RequestorThread(threading.Thread):
        is_requestor, dimse_timeout = True, 0.1
        ae = type("SenderAE", (), {"cdss_never_serves": True})()

        def run(self):
            seen["reactor"] = provider.get_msg(block=False)

    reactor = RequestorThread()
    provider._assoc = reactor
    reactor.start()
    reactor.join()
    assert seen["reactor"] == (None, None)              # the reactor takes nothing
    assert provider.get_msg(block=True) == (1, "C-STORE-RSP")  # send_c_store's thread does


def test_no_idle_timeout_while_the_dul_thread_runs_a_c_store_handler():
    from types import SimpleNamespace

    from cdss_node.dicom import dul_store

    expired = SimpleNamespace(expired=True)
    dul = SimpleNamespace(_idle_timer=expired)
    assert dul_store.idle_timer_expired(dul)                 # pynetdicom's answer
    dul.cdss_dul_store = dul_store.DulStore(limits=None)
    assert dul_store.idle_timer_expired(dul)
    dul.cdss_dul_store.serving = True
    assert not dul_store.idle_timer_expired(dul)             # the handler runs: not yet
