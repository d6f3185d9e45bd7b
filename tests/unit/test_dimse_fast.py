"""The C-STORE fast paths give exactly what pynetdicom's own code gives."""

from __future__ import annotations

from io import BytesIO

import pytest
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF

from cdss_node.dicom import dimse_fast

CT = "1.2.840.10008.5.1.4.1.1.2"
SOP = "1.2.826.0.1.3680043.8.498.12345678901234567890.1"  # odd length: padded


@pytest.fixture
def original():
    dimse_fast.restore()
    yield
    dimse_fast.restore()


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
def test_request_is_received_as_pynetdicom_receives_it(original, max_pdu, extra):
    pdus = encoded_pdus(store_request(**extra), max_pdu)
    expected = fields(received(pdus))
    dimse_fast.apply()
    assert fields(received(pdus)) == expected
    assert expected["AffectedSOPInstanceUID"] == SOP and expected["Priority"] == 1


def test_pdata_items_are_views_of_the_pdu_with_context_and_control_byte(original):
    raw = encoded_pdus(store_request(), 0)[1]
    dimse_fast.apply()
    pdu = P_DATA_TF()
    pdu.decode(raw)
    (item,) = pdu.presentation_data_value_items
    assert isinstance(item.presentation_data_value, memoryview)
    assert item.presentation_context_id == 1
    assert bytes(item.presentation_data_value) == raw[11:]


def test_a_pdv_item_longer_than_its_pdu_is_refused(original):
    raw = bytearray(encoded_pdus(store_request(), 0)[1])
    raw[6:10] = (len(raw)).to_bytes(4, "big")
    dimse_fast.apply()
    with pytest.raises(ValueError, match="runs past"):
        P_DATA_TF().decode(bytes(raw))


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
def test_response_bytes_equal_pynetdicom_s(original, status, comment):
    expected = encoded_response(response(status, comment))
    dimse_fast.apply()
    assert encoded_response(response(status, comment)) == expected


class _Dul:
    """What read_pdu uses of a DULServiceProvider."""

    def __init__(self, sock):
        import queue

        from pynetdicom.transport import AssociationSocket

        self.socket = AssociationSocket.__new__(AssociationSocket)
        self.socket.socket = sock
        self.event_queue, self._recv_pdu = queue.Queue(), queue.Queue()
        self.assoc = type("Assoc", (), {"get_handlers": lambda self, event: []})()

    def _decode_pdu(self, data):
        from pynetdicom.dul import DULServiceProvider

        return DULServiceProvider._decode_pdu(self, data)


def test_a_p_data_pdu_is_read_whole_and_queued_as_evt10(original, pair):
    from cdss_node.dicom import transport

    transport.apply()
    raw = encoded_pdus(store_request(), 0)[1]
    pair[1].sendall(raw)
    dul = _Dul(pair[0])
    dimse_fast.read_pdu(dul)
    assert dul.event_queue.get_nowait() == "Evt10"
    (item,) = dul._recv_pdu.get_nowait().presentation_data_value_items
    assert bytes(item.presentation_data_value) == raw[11:]


@pytest.mark.parametrize("raw, event", [(b"\x04\x00\x00\x00\x01\x00abc", "Evt17"),  # cut short
                                        (b"\x09\x00\x00\x00\x00\x00", "Evt19"),     # unknown
                                        (b"\x04\x00\x00\x00\x00\x05\x00\x00\x00\x09\x01",
                                         "Evt19")])                                  # bad item
def test_broken_pdus_give_pynetdicom_s_events(original, pair, raw, event):
    from cdss_node.dicom import transport

    transport.apply()
    pair[1].sendall(raw)
    pair[1].shutdown(2)
    dul = _Dul(pair[0])
    dimse_fast.read_pdu(dul)
    assert dul.event_queue.get_nowait() == event and dul._recv_pdu.empty()
