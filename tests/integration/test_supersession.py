"""A series analysed again: the new SEG, SR and result image join the old ones' series as the
next instance, and the new SR names the old one in its Predecessor Documents Sequence."""

from __future__ import annotations

import pydicom
import pytest

from cdss_node.analysis import Analyzer
from cdss_node.config import Config, NodeSection
from cdss_node.dicom.sr import Version
from cdss_node.jobs import AnalysisSettings
from cdss_node.uids import result_series_uid
from cdss_node.worker import Worker
from tests.conftest import REPO
from tests.integration.test_dicom_outputs import dciodvfy_errors, pixelmed_errors

pytestmark = pytest.mark.integration
SAMPLE = sorted((REPO / "sample_dicom" / "series").glob("*.dcm"))


def device_observer_uid(sr) -> str:
    """TID 1004 row: (121012, DCM, "Device Observer UID") of the report's observation context."""
    return next(item.UID for item in sr.ContentSequence
                if item.ConceptNameCodeSequence[0].CodeValue == "121012")


def test_second_analysis_supersedes_the_first(tmp_path):
    analyzer = Analyzer(AnalysisSettings(device="cpu", data_dir=str(tmp_path)))
    analyzer.analyze(SAMPLE, tmp_path / "g1", version=Version(1))
    first_sr = pydicom.dcmread(tmp_path / "g1" / "sr.dcm")
    analyzer.analyze(SAMPLE, tmp_path / "g2", version=Version(2, previous=first_sr))
    seg1, seg2 = (pydicom.dcmread(tmp_path / g / "seg.dcm") for g in ("g1", "g2"))
    second_sr = pydicom.dcmread(tmp_path / "g2" / "sr.dcm")
    assert seg1.SeriesInstanceUID == seg2.SeriesInstanceUID and seg2.InstanceNumber == 2
    assert first_sr.SeriesInstanceUID == second_sr.SeriesInstanceUID
    assert second_sr.InstanceNumber == 2 and seg1.SOPInstanceUID != seg2.SOPInstanceUID
    predecessor = second_sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]\
        .ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == first_sr.SOPInstanceUID
    node_uid = (tmp_path / "device_uid").read_text().strip()     # one device made both reports
    assert device_observer_uid(first_sr) == device_observer_uid(second_sr) == node_uid
    sc1, sc2 = (pydicom.dcmread(tmp_path / g / "sc.dcm") for g in ("g1", "g2"))
    assert sc1.SeriesInstanceUID == sc2.SeriesInstanceUID != seg1.SeriesInstanceUID
    assert (sc1.InstanceNumber, sc2.InstanceNumber) == (1, 2)
    assert sc1.SOPInstanceUID != sc2.SOPInstanceUID
    assert dciodvfy_errors(tmp_path / "g2" / "sr.dcm") == []
    assert dciodvfy_errors(tmp_path / "g2" / "sc.dcm") == []
    assert pixelmed_errors(tmp_path / "g2" / "sr.dcm") == []


def test_worker_hands_the_latest_earlier_sr_to_the_next_analysis(tmp_path):
    worker = Worker(Config(node=NodeSection(data_dir=str(tmp_path))), index=None,
                    spool_root=tmp_path)
    series = worker.results_root / "1.2.3"
    for generation in (1, 2):
        (series / f"g{generation}").mkdir(parents=True)
    ds = pydicom.Dataset()        # an SR of the node's SR series for this CT series
    ds.SeriesInstanceUID = result_series_uid("1.2.3", "SR")
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.34", "1.2.3.9"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.save_as(series / "g1" / "sr.dcm", enforce_file_format=True)
    assert worker._previous_sr("1.2.3", 3) == str(series / "g1" / "sr.dcm")
    assert worker._previous_sr("1.2.3", 1) == ""
