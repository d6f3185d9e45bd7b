"""The C-STORE fast paths give exactly what pynetdicom's own code gives, for well-formed and
malformed command sets alike, and only for the receiver's associations."""

from __future__ import annotations

import struct
import warnings
from io import BytesIO

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from cdss_node.dicom import dimse_fast, transport, wire

CT = "1.2.840.10008.5.1.4.1.1.2"
SOP = "1.2.826.0.1.3680043.8.498.12345678901234567890.1"  # odd length: padded


LIMITS = wire.WireLimits(max_pdu_bytes=16384, pdu_timeout_s=5.0, max_dataset_bytes=2**20,
                         spill_dir=None)


@pytest.fixture
def original():
    """pynetdicom's own code: no patch installed. ``fast`` installs them for this thread."""
    transport.restore()
    yield
    transport.restore()


def fast_paths(monkeypatch) -> None:
    """The patches installed, and this thread taken for a receiver's association thread."""
    assert transport.apply()
    monkeypatch.setattr(wire, "limits_here", lambda: LIMITS)


def store_request(**extra) -> C_STORE:
    rq = C_STORE()
    rq.MessageID, rq.AffectedSOPClassUID, rq.AffectedSOPInstanceUID = 7, CT, SOP
    rq.Priority = 1
    for key, value in extra.items():
        setattr(rq, key, value)
    rq.DataSet = BytesIO(b"\x08\x00\x18\x00" + bytes(range(256)) * 40)
    return rq


def encoded_pdus(rq: C_STORE, max_pdu: int) -> list[bytes]:
    message = C_STORE_RQ()
    message.primitive_to_message(rq)
    return [P_DATA_TF(p).encode() for p in message.encode_msg(1, max_pdu)]


def received(pdus: list[bytes]) -> C_STORE:
    message = DIMSEMessage()
    for raw in pdus:
        pdu = P_DATA_TF()
        pdu.decode(raw)
        done = message.decode_msg(pdu.to_primitive())
    assert done
    return message.message_to_primitive()


def fields(primitive: C_STORE) -> dict:
    names = ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID", "Priority",
             "MoveOriginatorApplicationEntityTitle", "MoveOriginatorMessageID")
    values = {name: getattr(primitive, name) for name in names}
    values["DataSet"] = primitive.DataSet.getvalue()
    values["context"] = primitive._context_id
    return values


@pytest.mark.parametrize("max_pdu", [0, 1000, 16384])
@pytest.mark.parametrize("extra", [{}, {"MoveOriginatorApplicationEntityTitle": "MOVER",
                                        "MoveOriginatorMessageID": 3}])
def test_request_is_received_as_pynetdicom_receives_it(original, monkeypatch, max_pdu, extra):
    pdus = encoded_pdus(store_request(**extra), max_pdu)
    expected = fields(received(pdus))
    fast_paths(monkeypatch)
    assert fields(received(pdus)) == expected
    assert expected["AffectedSOPInstanceUID"] == SOP and expected["Priority"] == 1


def test_pdata_items_are_views_of_the_pdu_with_context_and_control_byte(original):
    raw = encoded_pdus(store_request(), 0)[1]
    pdu = P_DATA_TF()
    dimse_fast.decode_p_data_tf(pdu, raw)
    (item,) = pdu.presentation_data_value_items
    assert isinstance(item.presentation_data_value, memoryview)
    assert item.presentation_context_id == 1
    assert bytes(item.presentation_data_value) == raw[11:]


def test_a_pdv_item_longer_than_its_pdu_is_refused(original):
    raw = bytearray(encoded_pdus(store_request(), 0)[1])
    raw[6:10] = (len(raw)).to_bytes(4, "big")
    with pytest.raises(ValueError, match="runs past"):
        dimse_fast.decode_p_data_tf(P_DATA_TF(), bytes(raw))


def test_command_elements_rejects_other_groups_and_truncation():
    good = dimse_fast.encode_success(CT, SOP, 5)
    assert dimse_fast.command_elements(good)[0x0120] == b"\x05\x00"
    assert dimse_fast.command_elements(good[:-3]) is None
    assert dimse_fast.command_elements(b"\x08\x00\x00\x00\x00\x00\x00\x00") is None


def response(status: int = 0x0000, comment: str | None = None) -> C_STORE:
    rsp = C_STORE()
    rsp.MessageID = rsp.MessageIDBeingRespondedTo = 5
    rsp.AffectedSOPClassUID, rsp.AffectedSOPInstanceUID = CT, SOP
    rsp.Status = status
    rsp.ErrorComment = comment
    return rsp


def encoded_response(rsp: C_STORE) -> list[list]:
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    return [p.presentation_data_value_list for p in message.encode_msg(1, 16384)]


@pytest.mark.parametrize("status, comment", [(0x0000, None), (0xA900, "SOP Class differs"),
                                             (0xB000, None)])
def test_response_bytes_equal_pynetdicom_s(original, monkeypatch, status, comment):
    expected = encoded_response(response(status, comment))
    fast_paths(monkeypatch)
    assert encoded_response(response(status, comment)) == expected




# ---------------------------------------------------------------- malformed command sets

def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _command_set(elements: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(_element(e, v) for e, v in elements)
    return _element(0x0000, struct.pack("<I", len(body))) + body


USUAL = [(0x0002, b"1.2.840.10008.5.1.4.1.1.2\x00"), (0x0100, b"\x01\x00"),
         (0x0110, b"\x07\x00"), (0x0700, b"\x00\x00"), (0x0800, b"\x00\x00"),
         (0x1000, SOP.encode() + b"\x00")]


def _outcome(command: bytes):
    """The C-STORE primitive's fields, or the exception's type, as pynetdicom assembles it."""
    message = DIMSEMessage()
    primitive = P_DATA()
    primitive.presentation_data_value_list = [[1, b"\x03" + command], [1, b"\x02" + b"\0" * 8]]
    try:
        message.decode_msg(primitive)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fields(message.message_to_primitive())
    except Exception as error:
        return type(error).__name__


@pytest.mark.parametrize("elements", [
    [(0x0002, b"1.2.840.10008.5.1.4.1.1.\xe92")] + USUAL[1:],      # non-ASCII in a UID
    USUAL[:3] + [(0x0700, b"\x02\x00\x00\x00")] + USUAL[4:],       # a 4-byte Priority
    USUAL[:3] + [(0x0700, b"")] + USUAL[4:],                        # an empty Priority
    USUAL[:2] + [(0x0110, b"\x07")] + USUAL[3:],                    # a 1-byte Message ID
    USUAL + [(0x1000, b"1.2.3\x00")],                               # an element twice
    [(0x0002, b" 1.2.840.10008.5.1.4.1.1.2 ")] + USUAL[1:],         # UID with spaces
    USUAL[1:],                                                      # no SOP Class UID
])
def test_malformed_command_sets_are_received_as_pynetdicom_receives_them(
        original, monkeypatch, elements):
    command = _command_set(elements)
    expected = _outcome(command)
    fast_paths(monkeypatch)
    assert _outcome(command) == expected


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, len(USUAL) - 1), value=st.binary(max_size=70),
       extra=st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=8)), max_size=2))
def test_fuzzed_command_sets_are_received_as_pynetdicom_receives_them(
        original, monkeypatch, which, value, extra):
    elements = list(USUAL)
    elements[which] = (elements[which][0], value)
    command = _command_set(elements + extra)
    transport.restore()
    monkeypatch.undo()
    expected = _outcome(command)
    fast_paths(monkeypatch)
    assert _outcome(command) == expected


def test_the_paths_leave_other_associations_to_pynetdicom(original):
    assert transport.apply()          # installed, but this thread is no receiver's
    assert not hasattr(C_STORE_RSP(), "_fast_command_set")
    assert encoded_response(response()) == [[(1, b"\x03" + dimse_fast.encode_success(
        CT, SOP, 5))]]
