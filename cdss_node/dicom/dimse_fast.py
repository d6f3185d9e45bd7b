"""Fast paths for the messages of a C-STORE, the node's hot loop.

pynetdicom handles every DIMSE message through pydicom Datasets and validating setters, and
copies each P-DATA-TF PDU several times on its way to the handler. Per 512 x 512 CT image
that was about 2.5 ms of CPU on this machine, more than the node's own work. Three message
shapes carry nearly all of the traffic, and each has a fixed layout, so they are handled here:

- a PDU is read from the socket into one buffer, and a P-DATA-TF PDU is split into its
  presentation data values as views of it, without copies (pynetdicom copies it three times);
- a C-STORE-RQ whose command set holds only the usual elements becomes its primitive
  straight from the encoded command set (PS3.7 9.3.1.1);
- a C-STORE-RSP with Status Success and no Error Comment is encoded directly (PS3.7 9.3.1.2).

Each gives exactly what pynetdicom gives (tests compare both); anything else takes
pynetdicom's own path. ``apply`` is called by ``transport.apply`` only for the pynetdicom
releases this was checked against, and only while pynetdicom's verbose log handlers (which
read the pydicom command sets) are off.
"""

from __future__ import annotations

import struct

from io import BytesIO

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dimse_messages import _COMMAND_SET_KEYWORDS, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_items import PresentationDataValueItem
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA

from cdss_node.logs import get_logger

log = get_logger(__name__)

SUCCESS = 0x0000
C_STORE_RQ_COMMAND = 0x0001
C_STORE_RSP_COMMAND = 0x8001
NO_DATA_SET = 0x0101
LAST_COMMAND_FRAGMENT = b"\x03"  # message control header: command, last fragment

# (0000,eeee) elements of a C-STORE-RQ that the fast path reads; any other one (say a
# Move Originator) sends the message down pynetdicom's path.
AFFECTED_SOP_CLASS, COMMAND_FIELD, MESSAGE_ID = 0x0002, 0x0100, 0x0110
PRIORITY, DATA_SET_TYPE, AFFECTED_SOP_INSTANCE = 0x0700, 0x0800, 0x1000
_STORE_RQ_ELEMENTS = {0x0000, AFFECTED_SOP_CLASS, COMMAND_FIELD, MESSAGE_ID, PRIORITY,
                      DATA_SET_TYPE, AFFECTED_SOP_INSTANCE}

P_DATA_TF_TYPE = 0x04
PDU_TYPES = range(0x01, 0x08)   # A-ASSOCIATE-RQ .. A-ABORT (PS3.8 9.3.1)

_ORIGINAL = {
    (DULServiceProvider, "_read_pdu_data"): DULServiceProvider._read_pdu_data,
    (P_DATA_TF, "decode"): P_DATA_TF.decode,
    (C_STORE_RQ, "message_to_primitive"): C_STORE_RQ.message_to_primitive,
    (C_STORE_RSP, "__init__"): C_STORE_RSP.__init__,
    (C_STORE_RSP, "primitive_to_message"): C_STORE_RSP.primitive_to_message,
    (C_STORE_RSP, "encode_msg"): C_STORE_RSP.encode_msg,
}


# ------------------------------------------------------------------ P-DATA-TF

def decode_p_data_tf(self: P_DATA_TF, bytestream: bytes | bytearray) -> None:
    """Split a P-DATA-TF PDU (PS3.8 9.3.5) into its PDV items; values are memoryviews."""
    view = memoryview(bytestream)
    items, offset, end = [], 6, len(view)
    while offset < end:
        length = int.from_bytes(view[offset:offset + 4], "big")
        if length < 1 or offset + 4 + length > end:
            raise ValueError(f"PDV item length {length} at offset {offset} runs past the PDU")
        item = PresentationDataValueItem()
        item.presentation_context_id = view[offset + 4]
        item.presentation_data_value = view[offset + 5:offset + 4 + length]
        items.append(item)
        offset += 4 + length
    self.presentation_data_value_items = items


def read_pdu(self: DULServiceProvider) -> None:
    """``DULServiceProvider._read_pdu_data`` with the same events (Evt17 when the connection
    ends inside a PDU, Evt19 for an unknown or undecodable one), reading the PDU into one
    buffer; a P-DATA-TF is decoded straight from it."""
    try:
        pdu_bytes = _receive_pdu(self.socket)
    except (OSError, ValueError, AttributeError) as error:  # AttributeError: socket gone
        log.warning("pdu_read_failed", error=str(error))
        self.event_queue.put("Evt19" if isinstance(error, UnknownPdu) else "Evt17")
        return
    if pdu_bytes is None:  # the peer closed the connection between PDUs: nothing to say
        self.event_queue.put("Evt17")
        return
    try:
        pdu, event = _decode(self, pdu_bytes)
    except Exception as error:  # as pynetdicom: an undecodable PDU is Evt19, never a crash
        log.warning("pdu_undecodable", error=f"{type(error).__name__}: {error}")
        self.event_queue.put("Evt19")
        return
    self.event_queue.put(event)
    self._recv_pdu.put(pdu)


class UnknownPdu(ValueError):
    """A PDU type that PS3.8 does not define."""


def _receive_pdu(sock) -> bytearray | None:
    header = sock.recv(6)
    if not header:
        return None
    if len(header) < 6:
        raise ConnectionError("connection closed inside a PDU header")
    pdu_type, _, length = struct.unpack(">BBL", header)
    if pdu_type not in PDU_TYPES:
        raise UnknownPdu(f"unknown PDU type 0x{pdu_type:02X}")
    pdu = bytearray(6 + length)
    pdu[:6] = header
    view, got = memoryview(pdu), 6
    while got < len(pdu):
        n = sock.socket.recv_into(view[got:])
        if not n:
            raise ConnectionError(f"PDU cut short ({got - 6} of {length} bytes)")
        got += n
    del view
    return pdu


def _decode(dul: DULServiceProvider, pdu_bytes: bytearray):
    if pdu_bytes[0] != P_DATA_TF_TYPE:
        return dul._decode_pdu(pdu_bytes)
    pdu = P_DATA_TF()
    decode_p_data_tf(pdu, pdu_bytes)
    evt.trigger(dul.assoc, evt.EVT_PDU_RECV, {"pdu": pdu})
    return pdu, "Evt10"


# ------------------------------------------------------------------ C-STORE-RQ

def command_elements(encoded: bytes) -> dict[int, bytes] | None:
    """Element number → value of a group 0000 command set in Implicit VR Little Endian;
    None if it is not one."""
    elements, offset = {}, 0
    while offset + 8 <= len(encoded):
        group, element, length = struct.unpack_from("<HHI", encoded, offset)
        if group != 0x0000 or offset + 8 + length > len(encoded):
            return None
        elements[element] = encoded[offset + 8:offset + 8 + length]
        offset += 8 + length
    return elements if offset == len(encoded) else None


def _us(value: bytes) -> int | None:
    return struct.unpack("<H", value)[0] if len(value) == 2 else None


def _uid(value: bytes) -> str:
    return value.rstrip(b"\x00 ").decode("ascii")


def store_request_primitive(self: C_STORE_RQ) -> C_STORE:
    """The C-STORE request primitive of a received C-STORE-RQ message."""
    elements = command_elements(self.encoded_command_set.getvalue())
    if (elements is None or not set(elements) <= _STORE_RQ_ELEMENTS
            or _us(elements.get(COMMAND_FIELD, b"")) != C_STORE_RQ_COMMAND
            or _us(elements.get(MESSAGE_ID, b"")) is None):
        return _ORIGINAL[(C_STORE_RQ, "message_to_primitive")](self)
    primitive = C_STORE()
    primitive.MessageID = _us(elements[MESSAGE_ID])
    primitive.AffectedSOPClassUID = _uid(elements.get(AFFECTED_SOP_CLASS, b""))
    primitive.AffectedSOPInstanceUID = _uid(elements.get(AFFECTED_SOP_INSTANCE, b""))
    if PRIORITY in elements:
        primitive.Priority = _us(elements[PRIORITY])
    primitive.DataSet = self.data_set
    primitive._context_id = self.context_id
    primitive._dataset_path = self._data_set_path
    primitive._dataset_file = self._data_set_file
    return primitive


# ------------------------------------------------------------------ C-STORE-RSP

def _element(element: int, value: bytes) -> bytes:
    """One command element, group 0000, Implicit VR Little Endian."""
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _uid_value(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def encode_success(sop_class_uid: str, sop_instance_uid: str, message_id: int) -> bytes:
    """The command set of a C-STORE-RSP with Status Success, group length first."""
    body = b"".join((
        _element(AFFECTED_SOP_CLASS, _uid_value(sop_class_uid)),
        _element(COMMAND_FIELD, struct.pack("<H", C_STORE_RSP_COMMAND)),
        _element(0x0120, struct.pack("<H", message_id)),  # Message ID Being Responded To
        _element(DATA_SET_TYPE, struct.pack("<H", NO_DATA_SET)),
        _element(0x0900, struct.pack("<H", SUCCESS)),     # Status
        _element(AFFECTED_SOP_INSTANCE, _uid_value(sop_instance_uid)),
    ))
    return _element(0x0000, struct.pack("<I", len(body))) + body


def _is_plain_success(primitive: C_STORE) -> bool:
    return (primitive.Status == SUCCESS and primitive.ErrorComment is None
            and primitive.OffendingElement is None and bool(primitive.AffectedSOPClassUID)
            and bool(primitive.AffectedSOPInstanceUID)
            and primitive.MessageIDBeingRespondedTo is not None)


def new_response(self: C_STORE_RSP) -> None:
    """A C-STORE-RSP message whose pydicom command set is filled in only if pynetdicom's
    own path encodes it (building it costs more than encoding a Success)."""
    self.context_id = None
    self.encoded_command_set, self.data_set = BytesIO(), BytesIO()
    self.command_set = Dataset()
    self._data_set_path = self._data_set_file = None
    self._fast_command_set = None


def response_to_message(self: C_STORE_RSP, primitive: C_STORE) -> None:
    """Encode a plain Success now; any other response as pynetdicom does."""
    self._fast_command_set = None
    if not _is_plain_success(primitive):
        for keyword in _COMMAND_SET_KEYWORDS["C-STORE-RSP"]:  # as pynetdicom's __init__
            setattr(self.command_set, keyword, None)
        _ORIGINAL[(C_STORE_RSP, "primitive_to_message")](self, primitive)
        return
    self._fast_command_set = encode_success(
        primitive.AffectedSOPClassUID, primitive.AffectedSOPInstanceUID,
        primitive.MessageIDBeingRespondedTo)


def encode_response(self: C_STORE_RSP, context_id: int, max_pdu_length: int):
    """A Success is one P-DATA: its command set (about 100 bytes) fits any PDU."""
    command_set = getattr(self, "_fast_command_set", None)
    if command_set is None:
        yield from _ORIGINAL[(C_STORE_RSP, "encode_msg")](self, context_id, max_pdu_length)
        return
    pdata = P_DATA()
    pdata.presentation_data_value_list.append((context_id, LAST_COMMAND_FRAGMENT + command_set))
    yield pdata


# ------------------------------------------------------------------ switching

_FAST = {
    (DULServiceProvider, "_read_pdu_data"): read_pdu,
    (P_DATA_TF, "decode"): decode_p_data_tf,
    (C_STORE_RQ, "message_to_primitive"): store_request_primitive,
    (C_STORE_RSP, "__init__"): new_response,
    (C_STORE_RSP, "primitive_to_message"): response_to_message,
    (C_STORE_RSP, "encode_msg"): encode_response,
}


def apply() -> None:
    for (cls, name), function in _FAST.items():
        setattr(cls, name, function)


def restore() -> None:
    for (cls, name), function in _ORIGINAL.items():
        setattr(cls, name, function)
