"""A hostile or broken peer cannot exhaust the node: a scripted raw-socket peer sends what no
DICOM toolkit would (PDUs that claim gigabytes, PDUs that stop midway, silent connections,
services the node does not offer, aborts), and the node stays bounded and keeps serving."""

from __future__ import annotations

import struct
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cdss_node.node import Node
from tests.conftest import LogRecorder, node_config
from tests.integration.dcmtk import echoscu, store_responses, storescu
from tests.integration.rawpeer import (
    ABORT, CT_IMAGE_STORAGE, RELEASE_RQ, RawPeer, command, p_data, store_command)

pytestmark = pytest.mark.integration

UNRECOGNIZED_OPERATION = 0x0211


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


@pytest.fixture
def hostile_node(tmp_path):
    config = node_config(tmp_path / "var")
    config = replace(config, node=replace(config.node, network_timeout_s=2.0,
                                          max_associations=2, max_pending_connections=4,
                                          max_dataset_mb=1))
    node = Node(config)
    node.start()
    yield node
    node.stop()


def port_of(node: Node) -> int:
    return node.config.node.port


def test_headers_claiming_gigabytes_allocate_nothing_and_end_their_connections(hostile_node):
    before = rss_bytes()
    peers = [RawPeer(port_of(hostile_node)).send(header) for header in (
        b"\x01\x00\x40\x00\x00\x00",           # an A-ASSOCIATE-RQ of 1 GiB
        b"\x04\x00\x40\x00\x00\x00",           # a P-DATA-TF of 1 GiB, before any association
        b"\x07\x00\x40\x00\x00\x00")]          # an A-ABORT of 1 GiB
    associated = RawPeer(port_of(hostile_node))
    assert associated.associate() == 0x02
    peers.append(associated.send(b"\x04\x00\xff\xff\xff\xf0"))   # 4 GiB once associated
    for peer in peers:
        assert peer.closed_within(5.0) is not None
    assert rss_bytes() - before < 64 * 1024 * 1024
    assert echoscu(port_of(hostile_node)).returncode == 0


@pytest.mark.parametrize("first", [p_data(1, 0x03, b"x" * 10), ABORT, RELEASE_RQ,
                                   b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"])
def test_a_connection_that_does_not_begin_with_an_associate_rq_is_aborted_at_the_gate(
        hostile_node, first):
    """Before pynetdicom builds its threads and state machine for a connection, the server
    looks at its first PDU header: anything but an A-ASSOCIATE-RQ gets an A-ABORT (source:
    service provider, reason: unrecognized PDU) and the connection is closed."""
    peer = RawPeer(port_of(hostile_node)).send(first)
    assert peer.read_pdu() == (0x07, b"\x00\x00\x02\x01")
    assert peer.read_pdu() is None
    assert hostile_node.index.query("SELECT COUNT(*) FROM associations")[0][0] == 0


@pytest.mark.parametrize("associated, sent", [
    (False, b"\x01\x00\x00"),                                  # half a PDU header
    (False, b"\x01\x00\x00\x00\x01\x00" + b"\x00" * 100),     # a tenth of an A-ASSOCIATE-RQ
    (True, p_data(1, 0x03, b"\x00" * 200)[:50]),             # a quarter of a P-DATA-TF
])
def test_a_connection_that_stops_inside_a_pdu_is_closed(hostile_node, associated, sent):
    peer = RawPeer(port_of(hostile_node))
    if associated:
        assert peer.associate() == 0x02
    waited = peer.send(sent).closed_within(8.0)
    assert waited is not None and waited < 5.0   # network_timeout_s is 2 s


def test_connections_without_an_association_cannot_lock_peers_out(hostile_node):
    """max_associations 2, max_pending_connections 4: ten silent connections and ten that
    sent three bytes leave an echoscu association free to come in; the oldest are closed."""
    idle = [RawPeer(port_of(hostile_node)) for _ in range(10)]
    idle += [RawPeer(port_of(hostile_node)).send(b"\x01\x00\x00") for _ in range(10)]
    time.sleep(0.5)
    result = echoscu(port_of(hostile_node))
    assert result.returncode == 0, result.stderr
    assert idle[0].closed_within(1.0) is not None        # closed: the oldest pending
    held = [RawPeer(port_of(hostile_node)) for _ in range(2)]
    assert [peer.associate() for peer in held] == [0x02, 0x02]
    third = RawPeer(port_of(hostile_node))
    assert third.associate() == 0x03                    # A-ASSOCIATE-RJ: local limit
    for peer in idle + held + [third]:
        peer.close()


def _response_command(peer: RawPeer) -> dict[int, bytes]:
    elements, data = {}, b""
    while True:
        answer = peer.read_pdu()
        assert answer is not None and answer[0] == 0x04, answer
        body = answer[1]
        control, data = body[5], data + body[6:]
        if control & 2:
            break
    offset = 0
    while offset < len(data):
        _, element, length = struct.unpack_from("<HHI", data, offset)
        elements[element] = data[offset + 8:offset + 8 + length]
        offset += 8 + length
    return elements


CT_UID = CT_IMAGE_STORAGE.encode() + b"\x00"
INSTANCE = b"1.2.3.4.5\x00"
IDENTIFIER = struct.pack("<HHI", 0x0008, 0x0052, 6) + b"STUDY "
# name, Command Field, command elements besides Command Field, Message ID and Data Set Type,
# a dataset (an identifier or attribute list) or None
UNSUPPORTED = [
    ("C-FIND", 0x0020, [(0x0002, CT_UID), (0x0700, b"\x00\x00")], IDENTIFIER),
    ("C-GET", 0x0010, [(0x0002, CT_UID), (0x0700, b"\x00\x00")], IDENTIFIER),
    ("C-MOVE", 0x0021, [(0x0002, CT_UID), (0x0700, b"\x00\x00"), (0x0600, b"SOMEWHERE ")],
     IDENTIFIER),
    ("N-CREATE", 0x0140, [(0x0002, CT_UID)], None),
    ("N-DELETE", 0x0150, [(0x0003, CT_UID), (0x1001, INSTANCE)], None),
    ("N-ACTION", 0x0130, [(0x0003, CT_UID), (0x1001, INSTANCE), (0x1008, b"\x01\x00")], None),
    ("N-GET", 0x0110, [(0x0003, CT_UID), (0x1001, INSTANCE)], None),
    ("C-ECHO on a storage context", 0x0030, [(0x0002, CT_UID)], None),
]


@pytest.mark.parametrize("name, field, elements, dataset", UNSUPPORTED,
                         ids=[u[0] for u in UNSUPPORTED])
def test_a_service_the_node_does_not_offer_gets_a_failure_at_once(hostile_node, name, field,
                                                                    elements, dataset):
    peer = RawPeer(port_of(hostile_node), timeout=5.0)
    assert peer.associate() == 0x02
    has_data = b"\x00\x00" if dataset else b"\x01\x01"
    sent = command(sorted(elements + [(0x0100, struct.pack("<H", field)),
                                      (0x0110, b"\x2a\x00"), (0x0800, has_data)]))
    peer.send(p_data(1, 0x03, sent))
    if dataset:
        peer.send(p_data(1, 0x02, dataset))
    started = time.monotonic()
    response = _response_command(peer)
    assert time.monotonic() - started < 2.0
    assert struct.unpack("<H", response[0x0100])[0] == field | 0x8000
    assert struct.unpack("<H", response[0x0120])[0] == 0x2A
    assert struct.unpack("<H", response[0x0900])[0] == UNRECOGNIZED_OPERATION
    peer.send(RELEASE_RQ)
    assert peer.read_pdu()[0] == 0x06          # the association carries on and releases


def test_association_outcomes_are_recorded_as_they_happened(hostile_node):
    expected = []
    for how in ["aborted"] * 12 + ["released"] * 4 + ["closed"] * 4:
        peer = RawPeer(port_of(hostile_node))
        assert peer.associate() == 0x02
        if how == "aborted":
            peer.send(ABORT)
        elif how == "released":
            peer.send(RELEASE_RQ)
            assert peer.read_pdu()[0] == 0x06
        peer.close()
        expected.append(how)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = hostile_node.index.query("SELECT outcome FROM associations ORDER BY id")
        if len(rows) == len(expected) and all(r[0] for r in rows):
            break
        time.sleep(0.1)
    assert [r[0] for r in rows] == expected


def _ct(folder: Path, name: str, size: int, uid_root: str) -> Path:
    from tests.conftest import write_series

    series = write_series(folder / name, rows=64, slices=8)
    ds = pydicom.dcmread(series.files[0])
    ds.Rows = ds.Columns = size
    ds.PixelData = np.random.default_rng(0).integers(0, 2000, (size, size), "uint16").tobytes()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{uid_root}.{size}"
    path = folder / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_dataset_over_max_dataset_mb_is_refused_and_the_association_goes_on(
        hostile_node, tmp_path):
    from pynetdicom import AE

    big = pydicom.dcmread(_ct(tmp_path, "big", 1024, "1.2.826.0.1.3680043.8.498.77"))  # 2 MiB
    small = pydicom.dcmread(_ct(tmp_path, "small", 64, "1.2.826.0.1.3680043.8.498.78"))
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(CT_IMAGE_STORAGE, big.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port_of(hostile_node), ae_title="CDSS_EGFR")
    try:
        refused, stored = assoc.send_c_store(big), assoc.send_c_store(small)
    finally:
        assoc.release()
    assert refused.Status == 0xA700 and "max_dataset_mb (1 MB)" in refused.ErrorComment
    assert stored.Status == 0x0000
    rows = hostile_node.index.query("SELECT sop_instance_uid FROM instances")
    assert [r[0] for r in rows] == [small.SOPInstanceUID]
    assert not list(hostile_node.spool.tmp.iterdir())


def test_a_large_dataset_is_received_to_disk_and_stored_byte_for_byte(tmp_path):
    config = node_config(tmp_path / "var")
    node = Node(config)
    node.start()
    try:
        sent = _ct(tmp_path, "large", 2048, "1.2.826.0.1.3680043.8.498.79")  # 8 MiB
        before = rss_bytes()
        result = storescu(port_of(node), sent)
        assert store_responses(result) == ["(Success)"], result.stdout + result.stderr
        [row] = node.index.query("SELECT path FROM instances")
        assert pydicom.dcmread(node.spool.root / row[0]) == pydicom.dcmread(sent)
        assert not list(node.spool.tmp.iterdir())
        assert rss_bytes() - before < 8 * 1024 * 1024   # the dataset never was in memory whole
    finally:
        node.stop()


def test_a_store_request_with_a_command_set_of_megabytes_ends_the_association(hostile_node):
    peer = RawPeer(port_of(hostile_node))
    assert peer.associate() == 0x02
    for _ in range(10):                                  # 10 x 16 KiB command fragments
        peer.send(p_data(1, 0x01, b"\x00" * 16000))
    answer = peer.read_pdu()
    assert answer is None or answer[0] == 0x07           # A-ABORT, or closed
    ok = RawPeer(port_of(hostile_node))
    assert ok.associate() == 0x02
    ok.send(p_data(1, 0x03, store_command(CT_IMAGE_STORAGE, "1.2.3")))
    ok.close()


def test_a_flood_of_refused_connections_is_counted_and_logged_sparingly(hostile_node,
                                                                         monkeypatch):
    """40 connections that begin with garbage: each is counted for /metrics, the log has a
    line for the first and not one per connection."""
    from cdss_node.dicom import connections
    from cdss_node.dicom.connections import RefusalLog

    logged = []      # the module's logger itself (capsys saw nothing after some test orders)
    monkeypatch.setattr(connections, "log", LogRecorder(logged))

    reason = "no A-ASSOCIATE-RQ of a plausible length first"
    for _ in range(40):
        peer = RawPeer(port_of(hostile_node)).send(b"\x04\x00\xff\xff\xff\xf0")
        assert peer.closed_within(5.0) is not None
    deadline = time.monotonic() + 5
    counter = hostile_node.receiver.telemetry.association_rejections.labels(reason)
    while counter._value.get() < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert counter._value.get() == 40
    lines = [event for event, _ in logged if event == "connection_refused"]
    assert 1 <= len(lines) <= 2 and isinstance(hostile_node.receiver.guard.refusals, RefusalLog)
