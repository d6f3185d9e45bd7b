"""A stand-in PACS for ``cdss-node demo``: a Storage SCP that keeps the SEG, SR and result
image it is sent.

The demo has no real PACS to send its results to, so it starts this one on 127.0.0.1 (a free
port) and names it as the node's only destination. What arrives is written to a folder, one
file per SOP instance, exactly as received, and described (:class:`Received`) so the demo can
show what a viewer would get.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    Comprehensive3DSRStorage, EnhancedSRStorage, SecondaryCaptureImageStorage,
    SegmentationStorage, Verification)

from cdss_node.config import Destination
from cdss_node.dicom.sr import report_summary

DEMO_PACS_AE = "DEMO_PACS"
SUCCESS = 0x0000
CANNOT_UNDERSTAND = 0xC000


@dataclass(frozen=True)
class Received:
    """One stored object as a person reads it."""

    path: Path
    modality: str
    series_description: str
    study_uid: str
    summary: tuple[str, ...]    # an SR's first lines (its Summary container); else empty

    @classmethod
    def of(cls, dataset: Dataset, path: Path) -> "Received":
        return cls(path, str(dataset.Modality), str(dataset.get("SeriesDescription", "")),
                   str(dataset.StudyInstanceUID), tuple(report_summary(dataset)))


@dataclass
class DemoPacs:
    """Start with :meth:`start`, stop with :meth:`stop`; received files are in ``folder``."""

    folder: Path
    received: list[Received] = field(default_factory=list)
    _server: object | None = None

    def start(self) -> Destination:
        self.folder.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=DEMO_PACS_AE)
        for sop_class in (SegmentationStorage, Comprehensive3DSRStorage, EnhancedSRStorage,
                          SecondaryCaptureImageStorage, Verification):
            ae.add_supported_context(sop_class)
        self._server = ae.start_server(("127.0.0.1", 0), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        port = self._server.server_address[1]
        return Destination(name="demo-pacs", ae_title=DEMO_PACS_AE, host="127.0.0.1", port=port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    def _on_store(self, event) -> int:
        try:
            dataset = event.dataset
            dataset.file_meta = event.file_meta
            path = self.folder / f"{dataset.Modality}_{dataset.SOPInstanceUID}.dcm"
            dataset.save_as(path, enforce_file_format=True)
        except Exception:  # noqa: BLE001 - a handler answers with a status, never raises
            return CANNOT_UNDERSTAND
        self.received.append(Received.of(dataset, path))
        return SUCCESS
