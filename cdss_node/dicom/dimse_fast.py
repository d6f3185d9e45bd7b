"""Fast paths for the messages of a C-STORE, the node's hot loop.

pynetdicom handles every DIMSE message through pydicom Datasets and validating setters, and
copies each P-DATA-TF PDU several times on its way to the handler. Per 512 x 512 CT image
that was about 2.5 ms of CPU on this machine, more than the node's own work. Three message
shapes carry nearly all of the traffic, and each has a fixed layout, so they are handled here:

- a P-DATA-TF PDU is split into its presentation data values as views of the buffer that
  ``pdu_reader`` read it into, without copies (pynetdicom copies it three times);
- a C-STORE-RQ whose command set holds only the usual elements, each of its usual size and
  ASCII where it is a UID, becomes its primitive straight from the encoded command set
  (PS3.7 9.3.1.1);
- a C-STORE-RSP with Status Success and no Error Comment is encoded directly (PS3.7 9.3.1.2).

Each gives exactly what pynetdicom gives (tests compare both, malformed command sets
included); anything unusual takes pynetdicom's own path. The paths act only for the
associations of an AE with ``wire`` limits (the receiver's), and only while pynetdicom's
verbose log handlers (which read the pydicom command sets) are off; ``transport.apply``
installs them only for the pynetdicom releases they were checked against.
"""

from __future__ import annotations

import re
import struct

from io import BytesIO

from pydicom.dataset import Dataset
from pynetdicom import _config
from pynetdicom.dimse_messages import _COMMAND_SET_KEYWORDS, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_items import PresentationDataValueItem
from pynetdicom.pdu_primitives import P_DATA

from cdss_node.dicom import wire

SUCCESS = 0x0000
C_STORE_RQ_COMMAND = 0x0001
C_STORE_RSP_COMMAND = 0x8001
NO_DATA_SET = 0x0101
LAST_COMMAND_FRAGMENT = b"\x03"  # message control header: command, last fragment

# (0000,eeee) elements of a C-STORE-RQ that the fast path reads, with the length each must
# have (None: a UID, any even length); any other element (say a Move Originator) or length
# sends the message down pynetdicom's path.
AFFECTED_SOP_CLASS, COMMAND_FIELD, MESSAGE_ID = 0x0002, 0x0100, 0x0110
PRIORITY, DATA_SET_TYPE, AFFECTED_SOP_INSTANCE = 0x0700, 0x0800, 0x1000
_STORE_RQ_SHAPE = {0x0000: 4, AFFECTED_SOP_CLASS: None, COMMAND_FIELD: 2, MESSAGE_ID: 2,
                   PRIORITY: 2, DATA_SET_TYPE: 2, AFFECTED_SOP_INSTANCE: None}
_REQUIRED = (AFFECTED_SOP_CLASS, COMMAND_FIELD, MESSAGE_ID, AFFECTED_SOP_INSTANCE)
_PLAIN_UID = re.compile(rb"[0-9.]{1,64}\x00?")  # digits and dots, padded to even length

_ORIGINAL = {
    (C_STORE_RQ, "message_to_primitive"): C_STORE_RQ.message_to_primitive,
    (C_STORE_RSP, "__init__"): C_STORE_RSP.__init__,
    (C_STORE_RSP, "primitive_to_message"): C_STORE_RSP.primitive_to_message,
    (C_STORE_RSP, "encode_msg"): C_STORE_RSP.encode_msg,
}


def verbose_handlers(assoc=None) -> bool:
    """pynetdicom's standard handlers, which read pydicom command sets, are on."""
    return _config.LOG_HANDLER_LEVEL != "none"


def _fast_here() -> bool:
    return not verbose_handlers() and wire.limits_here() is not None


# ------------------------------------------------------------------ P-DATA-TF

def pdv_values(bytestream: bytes | bytearray) -> list[tuple[int, memoryview]]:
    """(context ID, value with its control header) of each PDV item of a P-DATA-TF PDU
    (PS3.8 9.3.5), the values as views of ``bytestream``."""
    view = memoryview(bytestream)
    values, offset, end = [], 6, len(view)
    while offset < end:
        length = int.from_bytes(view[offset:offset + 4], "big")
        if length < 1 or offset + 4 + length > end:
            raise ValueError(f"PDV item length {length} at offset {offset} runs past the PDU")
        values.append((view[offset + 4], view[offset + 5:offset + 4 + length]))
        offset += 4 + length
    return values


def pdv_item(context_id: int, value) -> PresentationDataValueItem:
    item = PresentationDataValueItem()
    item.presentation_context_id = context_id
    item.presentation_data_value = value
    return item


def decode_p_data_tf(self: P_DATA_TF, bytestream: bytes | bytearray) -> None:
    """Split a P-DATA-TF PDU (PS3.8 9.3.5) into its PDV items; values are memoryviews."""
    self.presentation_data_value_items = [pdv_item(cid, value)
                                          for cid, value in pdv_values(bytestream)]


# ------------------------------------------------------------------ C-STORE-RQ

def command_elements(encoded: bytes) -> dict[int, bytes] | None:
    """Element number → value of a group 0000 command set in Implicit VR Little Endian;
    None if it is not one (or names an element twice)."""
    elements, offset = {}, 0
    while offset + 8 <= len(encoded):
        group, element, length = struct.unpack_from("<HHI", encoded, offset)
        if group != 0x0000 or offset + 8 + length > len(encoded) or element in elements:
            return None
        elements[element] = encoded[offset + 8:offset + 8 + length]
        offset += 8 + length
    return elements if offset == len(encoded) else None


def usual_store_request(elements: dict[int, bytes] | None) -> bool:
    """Only the usual elements, each of its usual length, UIDs in ASCII, a C-STORE-RQ."""
    if elements is None or not all(tag in elements for tag in _REQUIRED):
        return False
    for tag, value in elements.items():
        if tag not in _STORE_RQ_SHAPE:
            return False
        size = _STORE_RQ_SHAPE[tag]
        if len(value) != size if size is not None else not _PLAIN_UID.fullmatch(value):
            return False
    return _us(elements[COMMAND_FIELD]) == C_STORE_RQ_COMMAND


def _us(value: bytes) -> int:
    return struct.unpack("<H", value)[0]


def _uid(value: bytes) -> str:
    return value.rstrip(b"\x00 ").decode("ascii")


def store_request_primitive(self: C_STORE_RQ) -> C_STORE:
    """The C-STORE request primitive of a received C-STORE-RQ message."""
    elements = command_elements(self.encoded_command_set.getvalue()) if _fast_here() else None
    if not usual_store_request(elements):
        return _ORIGINAL[(C_STORE_RQ, "message_to_primitive")](self)
    primitive = store_primitive(elements, self.context_id)
    primitive.DataSet = self.data_set
    primitive._dataset_path = self._data_set_path
    primitive._dataset_file = self._data_set_file
    return primitive


def store_primitive(elements: dict[int, bytes], context_id: int) -> C_STORE:
    """The C-STORE request primitive of a usual C-STORE-RQ's command elements."""
    primitive = C_STORE()
    primitive.MessageID = _us(elements[MESSAGE_ID])
    primitive.AffectedSOPClassUID = _uid(elements[AFFECTED_SOP_CLASS])
    primitive.AffectedSOPInstanceUID = _uid(elements[AFFECTED_SOP_INSTANCE])
    if PRIORITY in elements:
        primitive.Priority = _us(elements[PRIORITY])
    primitive._context_id = context_id
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
    if not _fast_here():
        _ORIGINAL[(C_STORE_RSP, "__init__")](self)
        return
    self.context_id = None
    self.encoded_command_set, self.data_set = BytesIO(), BytesIO()
    self.command_set = Dataset()
    self._data_set_path = self._data_set_file = None
    self._fast_command_set = None


def response_to_message(self: C_STORE_RSP, primitive: C_STORE) -> None:
    """Encode a plain Success now; any other response as pynetdicom does."""
    fast = hasattr(self, "_fast_command_set")  # made by new_response, not pynetdicom
    self._fast_command_set = None
    if not fast:
        _ORIGINAL[(C_STORE_RSP, "primitive_to_message")](self, primitive)
        return
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

PATCHES = {key: (_ORIGINAL[key], fast) for key, fast in {
    (C_STORE_RQ, "message_to_primitive"): store_request_primitive,
    (C_STORE_RSP, "__init__"): new_response,
    (C_STORE_RSP, "primitive_to_message"): response_to_message,
    (C_STORE_RSP, "encode_msg"): encode_response,
}.items()}
