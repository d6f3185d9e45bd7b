"""Query/Retrieve SCU: find a study's series on the hospital PACS and fetch one of them.

DICOM Query/Retrieve (PS3.4 Annex C), always with the Study Root information model:

- C-FIND at SERIES level: the PACS answers one Pending response per matching series, each
  with an identifier holding the requested keys, then a final Success.
- C-MOVE at SERIES level: the PACS opens its own association to the AE named in Move
  Destination (the node's receiver, which the PACS must know by AE title, host and port) and
  sends every instance there with C-STORE sub-operations.
- C-GET at SERIES level: the PACS sends the instances back as C-STORE requests on the same
  association; the requestor proposes the storage SOP classes and takes the SCP role for
  them (SCP/SCU Role Selection, PS3.7 D.3.3.4).

A C-MOVE or C-GET ends with a final response whose status and counts of completed, failed and
warning sub-operations say what arrived; ``RetrieveOutcome`` keeps them. Each association
waits for the peer at most ``timeout_s`` at a time, and pynetdicom aborts it when that runs
out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import pynetdicom
from pydicom import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from pynetdicom.status import code_to_category

from cdss_node.config import Destination
from cdss_node.dicom import sender, sop, transport
from cdss_node.logs import get_logger

log = get_logger(__name__)
Association = pynetdicom.association.Association
Responses = Iterator[tuple[Dataset, Dataset | None]]   # (status, identifier) pairs
Answers = list[tuple[Dataset, Dataset | None]]

SUCCESS, WARNING = 0x0000, 0xB000
PENDING = frozenset({0xFF00, 0xFF01})
CONNECT_TIMEOUT_S = 30.0      # TCP connect and A-ASSOCIATE wait, at most
# Final statuses of C-MOVE and C-GET with a meaning worth telling a person (PS3.4 C.4.2.1.5,
# C.4.3.1.4); any other is reported by its code and category.
MEANINGS = {0xA701: "out of resources: cannot count matches",
            0xA702: "out of resources: cannot perform sub-operations",
            0xA801: "move destination unknown", 0xA900: "identifier does not match SOP class",
            0xFE00: "sub-operations cancelled"}


class RetrieveFailed(RuntimeError):
    """No association, or the PACS refused the query; message is one line for a person."""


@dataclass(frozen=True)
class RetrieveOutcome:
    """What a C-MOVE or C-GET of one series came to, as the PACS's final response says."""

    method: str                # "move" or "get"
    status: int | None         # the final response's status; None if no final response came
    completed: int
    failed: int
    warning: int
    error: str | None = None   # one line for a person when not ok

    @property
    def ok(self) -> bool:
        """Every sub-operation done (Success), or some with failures (Warning 0xB000)
        but at least one instance stored; and nothing else went wrong."""
        return self.error is None and (self.status == SUCCESS
                                       or (self.status == WARNING and self.completed > 0))


def _ae(calling_aet: str, timeout_s: float) -> AE:
    """An AE whose associations wait for the peer at most ``timeout_s`` at a time (the
    connection and the association's acceptance at most ``CONNECT_TIMEOUT_S``)."""
    ae = AE(ae_title=calling_aet)
    ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.acse_timeout = ae.connection_timeout = min(timeout_s, CONNECT_TIMEOUT_S)
    return ae


def _associate(ae: AE, source: Destination, **kwargs) -> Association:
    """An association with the PACS (over TLS where ``source.tls``); RetrieveFailed if none."""
    where = f"{source.ae_title}@{source.host}:{source.port}{' over TLS' if source.tls else ''}"
    try:
        assoc = ae.associate(source.host, source.port, ae_title=source.ae_title,
                             tls_args=sender.client_tls(source), **kwargs)
    except (OSError, ValueError) as error:   # TLS files unreadable, say
        raise RetrieveFailed(f"no association with {where}: {error}") from error
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "no answer or connection refused"
        raise RetrieveFailed(f"no association with {where} ({why})")
    return assoc


def _identifier(**keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def find_series(source: Destination, calling_aet: str, study_uid: str, modality: str = "CT",
                timeout_s: float = 60.0) -> list[str]:
    """Series Instance UIDs of the study with that modality (Study Root C-FIND, SERIES level).
    Raises RetrieveFailed."""
    ae = _ae(calling_aet, timeout_s)
    transport.never_serves(ae)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    query = _identifier(StudyInstanceUID=study_uid, Modality=modality, SeriesInstanceUID="")
    assoc = _associate(ae, source)
    try:
        answers, silence = _collect(
            lambda: assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
    finally:
        _end(assoc)
    last = answers[-1][0] if answers else Dataset()
    if _status(last) != SUCCESS:
        raise RetrieveFailed(f"C-FIND on {source.ae_title}@{source.host}:{source.port} "
                             f"failed: {_why(last, silence, ae)}")
    return [str(ident.SeriesInstanceUID) for _, ident in answers
            if ident is not None and ident.get("SeriesInstanceUID")]


def move_series(source: Destination, calling_aet: str, study_uid: str, series_uid: str,
                move_destination: str, timeout_s: float = 600.0) -> RetrieveOutcome:
    """Study Root C-MOVE at SERIES level; the PACS sends the instances to the AE
    ``move_destination`` (the node itself, over its own receiver). Never raises for a
    refused/failed move: the outcome says it."""
    ae = _ae(calling_aet, timeout_s)
    transport.never_serves(ae)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)

    def send(assoc, query):
        return assoc.send_c_move(query, move_destination,
                                 StudyRootQueryRetrieveInformationModelMove)
    return _retrieve("move", ae, source, study_uid, series_uid, send)


def get_series(source: Destination, calling_aet: str, study_uid: str, series_uid: str,
               on_store: Callable[[evt.Event], int | Dataset],
               timeout_s: float = 600.0,
               prepare: Callable[[Association], None] = lambda assoc: None,
               ) -> RetrieveOutcome:
    """Study Root C-GET at SERIES level on one association that offers the CT storage SOP
    classes, one presentation context per transfer syntax (so the PACS can send each instance
    as it holds it), with the SCP role; each received instance goes to ``on_store`` (an
    EVT_C_STORE handler, returns a status). ``prepare(assoc)`` is called on the established
    association before the C-GET request is sent. Never raises for a refused/failed get."""
    ae = _ae(calling_aet, timeout_s)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in sop.STORAGE_SOP_CLASSES:
        for syntax in sop.TRANSFER_SYNTAXES:
            ae.add_requested_context(sop_class, syntax)
    roles = [build_role(sop_class, scp_role=True) for sop_class in sop.STORAGE_SOP_CLASSES]

    def send(assoc, query):
        prepare(assoc)
        return assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
    return _retrieve("get", ae, source, study_uid, series_uid, send, ext_neg=roles,
                     evt_handlers=[(evt.EVT_C_STORE, on_store)])


def _retrieve(method: str, ae: AE, source: Destination, study_uid: str, series_uid: str,
              send: Callable[[Association, Dataset], Responses],
              **assoc_kwargs) -> RetrieveOutcome:
    """Associate, send the request, read every response, release; log the outcome."""
    query = _identifier(StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid)
    try:
        assoc = _associate(ae, source, **assoc_kwargs)
        try:
            outcome = _outcome(method, *_collect(lambda: send(assoc, query)), ae)
        finally:
            _end(assoc)
    except RetrieveFailed as error:
        outcome = RetrieveOutcome(method, None, 0, 0, 0, f"C-{method.upper()}: {error}")
    _log(outcome, study_uid, series_uid)
    return outcome


def _collect(send: Callable[[], Responses]) -> tuple[Answers, float]:
    """Send a request and read its responses (those with a status), and how long the PACS had
    been silent when they ended (pynetdicom yields an empty status when it stops waiting)."""
    try:
        responses = send()
    except ValueError as error:       # pynetdicom: the PACS accepted no context for it
        raise RetrieveFailed(f"the PACS accepted no presentation context: {error}") from error
    answers, since = [], time.monotonic()
    for status, identifier in responses:
        if "Status" in status:
            answers.append((status, identifier))
            since = time.monotonic()
    return answers, time.monotonic() - since


def _outcome(method: str, answers: Answers, silence: float, ae: AE) -> RetrieveOutcome:
    """The final response's status and counts (the last Pending's counts if none came)."""
    last = answers[-1][0] if answers else Dataset()
    final = None if _status(last) in PENDING else _status(last)
    counts = [int(last.get(f"Number{kind}Suboperations", 0) or 0)
              for kind in ("OfCompleted", "OfFailed", "OfWarning")]
    error = None
    if final in (SUCCESS, WARNING) and counts[0] == 0:
        error = f"C-{method.upper()}: the PACS sent no instance of the series ({final:#06x})"
    elif final not in (SUCCESS, WARNING):
        error = f"C-{method.upper()} failed: {_why(last, silence, ae)}"
    return RetrieveOutcome(method, final, *counts, error=error)


def _why(last: Dataset, silence: float, ae: AE) -> str:
    """A final status in words, or why none came: the PACS went silent (pynetdicom then
    aborted the association), or it ended the association (as Orthanc does to a calling AE
    it does not allow to query or retrieve)."""
    code = _status(last)
    if (code is None or code in PENDING) and silence >= ae.dimse_timeout * 0.99:
        return (f"no final response: the PACS stopped answering for {ae.dimse_timeout:g} s; "
                "association aborted")
    if code is None or code in PENDING:
        return ("no final response: the PACS ended the association (does it allow "
                f"{ae.ae_title} to query and retrieve?)")
    detail = "; ".join(w for w in (MEANINGS.get(code), str(last.get("ErrorComment", ""))) if w)
    return f"{code:#06x} ({code_to_category(code)}{': ' + detail if detail else ''})"


def _status(status: Dataset) -> int | None:
    return int(status.Status) if "Status" in status else None


def _end(assoc: Association) -> None:
    """Release an association still up (one whose peer stopped answering is aborted already)."""
    if assoc.is_established:
        assoc.release()


def _log(outcome: RetrieveOutcome, study_uid: str, series_uid: str) -> None:
    fields = dict(method=outcome.method, study_uid=study_uid, series_uid=series_uid,
                  completed=outcome.completed, failed=outcome.failed, warning=outcome.warning,
                  status=None if outcome.status is None else f"{outcome.status:#06x}")
    if outcome.ok:
        log.info("series_retrieved", **fields)
    else:
        log.warning("series_retrieve_failed", **fields, error=outcome.error)
