"""C-STORE served on the DUL thread (``dul_store``) answers byte for byte as pynetdicom's own
path does, for the message layouts a peer may choose and for refusals, and hands an
association to pynetdicom when something else comes."""

from __future__ import annotations

import struct
from pathlib import Path

import pydicom
import pytest
from pynetdicom.dsutils import encode

from cdss_node.dicom import dul_store
from cdss_node.node import Node
from tests.conftest import node_config, write_series
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
    a C-ECHO, after which the association is pynetdicom's; a store after it."""
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
        pdvs((3, 3, echo_command(6))),
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
    def conversation_with(served_on_dul_thread: bool, script=each_layout):
        monkeypatch.setattr(dul_store, "ENABLED", served_on_dul_thread)
        node = Node(node_config(tmp_path / f"var-{served_on_dul_thread}"))
        node.start()
        try:
            answers = conversation(node.config.node.port, instances, script)
            node.receiver.stop()
            return answers, stored(node), node
        finally:
            node.stop()
    return conversation_with


def status(answer: bytes) -> int:
    return struct.unpack_from("<H", answer, answer.index(b"\x00\x00\x00\x09") + 8)[0]


def test_the_same_answers_and_files_as_pynetdicoms_own_path(run, instances):
    fast, fast_files, _ = run(True)
    slow, slow_files, _ = run(False)
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
    fast, files, _ = run(True, two_messages_in_one_pdu)
    assert [status(a) for a in fast[:-1]] == [0, 0, 0, 0]
    assert b"\x30\x80" in fast[3]              # C-ECHO-RSP
    assert fast[-1][0] == 0x06
    assert files.keys() == {u for u, _ in instances[:3]}


def test_a_command_inside_a_dataset_ends_the_association_and_leaves_no_file(tmp_path,
                                                                          instances):
    node = Node(node_config(tmp_path / "var"))
    node.start()
    try:
        (uid, data), (other, _) = instances[0], instances[1]
        peer = RawPeer(node.config.node.port)
        assert peer.associate() == 0x02
        peer.send(pdvs((1, 3, store_command(CT_IMAGE_STORAGE, uid, 1)), (1, 0, data[:5000])))
        peer.send(pdvs((1, 3, store_command(CT_IMAGE_STORAGE, other, 2))))
        answer = peer.read_pdu()
        assert answer is None or answer[0] == 0x07          # A-ABORT, or closed
        assert not node.index.query("SELECT 1 FROM instances")
        assert not list(node.spool.tmp.iterdir())
        again = RawPeer(node.config.node.port)              # and the node serves on
        assert again.associate() == 0x02
        again.send(pdvs((1, 3, store_command(CT_IMAGE_STORAGE, uid, 1)), (1, 2, data)))
        answer = again.read_pdu()
        assert answer[0] == 0x04 and answer[1][5] == 0x03
        again.send(RELEASE_RQ)
        assert again.read_pdu()[0] == 0x06
    finally:
        node.stop()
