"""The node's desk for analyses asked for from outside: a radiologist's mark and
``cdss-node analyze-study`` (rows of ``store.requests``).

A mark (an SR the viewer saved, stored by the receiver in ``marks/``) is read here (header and
content tree; small). The node's own reports, reports whose observer is a device (CAD) and
SRs without spatial coordinates are ignored.
A usable mark asks for its CT series to be analysed again with the tumor at the mark: at once
when the series has finished and its files are in the spool; after the series finishes when it
is still receiving or being analysed; after a retrieval from the PACS (``[retrieve]``) when
its files have left the spool (the retrieved series completes as any series does, and its job
takes the mark). A mark that cannot be used is answered with a not-evaluable SR of its own,
keyed to the marking SR's series, so that the CT's earlier answer stands: no image reference,
or a series the PACS does not deliver (after RETRIEVE_ATTEMPTS tries, RETRY_AFTER_S apart).
A mark outside the lungs or with no lesion near it is found by the analysis of the CT, which
answers it the same way (``analysis.analyze_requested``).

An analyze-study request names one CT series of a study (the CLI finds them by C-FIND) and
takes the same path without a mark; one whose series cannot be had from the PACS fails (the
command says why) and leaves the series' earlier answer as it was.

Each round re-reads a request before it acts on it: the completion check and the worker move
requests too (a job takes a waiting request; a finished job ends it).
"""

from __future__ import annotations

import sqlite3
import time

import pydicom
from pydicom.errors import InvalidDicomError

from cdss_node.config import Config
from cdss_node.dicom.mark import MarkProblem, is_device_report, is_own_report, read_mark
from cdss_node.logs import get_logger
from cdss_node.pipeline.mark import Mark
from cdss_node.pipeline.reasons import NotEvaluableReason
from cdss_node.store import requests
from cdss_node.store.index import Index
from cdss_node.store.spool import Spool
from cdss_node.store.states import FINISHED, SeriesState

log = get_logger(__name__)

RETRIEVE_ATTEMPTS = 3       # a PACS that is down for a while gets this many tries
RETRY_AFTER_S = 60.0


class RequestDesk:
    """Takes each open request one step further; ``retrieve(series_uid, study_uid)`` fetches
    a series from the PACS into the node (True when the PACS delivered it)."""

    def __init__(self, config: Config, index: Index, spool: Spool, marks: Spool,
                 device_uid: str | None, retrieve=None, attempts: int = RETRIEVE_ATTEMPTS,
                 retry_after_s: float = RETRY_AFTER_S):
        self.config, self.index, self.spool, self.marks = config, index, spool, marks
        self.device_uid = device_uid
        self.retrieve = retrieve
        self.attempts, self.retry_after_s = attempts, retry_after_s
        self.stopping = False       # the node stops: a retrieval cut short is tried again

    def check(self) -> bool:
        """One round over the open requests; True if a job was queued."""
        queued = False
        for request_id in [r["id"] for r in requests.in_states(
                self.index, requests.RECEIVED, requests.WAITING)]:
            if self.stopping:
                break
            row = requests.get(self.index, request_id)      # as it is now, not at the start
            if row is None or row["state"] not in (requests.RECEIVED, requests.WAITING) \
                    or not self._due(row):
                continue
            queued |= self._take_safely(row)
        return queued

    def _take_safely(self, row: sqlite3.Row) -> bool:
        try:
            return self._take(row)
        except (OSError, sqlite3.Error) as error:     # tried again at the next round
            log.warning("request_not_taken", request_id=row["id"], error=repr(error)[:300])
        except Exception as error:  # a request the desk cannot take: ended, not tried forever
            log.exception("request_failed", request_id=row["id"])
            requests.update(self.index, row["id"], requests.FAILED,
                            f"cannot be taken: {type(error).__name__}: {error}"[:300])
        return False

    def _due(self, row: sqlite3.Row) -> bool:
        """A retrieval that failed is tried again only RETRY_AFTER_S later."""
        return not row["attempts"] or time.time() - row["updated_at"] >= self.retry_after_s

    def recover(self) -> int:
        """At start: a retrieval cut short is tried again; an SR file in ``marks/`` with no
        request (stored, then a crash before its row) gets one. Returns how many."""
        redo = requests.in_states(self.index, requests.RETRIEVING)
        for row in redo:
            requests.update(self.index, row["id"], requests.RECEIVED, "retrieval interrupted")
        added = 0
        for path in sorted(self.marks.root.rglob("*.dcm")) if self.marks.root.is_dir() else []:
            relative = str(path.relative_to(self.marks.root))
            if not requests.known_mark(self.index, relative, path.stem):
                study = relative.split("/", 1)[0]
                requests.add(self.index, requests.MARK, study, path=relative,
                             sop_instance_uid=path.stem)
                added += 1
        return len(redo) + added

    # ------------------------------------------------------------ one request

    def _take(self, row: sqlite3.Row) -> bool:
        if row["state"] == requests.WAITING:
            return self._when_finished(row)
        if row["kind"] == requests.STUDY:
            return self._analyse(row, row["series_uid"])
        return self._take_mark(row)

    def _take_mark(self, row: sqlite3.Row) -> bool:
        ds = self._read(row)
        if ds is None:
            return False
        if is_own_report(ds, self.device_uid):
            return self._ignore(row, "the node's own report")
        if is_device_report(ds):
            return self._ignore(row, "a device's report (observer type Device), not a "
                                "radiologist's mark")
        found = read_mark(ds)
        if found is None:
            return self._ignore(row, "no spatial coordinates (SCOORD, SCOORD3D): not a mark")
        if isinstance(found, MarkProblem):
            return self._refuse(row, ds, found.reason, found.detail)
        series_uid = found.series_uid or self._indexed_series(found)
        if not series_uid:
            return self._refuse(row, ds, NotEvaluableReason.MARK_WITHOUT_IMAGE,
                                "no CT series of the node or of the SR's evidence holds the "
                                "marked image")
        log.info("mark_read", request_id=row["id"], series_uid=series_uid,
                 mark=found.describe(), observer_named=bool(found.observer))
        return self._analyse(row, series_uid, ds)

    def _analyse(self, row: sqlite3.Row, series_uid: str, ds=None) -> bool:
        """Queue the series for the request, retrieving it first where its files are gone."""
        if not self._held(series_uid):
            return self._fetch(row, series_uid, ds)
        answer = self.index.queue_requested(row["id"], series_uid, row["study_uid"])
        log.info("request_" + answer, request_id=row["id"], kind=row["kind"],
                 series_uid=series_uid)
        return answer == "queued"

    def _fetch(self, row: sqlite3.Row, series_uid: str, ds) -> bool:
        if self.retrieve is None:
            return self._not_retrievable(row, series_uid, ds, "no [retrieve] source is set")
        requests.update(self.index, row["id"], requests.RETRIEVING, None, series_uid)
        try:
            delivered = self.retrieve(series_uid, row["study_uid"])
        except Exception as error:  # a retrieval that broke counts as one that failed
            log.exception("series_retrieve_broke", request_id=row["id"])
            delivered = False
        if self._state(series_uid) == SeriesState.RECEIVING:
            requests.update(self.index, row["id"], requests.WAITING,
                            None if delivered else "the retrieval failed part of the way")
            return False    # the series completes as received; its job takes the request
        if delivered and self._held(series_uid):                   # nothing new arrived
            return self.index.queue_requested(row["id"], series_uid, row["study_uid"]) \
                == "queued"
        return self._retry_or_give_up(row, series_uid, ds,
                                      "none of it arrived" if delivered
                                      else "the PACS did not deliver it")

    def _retry_or_give_up(self, row: sqlite3.Row, series_uid: str, ds, why: str) -> bool:
        if self.stopping or row["attempts"] + 1 < self.attempts:
            requests.retry(self.index, row["id"], f"retrieval failed ({why}); tried again "
                           f"in {self.retry_after_s:.0f} s", counts=not self.stopping)
            return False
        return self._not_retrievable(row, series_uid, ds, why)

    def _when_finished(self, row: sqlite3.Row) -> bool:
        state = self._state(row["series_uid"])
        if state is not None and state not in FINISHED:
            return False
        return self.index.queue_requested(row["id"], row["series_uid"],
                                          row["study_uid"]) == "queued"

    # ------------------------------------------------------------ answers

    def _ignore(self, row: sqlite3.Row, why: str) -> bool:
        requests.update(self.index, row["id"], requests.IGNORED, why)
        log.info("request_ignored", request_id=row["id"], why=why)
        return False

    def _refuse(self, row: sqlite3.Row, ds, reason: NotEvaluableReason, detail: str) -> bool:
        """A not-evaluable answer of the mark's own: a job on the marking SR's series, whose
        analysis writes the SR with ``reason`` (the CT's earlier answer stands)."""
        log.warning("mark_not_usable", request_id=row["id"], reason_code=reason.code,
                    detail=detail)
        return self.index.queue_requested(row["id"], str(ds.SeriesInstanceUID),
                                          row["study_uid"], modality="SR", reason=reason.name,
                                          detail=detail) == "queued"

    def _not_retrievable(self, row: sqlite3.Row, series_uid: str, ds, why: str) -> bool:
        detail = f"series {series_uid} is not in the spool and {why}"
        if ds is not None:
            return self._refuse(row, ds, NotEvaluableReason.SERIES_NOT_RETRIEVABLE, detail)
        requests.update(self.index, row["id"], requests.FAILED, detail, series_uid)
        log.warning("request_failed", request_id=row["id"], kind=row["kind"], detail=detail)
        return False        # nothing was analysed: the series' earlier answer stands

    # ------------------------------------------------------------ facts

    def _read(self, row: sqlite3.Row):
        try:
            return pydicom.dcmread(self.marks.root / row["path"])
        except (InvalidDicomError, OSError, ValueError, EOFError, TypeError) as error:
            self._ignore(row, f"unreadable SR file ({type(error).__name__})")
            return None

    def _indexed_series(self, mark: Mark) -> str:
        """The marked image's series, as the index knows it (or the study's newest CT series
        for a patient-coordinate mark)."""
        if mark.image_uid:
            rows = self.index.query("SELECT series_uid FROM instances WHERE sop_instance_uid=?",
                                    (mark.image_uid,))
        else:
            rows = self.index.query("SELECT series_uid FROM series WHERE study_uid=? AND "
                                    "modality='CT' ORDER BY last_received DESC LIMIT 1",
                                    (mark.study_uid,))
        return rows[0]["series_uid"] if rows else ""

    def _held(self, series_uid: str) -> bool:
        """The series' instances are indexed and their files are in the spool."""
        paths = self.index.series_paths(series_uid)
        return bool(paths) and all((self.spool.root / p).is_file() for p in paths)

    def _state(self, series_uid: str) -> str | None:
        """The series' state; None for a series the node never received."""
        rows = self.index.query("SELECT state FROM series WHERE series_uid=?", (series_uid,))
        return rows[0]["state"] if rows else None
