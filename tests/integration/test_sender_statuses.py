"""The sender reads every status a PACS returns: a warning that says the object was stored
(0xB000 coercion, 0xB007, 0xB006) is stored and not sent again; an object whose SOP class the
PACS did not accept fails alone, and the rest of the association still goes out."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import Comprehensive3DSRStorage, CTImageStorage, SegmentationStorage

from cdss_node.dicom.sender import store_files
from tests.conftest import free_port

pytestmark = pytest.mark.integration


def dicom_file(folder: Path, name: str, sop_class: str) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.PatientID = "X"
    path = folder / name
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def pacs():
    """Accepts SEG and CT (not SR); answers SEG with 0xB000 and CT with 0xA700."""
    ae = AE(ae_title="PACS")
    ae.add_supported_context(SegmentationStorage, ExplicitVRLittleEndian)
    ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    answers = {SegmentationStorage: 0xB000, CTImageStorage: 0xA700}
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[
        (evt.EVT_C_STORE, lambda event: answers[event.context.abstract_syntax])])
    yield port
    server.shutdown()


def test_each_file_has_its_own_outcome(tmp_path, pacs):
    files = [dicom_file(tmp_path, "sr.dcm", Comprehensive3DSRStorage),
             dicom_file(tmp_path, "seg.dcm", SegmentationStorage),
             dicom_file(tmp_path, "ct.dcm", CTImageStorage)]
    results = store_files(files, "PACS", "127.0.0.1", pacs)
    assert [(r.path.name, r.status, r.ok) for r in results] == [
        ("sr.dcm", None, False),        # no accepted context: fails alone
        ("seg.dcm", 0xB000, True),      # coerced, but stored
        ("ct.dcm", 0xA700, False)]      # refused: retried later
