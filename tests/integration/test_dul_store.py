"""C-STORE served on the DUL thread (``dul_store``) answers byte for byte as pynetdicom's own
path does, for the message layouts a peer may choose and for refusals, and hands an
association to pynetdicom when something else comes."""

from __future__ import annotations

import struct
import threading
from pathlib import Path

import pydicom
import pytest
from pynetdicom.dsutils import encode

from cdss_node.dicom import dul_store
from cdss_node.dicom.receiver import Receiver
from cdss_node.node import Node
from tests.conftest import node_config, write_series
from tests.integration.nodeproc import wait_until
from tests.integration.rawpeer import (
    CT_IMAGE_STORAGE, RELEASE_RQ, VERIFICATION, RawPeer, command, pdu, store_command)

pytestmark = pytest.mark.integration


def pdvs(*items: tuple[int, int, bytes]) -> bytes:
    """One P-DATA-TF holding each (context ID, control header, fragment) as a PDV."""
    return pdu(0x04, b"".join(struct.pack(">LBB", len(data) + 2, cid, control) + data
                              for cid, control, data in items))


def echo_command(message_id: int) -> bytes:
    uid = VERIFICATION.encode() + b"\x00" * (len(VERIFICATION) % 2)
    return command([(0x0002, uid), (0x0100, b"\x30\x00"),
                    (0x0110, struct.pack("<H", message_id)), (0x0800, b"\x01\x01")])


@pytest.fixture(scope="module")
def instances(tmp_path_factory) -> list[tuple[str, bytes]]:
    """(SOP Instance UID, dataset in Implicit VR LE) of six CT images, the fourth cut short."""
    series = write_series(tmp_path_factory.mktemp("dul"), rows=64, slices=8, seed=11)
    found = []
    for path in series.files[:6]:
        ds = pydicom.dcmread(path)
        found.append((ds.SOPInstanceUID, encode(ds, True, True)))
    uid, data = found[3]
    found[3] = (uid, data[:-1000])            # truncated Pixel Data: refused with a comment
    return found


def conversation(port: int, instances, script) -> list[bytes]:
    """Every PDU the node sends back, raw, for one association that sends ``script`` (PDUs
    built from ``instances``) and then releases; ``answers`` PDUs are read before the release."""
    peer = RawPeer(port)
    assert peer.associate(abstract_syntaxes=(CT_IMAGE_STORAGE, VERIFICATION)) == 0x02
    sent, answers = script(instances)
    for data in sent:
        peer.send(data)
    received = [peer.read_pdu() for _ in range(answers)]
    peer.send(RELEASE_RQ)
    received.append(peer.read_pdu())
    peer.close()
    return [bytes([kind]) + body if kind else b"" for kind, body in
            (r or (0, b"") for r in received)]


def each_layout(instances):
    """Layouts pynetdicom's own path takes too: a command in one PDU and its dataset in
    three; a command in two fragments in two PDUs; command and dataset in one PDU; a refusal;
    a C-ECHO in two PDUs, handed to pynetdicom whole; a store after it, on pynetdicom's path."""
    (a, da), (b, db), (c, dc), (d, dd), (e, de), (f, df) = instances
    third, b_command = len(da) // 3, store_command(CT_IMAGE_STORAGE, b, 2)
    return [
        pdvs((1, 3, store_command(CT_IMAGE_STORAGE, a, 1))),
        pdvs((1, 0, da[:third])), pdvs((1, 0, da[third:2 * third])),
        pdvs((1, 2, da[2 * third:])),
        pdvs((1, 1, b_command[:20])), pdvs((1, 3, b_command[20:])), pdvs((1, 2, db)),
        pdvs((1, 3, store_command(CT_IMAGE_STORAGE, c, 3)), (1, 2, dc)),
        pdvs((1, 3, store_command(CT_IMAGE_STORAGE, d, 4)), (1, 2, dd)),
        pdvs((1, 3, store_command(CT_IMAGE_STORAGE, e, 5)), (1, 2, de)),
        pdvs((3, 1, echo_command(6)[:10])), pdvs((3, 3, echo_command(6)[10:])),
        pdvs((1, 3, store_command(CT_IMAGE_STORAGE, f, 7)), (1, 2, df)),
    ], 7


def two_messages_in_one_pdu(instances):
    """The end of one message and the whole of the next in one P-DATA-TF (PS3.8 9.3.5 lets
    a PDU carry several PDVs); then a C-ECHO in the PDU of a store's dataset."""
    (a, da), (b, db), (c, dc) = instances[:3]
    return [
        pdvs((1, 3, store_command(CT_IMAGE_STORAGE, a, 1))),
        pdvs((1, 2, da), (1, 3, store_command(CT_IMAGE_STORAGE, b, 2)), (1, 2, db)),
        pdvs((1, 3, store_command(CT_IMAGE_STORAGE, c, 3)), (1, 2, dc), (3, 3, echo_command(4))),
    ], 4


def stored(node: Node) -> dict[str, bytes]:
    rows = node.index.query("SELECT sop_instance_uid, path FROM instances")
    return {r[0]: Path(node.spool.root / r[1]).read_bytes() for r in rows}


@pytest.fixture
def run(tmp_path, monkeypatch, instances):
    """(answers, stored files, the kind of thread that ran each C-STORE handler)."""
    handled_on = []
    plain_handler = Receiver._on_store

    def on_store(self, event):
        handled_on.append(type(threading.current_thread()).__name__)
        return plain_handler(self, event)

    monkeypatch.setattr(Receiver, "_on_store", on_store)

    def conversation_with(served_on_dul_thread: bool, script=each_layout):
        monkeypatch.setattr(dul_store, "ENABLED", served_on_dul_thread)
        handled_on.clear()
        node = Node(node_config(tmp_path / f"var-{served_on_dul_thread}"))
        node.start()
        try:
            answers = conversation(node.config.node.port, instances, script)
            node.receiver.stop()
            return answers, stored(node), list(handled_on)
        finally:
            node.stop()
    return conversation_with


def status(answer: bytes) -> int:
    return struct.unpack_from("<H", answer, answer.index(b"\x00\x00\x00\x09") + 8)[0]


def test_the_same_answers_and_files_as_pynetdicoms_own_path(run, instances):
    fast, fast_files, fast_threads = run(True)
    slow, slow_files, slow_threads = run(False)
    dul, association = "DULServiceProvider", "Association"
    assert fast_threads == [dul] * 5 + [association]     # the store after the C-ECHO
    assert slow_threads == [association] * 6
    assert fast == slow
    assert [status(a) for a in fast[:-1]] == [0, 0, 0, 0xC000, 0, 0, 0]
    assert b"dataset is truncated" in fast[3]  # the Error Comment
    assert fast[-1][0] == 0x06                 # A-RELEASE-RP
    assert fast_files.keys() == slow_files.keys() == {u for i, (u, _) in enumerate(instances)
                                                      if i != 3}
    assert all(fast_files[u] == slow_files[u] for u in fast_files)


def test_every_message_of_a_pdu_is_answered(run, instances):
    """Here the DUL thread does better than pynetdicom, which ends the P-DATA-TF at the first
    complete message and loses the PDVs after it (its association then hangs or aborts)."""
    fast, files, threads = run(True, two_messages_in_one_pdu)
    assert threads == ["DULServiceProvider"] * 3
    assert [status(a) for a in fast[:-1]] == [0, 0, 0, 0]
    assert b"\x30\x80" in fast[3]              # C-ECHO-RSP
    assert fast[-1][0] == 0x06
    assert files.keys() == {u for u, _ in instances[:3]}


@pytest.fixture
def node(tmp_path):
    running = Node(node_config(tmp_path / "var"))
    running.start()
    yield running
    running.stop()


def associated(node: Node) -> RawPeer:
    peer = RawPeer(node.config.node.port)
    assert peer.associate() == 0x02
    return peer


def test_a_command_inside_a_dataset_ends_the_association_and_leaves_no_file(node, instances):
    (uid, data), (other, _) = instances[0], instances[1]
    peer = associated(node)
    peer.send(pdvs((1, 3, store_command(CT_IMAGE_STORAGE, uid, 1)), (1, 0, data[:5000])))
    peer.send(pdvs((1, 3, store_command(CT_IMAGE_STORAGE, other, 2))))
    answer = peer.read_pdu()
    assert answer is None or answer[0] == 0x07          # A-ABORT, or closed
    assert not node.index.query("SELECT 1 FROM instances")
    assert not list(node.spool.tmp.iterdir())
    again = associated(node)                            # and the node serves on
    again.send(pdvs((1, 3, store_command(CT_IMAGE_STORAGE, uid, 1)), (1, 2, data)))
    answer = again.read_pdu()
    assert answer[0] == 0x04 and answer[1][5] == 0x03
    again.send(RELEASE_RQ)
    assert again.read_pdu()[0] == 0x06


def test_a_command_inside_a_spilled_dataset_leaves_no_spill_file(node, instances):
    """A dataset over the 4 MiB kept in memory goes to a spill file as it arrives; an abort
    in the middle of it removes that file."""
    peer = associated(node)
    peer.send(pdvs((1, 3, store_command(CT_IMAGE_STORAGE, instances[0][0], 1))))
    for _ in range(5):                                   # 5 MiB of dataset
        peer.send(pdvs((1, 0, bytes(1024 * 1024 - 64))))
    peer.send(pdvs((1, 3, store_command(CT_IMAGE_STORAGE, instances[1][0], 2))))
    answer = peer.read_pdu()
    assert answer is None or answer[0] == 0x07
    wait_until(lambda: not list(node.spool.tmp.iterdir()), timeout=10,
               what="the spill file removed")
    assert not node.index.query("SELECT 1 FROM instances")


@pytest.mark.parametrize("served_on_dul_thread", [True, False])
def test_a_store_after_the_release_request_is_not_served(node, instances, monkeypatch,
                                                         served_on_dul_thread):
    """Once the peer asked to release, a P-DATA-TF is pynetdicom's state machine's to answer
    (an abort or nothing), on either path: no store, no C-STORE-RSP."""
    monkeypatch.setattr(dul_store, "ENABLED", served_on_dul_thread)
    (uid, data), (late, late_data) = instances[0], instances[1]
    peer = associated(node)
    peer.send(pdvs((1, 3, store_command(CT_IMAGE_STORAGE, uid, 1)), (1, 2, data)))
    first = peer.read_pdu()
    assert first[0] == 0x04 and status(bytes([4]) + first[1]) == 0
    peer.send(RELEASE_RQ + pdvs((1, 3, store_command(CT_IMAGE_STORAGE, late, 2)),
                                (1, 2, late_data)))
    kinds = []
    while (answer := peer.read_pdu()) is not None:
        kinds.append(answer[0])
    assert 0x04 not in kinds and kinds[:1] in ([0x06], [0x07], [])
    rows = node.index.query("SELECT sop_instance_uid FROM instances")
    assert [r[0] for r in rows] == [uid]


def test_a_handler_slower_than_the_network_timeout_is_answered_not_aborted(
        tmp_path, instances, monkeypatch):
    """On pynetdicom's path the association thread runs the handler and does not look at
    its idle timer meanwhile; on the DUL thread's path the timer is held while it runs."""
    import time
    from dataclasses import replace

    config = node_config(tmp_path / "var")
    config = replace(config, node=replace(config.node, network_timeout_s=1.0))
    plain_handler = Receiver._on_store

    def slow(self, event):
        time.sleep(2.5)
        return plain_handler(self, event)

    monkeypatch.setattr(Receiver, "_on_store", slow)
    running = Node(config)
    running.start()
    try:
        (uid, data) = instances[0]
        peer = associated(running)
        peer.send(pdvs((1, 3, store_command(CT_IMAGE_STORAGE, uid, 1)), (1, 2, data)))
        answer = peer.read_pdu()
        assert answer is not None and answer[0] == 0x04
        assert status(bytes([4]) + answer[1]) == 0
    finally:
        running.stop()
