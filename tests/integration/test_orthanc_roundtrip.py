"""The whole round trip with Orthanc as the PACS: a CT stored in Orthanc is routed to the node
when stable, and the node's SEG, SR and result image come back into the same study, saying
what result.json says."""

from __future__ import annotations

import io
import json
import time

import highdicom as hd
import pydicom
import pytest

from tests.conftest import REPO, free_port
from tests.integration.dcmtk import store_responses, storescu
from tests.integration.nodeproc import NodeProcess, add_destination, write_config
from tests.integration.orthanc import Orthanc

pytestmark = pytest.mark.integration
SAMPLE = REPO / "sample_dicom" / "series"


def test_ct_in_orthanc_comes_back_with_seg_and_sr(tmp_path):
    port = free_port()
    pacs = Orthanc(tmp_path / "orthanc", node_port=port).start()
    config = write_config(tmp_path / "node.toml", tmp_path / "var", port, workers=1)
    add_destination(config, pacs.dicom_port, pacs.aet, outbox="check_interval_s = 0.5")
    node = NodeProcess(config, port, tmp_path / "node.log").start()
    study_uid = pydicom.dcmread(next(SAMPLE.glob("*.dcm")), stop_before_pixels=True)\
        .StudyInstanceUID
    try:
        sent = storescu(pacs.dicom_port, SAMPLE, aec=pacs.aet)
        assert store_responses(sent) == ["(Success)"] * 80
        series = _wait_for_modalities(pacs, study_uid, {"CT", "SEG", "SR", "OT"})
        sr_series = next(s for s in series if s["MainDicomTags"]["Modality"] == "SR")
        sr_bytes = pacs.get(f"/instances/{sr_series['Instances'][0]}/file")
    finally:
        node.stop()
        pacs.stop()
    assert sorted(s["MainDicomTags"]["Modality"] for s in series) == ["CT", "OT", "SEG", "SR"]
    assert [len(s["Instances"]) for s in series if s["MainDicomTags"]["Modality"] != "CT"] \
        == [1, 1, 1]
    result = json.loads(next((tmp_path / "var" / "results").rglob("result.json")).read_text())
    sr = hd.sr.srread(io.BytesIO(sr_bytes))
    group = sr.content.get_volumetric_roi_measurement_groups()[0]
    values = {m.name.meaning: m.value for m in group.get_measurements()}
    assert values["Probability"] == pytest.approx(result["prediction"]["probability"])
    evaluations = {e.name.meaning: e.value.meaning for e in group.get_qualitative_evaluations()}
    assert evaluations["EGFR mutation status (predicted)"] == result["prediction"]["label"]


def _wait_for_modalities(pacs: Orthanc, study_uid: str, wanted: set[str],
                         timeout: float = 300) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        series = pacs.series_of(study_uid)
        if {s["MainDicomTags"].get("Modality") for s in series} >= wanted:
            return series
        time.sleep(1)
    raise AssertionError(f"the study never held {wanted}: {pacs.series_of(study_uid)}")
