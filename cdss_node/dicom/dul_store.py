"""C-STORE requests served on the thread that reads them from the socket.

pynetdicom runs two threads per association. The DUL thread reads each P-DATA-TF and hands
it to the association thread through queues; the association thread assembles the message,
serves it (``StorageServiceClass.SCP`` re-validates every UID of the request as it builds the
response), and hands the response back to the DUL thread to send. On 2 cores these hand-offs
and checks took more of the node's time per image than its own C-STORE handler (issue 19).

For the receiver's associations (those with ``wire`` limits), while pynetdicom's verbose
handlers are off, the DUL thread serves a usual C-STORE-RQ itself, as dcmtk's storescp does
on its one thread:

- it assembles the message within the same bounds as ``dataset_sink`` (a command set of at
  most ``wire.MAX_COMMAND_BYTES``, the dataset into a ``DatasetSink``);
- it triggers EVT_C_STORE with the request and context pynetdicom's SCP would give, with
  ``assoc.abort`` non-blocking during the handler as pynetdicom has it;
- it closes the sink and sends the response: a Success encoded directly
  (``dimse_fast.encode_success``), any other status through pynetdicom's ``validate_status``
  and C-STORE-RSP encoding; 0xC211 if the handler raised.

Anything else that begins a message (a C-ECHO, a C-STORE-RQ with an unusual command set, a
context that is not an accepted storage context, a dataset fragment with no command) goes to
pynetdicom with every fragment the node has read of it, and that association stays with
pynetdicom from then on, so two threads never answer on one association. A command fragment
inside a dataset is a protocol error: the association is aborted (Evt19).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pynetdicom import evt
from pynetdicom.dul import DULServiceProvider
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import Verification

from cdss_node.dicom import dimse_fast, wire
from cdss_node.dicom.dataset_sink import DatasetSink, check_command_size
from cdss_node.logs import get_logger

log = get_logger(__name__)

ENABLED = True            # tests turn it off to compare with pynetdicom's own path
ESTABLISHED_WAIT_S = 2.0  # a request may arrive before the accepting thread marks it so
PROCESSING_FAILURE = 0xC211   # pynetdicom's status for a handler that raised
STA6 = "Sta6"                 # association established, ready for data transfer
LAST_COMMAND = b"\x03"        # message control header: command, last fragment


class ProtocolError(ValueError):
    """Fragments in an order PS3.7 6.3.1 does not allow (a command inside a dataset)."""


@dataclass
class StoreMessage:
    """A C-STORE-RQ being received: its command set, then its dataset."""

    context_id: int
    command: bytearray = field(default_factory=bytearray)
    request: C_STORE | None = None
    sink: DatasetSink | None = None


class DulStore:
    """The C-STORE server of one association, run by its DUL thread."""

    def __init__(self, limits: wire.WireLimits):
        self.limits = limits
        self.handed_over = False
        self.serving = False      # the C-STORE handler runs
        self.message: StoreMessage | None = None

    def discard(self) -> None:
        """Close the sink of a message the association will never finish."""
        if self.message is not None and self.message.sink is not None:
            self.message.sink.close()
        self.message = None


def _server(dul) -> DulStore | None:
    """The association's DUL-thread server, if one was made."""
    return getattr(dul, "cdss_dul_store", None)


def server_of(dul) -> DulStore | None:
    """The association's DUL-thread server, made on its first P-DATA; None where pynetdicom
    serves (not the receiver's, verbose handlers on, handed over, not established)."""
    server = _server(dul)
    if server is None:
        limits = wire.limits_of(dul.assoc.ae)
        if limits is None:
            return None
        server = dul.cdss_dul_store = DulStore(limits)
        # decided once: an association's messages all go one way
        server.handed_over = (not ENABLED or dimse_fast.verbose_handlers()
                              or not _established(dul))
    return None if server.handed_over else server


def serves_requests(dul) -> bool:
    """Does this association's DUL thread serve its requests (now)?"""
    server = _server(dul)
    return server is not None and not server.handed_over


def mid_message(dul) -> bool:
    """Has the DUL thread begun a message whose fragments are still to come?"""
    return serves_requests(dul) and _server(dul).message is not None


def _established(dul) -> bool:
    """Sta6 and the accepting thread done (EVT_ACCEPTED handled, ``is_established`` set)."""
    deadline = time.monotonic() + ESTABLISHED_WAIT_S
    while not dul.assoc.is_established:
        if time.monotonic() > deadline or dul.state_machine.current_state != STA6:
            return False
        time.sleep(0.0002)
    return dul.state_machine.current_state == STA6


def discard(dul) -> None:
    server = _server(dul)
    if server is not None:
        server.discard()


# ------------------------------------------------------------------ receiving

def take(dul, pdu_bytes: bytearray) -> bool:
    """Serve the P-DATA-TF ``pdu_bytes`` on this thread; False if pynetdicom is to have it
    (also in any state but Sta6: after a release request or an abort, pynetdicom's state
    machine answers a P-DATA-TF). Raises ValueError for a PDU to be treated as undecodable
    (Evt19); the message begun is then dropped."""
    server = server_of(dul)
    if server is None:
        return False
    if dul.state_machine.current_state != STA6:
        server.discard()
        return False
    try:
        items = dimse_fast.pdv_values(pdu_bytes)
        for at, (context_id, data) in enumerate(items):
            if not _fragment(dul, server, context_id, data):
                _hand_over(dul, server, items[at + 1:] if server.message else items[at:])
                return True
    except ValueError:
        server.discard()
        raise
    return True


def _fragment(dul, server: DulStore, context_id: int, data: memoryview) -> bool:
    """Take one fragment; False if it begins or ends a message pynetdicom must serve."""
    control, message = data[0], server.message
    if message is None:
        if not control & 1:
            return False
        message = server.message = StoreMessage(context_id)
    if message.request is None:
        return _command_fragment(dul, message, context_id, data, control)
    if control & 1:
        raise ProtocolError("a command fragment inside a C-STORE dataset")
    message.sink.write(data[1:])
    if control & 2:
        server.message = None
        _serve(dul, message)
    return True


def _command_fragment(dul, message: StoreMessage, context_id: int, data: memoryview,
                      control: int) -> bool:
    check_command_size(len(message.command), data)
    message.command += data[1:]
    message.context_id = context_id          # as pynetdicom: the last fragment's context
    if not control & 2:
        return True
    request = _store_request(dul, message)
    if request is None:
        return False
    message.request = request
    message.sink = DatasetSink(dul.cdss_dul_store.limits)
    return True


def _store_request(dul, message: StoreMessage) -> C_STORE | None:
    """The C-STORE request primitive, if the command set is a usual C-STORE-RQ with a dataset
    on an accepted storage context; None otherwise."""
    elements = dimse_fast.command_elements(bytes(message.command))
    if not (dimse_fast.usual_store_request(elements) and _has_dataset(elements)
            and _storage_context(dul, message.context_id)):
        return None
    return dimse_fast.store_primitive(elements, message.context_id)


def _has_dataset(elements: dict[int, bytes]) -> bool:
    value = elements.get(dimse_fast.DATA_SET_TYPE)
    return value is not None and value != dimse_fast.NO_DATA_SET.to_bytes(2, "little")


def _storage_context(dul, context_id: int) -> bool:
    context = dul.assoc._accepted_cx.get(context_id)
    return context is not None and context.abstract_syntax != Verification


def _hand_over(dul, server: DulStore, rest: list) -> None:
    """Give pynetdicom the command set begun (as one last fragment: pynetdicom joins
    fragments, so it is the same message) and the PDVs after it, copied, as one P-DATA-TF
    read from the peer; the association is pynetdicom's from now on."""
    message, server.message = server.message, None
    server.handed_over = True
    items = [(message.context_id, LAST_COMMAND + message.command)] if message else []
    pdu = P_DATA_TF()
    pdu.presentation_data_value_items = [dimse_fast.pdv_item(cid, bytes(data))
                                         for cid, data in items + rest]
    log.debug("association_handed_to_pynetdicom")
    dul.event_queue.put("Evt10")
    dul._recv_pdu.put(pdu)


# ------------------------------------------------------------------ serving

def _serve(dul, message: StoreMessage) -> None:
    """EVT_C_STORE, then the response, as ``StorageServiceClass.SCP`` does; no idle timeout
    while the handler runs (``idle_timer_expired``), as on pynetdicom's own path."""
    assoc, request, sink = dul.assoc, message.request, message.sink
    if sink.buffer is not None:
        request.DataSet = sink.buffer
    request._dataset_file = sink
    context = assoc._accepted_cx[message.context_id]
    assoc.abort = assoc._abort_nonblocking   # a handler's abort must not wait for this thread
    dul.cdss_dul_store.serving = True
    try:
        status = evt.trigger(assoc, evt.EVT_C_STORE,
                             {"request": request, "context": context.as_tuple})
    except Exception:
        log.exception("store_handler_raised")
        status = PROCESSING_FAILURE
    finally:
        assoc.abort = assoc._abort_blocking
        sink.close()
        dul._idle_timer.restart()
        dul.cdss_dul_store.serving = False
    if assoc.is_established:
        dul.socket.send(response_pdus(assoc, request, status, message.context_id))


def response_pdus(assoc, request: C_STORE, status, context_id: int) -> bytes:
    """The encoded P-DATA-TF PDUs of the C-STORE-RSP to ``request`` with ``status`` (an int or
    a Dataset, as an EVT_C_STORE handler returns)."""
    if type(status) is int and status == dimse_fast.SUCCESS:
        command = dimse_fast.encode_success(request.AffectedSOPClassUID,
                                            request.AffectedSOPInstanceUID, request.MessageID)
        value = dimse_fast.LAST_COMMAND_FRAGMENT + command
        return b"".join((b"\x04\x00", (len(value) + 5).to_bytes(4, "big"),
                         (len(value) + 1).to_bytes(4, "big"), bytes((context_id,)), value))
    response = C_STORE()
    response.MessageIDBeingRespondedTo = request.MessageID
    response.AffectedSOPInstanceUID = request.AffectedSOPInstanceUID
    response.AffectedSOPClassUID = request.AffectedSOPClassUID
    response = StorageServiceClass(assoc).validate_status(status, response)
    message = C_STORE_RSP()
    message.primitive_to_message(response)
    encoded = []
    for p_data in message.encode_msg(context_id, assoc.dimse.maximum_pdu_size):
        pdu = P_DATA_TF()
        pdu.from_primitive(p_data)
        encoded.append(pdu.encode())
    return b"".join(encoded)


# ------------------------------------------------------------------ idle timeout

_ORIGINAL_IDLE = DULServiceProvider.idle_timer_expired


def idle_timer_expired(self: DULServiceProvider) -> bool:
    """pynetdicom's idle timeout, except while this DUL thread runs a C-STORE handler (on
    pynetdicom's path the association thread runs it and does not look meanwhile)."""
    server = _server(self)
    return False if server is not None and server.serving else _ORIGINAL_IDLE(self)


PATCHES = {(DULServiceProvider, "idle_timer_expired"): (_ORIGINAL_IDLE, idle_timer_expired)}
