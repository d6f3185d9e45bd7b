"""DIMSE services the node offers, and a prompt failure for every other message.

pynetdicom picks the service class from a message's SOP Class UID and runs it whatever the
message is: a C-FIND, C-MOVE, C-GET, N-CREATE or N-DELETE sent on an accepted CT Image Storage
context got no response at all (the peer waited for its own timeout), and an N-ACTION or
N-GET got a C-STORE-RSP. For the receiver's associations, a message that is not the one
service of its context (C-ECHO on Verification, C-STORE on a Storage SOP class) is answered
at once with its own response type and Status 0x0211, Unrecognized Operation (PS3.7 C.4).
"""

from __future__ import annotations

from pynetdicom import association
from pynetdicom.dimse_primitives import C_CANCEL, C_ECHO, C_STORE
from pynetdicom.sop_class import Verification

from cdss_node.dicom import wire
from cdss_node.logs import get_logger

log = get_logger(__name__)

UNRECOGNIZED_OPERATION = 0x0211
_ORIGINAL_SERVE = association.Association._serve_request


def offered(primitive, abstract_syntax: str) -> bool:
    """Is this request the service its presentation context offers?"""
    if abstract_syntax == Verification:
        return isinstance(primitive, C_ECHO)
    return isinstance(primitive, C_STORE)


def serve_request(self: association.Association, msg, context_id: int) -> None:
    """``Association._serve_request``, refusing what the context does not offer."""
    context = self._accepted_cx.get(context_id)
    if (wire.limits_of(self.ae) is None or context is None or isinstance(msg, C_CANCEL)
            or not msg.is_valid_request or offered(msg, context.abstract_syntax)):
        return _ORIGINAL_SERVE(self, msg, context_id)
    log.warning("dimse_refused", message=msg.msg_type, sop_class=context.abstract_syntax,
                status=hex(UNRECOGNIZED_OPERATION))
    sink = getattr(msg, "_dataset_file", None)
    if sink is not None:
        sink.close()
    try:
        self.dimse.send_msg(failure_response(msg), context_id)
    except Exception as error:  # a request too broken to answer: end the association
        log.warning("dimse_unanswerable", message=msg.msg_type, error=str(error)[:200])
        self.abort()


# response parameter ← request parameters that may hold its value (PS3.7 9.1, 10.1)
_ECHOED = {"AffectedSOPClassUID": ("AffectedSOPClassUID", "RequestedSOPClassUID"),
           "AffectedSOPInstanceUID": ("AffectedSOPInstanceUID", "RequestedSOPInstanceUID")}


def failure_response(request):
    """The response primitive of ``request``'s type with Status Unrecognized Operation."""
    response = type(request)()
    response.MessageIDBeingRespondedTo = request.MessageID
    for name, sources in _ECHOED.items():
        values = [getattr(request, s, None) for s in sources]
        if hasattr(response, name) and any(v is not None for v in values):
            setattr(response, name, next(v for v in values if v is not None))
    response.Status = UNRECOGNIZED_OPERATION
    return response


PATCHES = {(association.Association, "_serve_request"): (_ORIGINAL_SERVE, serve_request)}
