"""A bounded PDU-level fuzzer against a running receiver: hypothesis writes byte sequences a
DICOM peer might send (PDUs of every type with lengths true or false, P-DATA with any items,
C-STORE commands with datasets cut anywhere, stalls and aborts), each over a connection of
its own. Whatever comes, the node keeps its memory, leaves no spill file or slot behind, and
still serves a real peer."""

from __future__ import annotations

import struct
import time
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdss_node.node import Node
from tests.conftest import node_config
from tests.integration.dcmtk import echoscu
from tests.integration.rawpeer import (
    ABORT, CT_IMAGE_STORAGE, RELEASE_RQ, RawPeer, associate_rq, p_data, pdu, store_command)
from tests.integration.test_hostile_peer import rss_bytes

pytestmark = pytest.mark.integration

lengths = st.one_of(st.integers(0, 64), st.sampled_from([2**16, 2**20, 2**24, 2**31, 2**32 - 1]))


@st.composite
def any_pdu(draw) -> bytes:
    """A PDU header of any type with a length field that may lie, and a body."""
    body = draw(st.binary(max_size=512))
    claimed = draw(st.one_of(st.just(len(body)), lengths))
    pdu_type = draw(st.one_of(st.integers(1, 7), st.sampled_from([0, 8, 0x55, 0xFF])))
    return struct.pack(">BBL", pdu_type, draw(st.integers(0, 255)), claimed) + body


@st.composite
def p_data_items(draw) -> bytes:
    """A P-DATA-TF of well-formed or malformed PDV items."""
    items = draw(st.lists(st.tuples(st.sampled_from([1, 3, 5, 0, 255]),
                                    st.sampled_from([0, 1, 2, 3, 0xFF]),
                                    st.binary(max_size=256)), min_size=1, max_size=4))
    body = b"".join(struct.pack(">LBB", len(v) + 2 if draw(st.booleans()) else
                                draw(lengths), cx, control) + v for cx, control, v in items)
    return pdu(0x04, body)


@st.composite
def store_attempt(draw) -> bytes:
    """A C-STORE-RQ command (whole or cut) and a dataset (whole, cut, or junk)."""
    sop = "1.2.826.0.1.3680043.8.498." + str(draw(st.integers(1, 10**6)))
    command = store_command(CT_IMAGE_STORAGE, sop)
    cut = draw(st.integers(0, len(command)))
    sent = p_data(1, 0x03 if cut == len(command) else 0x01, command[:cut])
    dataset = draw(st.binary(max_size=1024))
    return sent + p_data(1, draw(st.sampled_from([0, 2])), dataset)


step = st.one_of(any_pdu(), p_data_items(), store_attempt(), st.binary(max_size=64),
                 st.just(RELEASE_RQ), st.just(ABORT))
conversation = st.tuples(st.booleans(), st.lists(step, max_size=5), st.booleans())


@pytest.fixture(scope="module")
def fuzzed_node(tmp_path_factory):
    config = node_config(tmp_path_factory.mktemp("fuzz") / "var")
    config = replace(config, node=replace(config.node, network_timeout_s=2.0,
                                          max_dataset_mb=1))
    node = Node(config)
    node.start()
    yield node
    node.stop()


def _drain(peer: RawPeer, seconds: float) -> None:
    peer.sock.settimeout(seconds)
    try:
        while peer.sock.recv(65536):
            pass
    except OSError:
        pass


def converse(node: Node, talk) -> None:
    associate_first, steps, abort_at_end = talk
    peer = RawPeer(node.config.node.port)
    try:
        if associate_first:
            peer.send(associate_rq())
        for sent in steps:
            peer.send(sent)
        if abort_at_end:
            peer.send(ABORT)
        _drain(peer, 0.05)
    except OSError:       # the node closed the connection: a fair answer to most of this
        pass
    finally:
        peer.close()


def test_fuzzed_pdus_leave_the_node_bounded_and_serving(fuzzed_node):
    before = rss_bytes()

    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(conversation)
    def fuzz(talk):
        converse(fuzzed_node, talk)

    fuzz()
    receiver = fuzzed_node.receiver
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and receiver.guard.counts(receiver.ae) != (0, 0):
        time.sleep(0.2)
    assert receiver.guard.counts(receiver.ae) == (0, 0)   # no connection slot left taken
    assert not list(fuzzed_node.spool.tmp.iterdir())      # no spill file left behind
    assert rss_bytes() - before < 64 * 1024 * 1024
    assert echoscu(fuzzed_node.config.node.port).returncode == 0
