"""Results reach the destination (dcmtk storescp) even when it is down at first and the node is
restarted meanwhile: once it is up, SEG and SR arrive, once each."""

from __future__ import annotations

import os
import subprocess
import time

import pydicom
import pytest

from tests.conftest import REPO, free_port, require_tool
from tests.integration.dcmtk import store_responses, storescu
from tests.integration.nodeproc import (
    NodeProcess, add_destination, wait_for_port, wait_until, write_config)

pytestmark = pytest.mark.integration
SAMPLE = REPO / "sample_dicom" / "series"
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def test_results_wait_for_a_destination_that_is_down_and_survive_a_restart(tmp_path):
    port, pacs_port = free_port(), free_port()
    config = write_config(tmp_path / "node.toml", tmp_path / "var", port, workers=1)
    add_destination(config, pacs_port, "PACS",
                    outbox="retry_initial_s = 1.0\nretry_max_s = 2.0\ncheck_interval_s = 0.5")
    node = NodeProcess(config, port, tmp_path / "node.log").start()
    try:
        assert store_responses(storescu(port, SAMPLE)) == ["(Success)"] * 80
        failing = wait_until(lambda: (s := node.status())["outbox"].get("pending") == 3
                             and "result_not_sent" in (tmp_path / "node.log").read_text() and s,
                             what="results pending after failed sends")
    finally:
        node.stop()
    assert failing["series"][0]["state"] == "done"
    received = tmp_path / "pacs"
    received.mkdir()
    pacs = subprocess.Popen([require_tool("storescp"), "-aet", "PACS", "-od", str(received),
                             str(pacs_port)], env={**os.environ, "TCP_NODELAY": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    node = NodeProcess(config, port, tmp_path / "node2.log").start()
    try:
        wait_for_port(pacs_port)
        wait_until(lambda: node.status()["outbox"] == {"sent": 3}, what="the three results sent")
        time.sleep(2)  # a second send would happen within this time
    finally:
        node.stop()
        pacs.terminate()
        pacs.wait(10)
    files = sorted(received.iterdir())
    classes = sorted(pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID for p in files)
    assert classes == sorted([SEG_SOP_CLASS, COMPREHENSIVE_3D_SR, SECONDARY_CAPTURE])
    study = pydicom.dcmread(next(SAMPLE.glob("*.dcm")), stop_before_pixels=True)
    assert {pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in files} == {
        study.StudyInstanceUID}


def test_a_destination_that_is_back_gets_its_results_before_the_backoff_ends(tmp_path):
    port, pacs_port = free_port(), free_port()
    config = write_config(tmp_path / "node.toml", tmp_path / "var", port, workers=1)
    add_destination(config, pacs_port, "PACS", outbox="retry_initial_s = 3600.0\n"
                    "retry_max_s = 3600.0\ncheck_interval_s = 0.5\nprobe_interval_s = 1.0")
    node = NodeProcess(config, port, tmp_path / "node.log").start()
    received = tmp_path / "pacs"
    received.mkdir()
    pacs = None
    try:
        assert store_responses(storescu(port, SAMPLE)) == ["(Success)"] * 80
        wait_until(lambda: "result_not_sent" in (tmp_path / "node.log").read_text(),
                   what="a failed first send")
        pacs = subprocess.Popen([require_tool("storescp"), "-aet", "PACS", "-od", str(received),
                                 str(pacs_port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_until(lambda: node.status()["outbox"] == {"sent": 3}, timeout=60,
                   what="the three results sent long before the hour's backoff ends")
    finally:
        node.stop()
        if pacs is not None:
            pacs.terminate()
            pacs.wait(10)
    assert len(list(received.iterdir())) == 3
    assert "destination_answers" in (tmp_path / "node.log").read_text()
