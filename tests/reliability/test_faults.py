"""kill -9 of the node at each step after ingest, with a real PACS (dcmtk storescp, or a
pynetdicom SCP that stalls), then a restart: the series is analysed, its SEG and SR reach the
PACS once each (by SOP Instance UID), nothing stays pending, and no analysis process of the
killed node lives on. (kill -9 during ingest: tests/integration/test_crash.py; a destination
down for a while and a restart: tests/integration/test_outbox_delivery.py; the disk at its
reserve: tests/integration/test_monitoring.py.)"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    Comprehensive3DSRStorage, SecondaryCaptureImageStorage, SegmentationStorage)

from tests.conftest import REPO, free_port, require_tool
from tests.integration.dcmtk import store_responses, storescu
from tests.integration.nodeproc import (
    NodeProcess, add_destination, wait_for_port, wait_until, write_config)
from tests.reliability.loadrun import children

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SAMPLE = REPO / "sample_dicom" / "series"
OUTBOX = "retry_initial_s = 1.0\nretry_max_s = 2.0\ncheck_interval_s = 0.5\nprobe_interval_s = 1.0"


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def sop_instances(folder: Path) -> dict[str, set[str]]:
    """SOP Class UID → the distinct SOP Instance UIDs the PACS holds."""
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*"):
        if path.is_file():
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            found.setdefault(ds.SOPClassUID, set()).add(ds.SOPInstanceUID)
    return found


def node_with_pacs(tmp: Path, pacs_port: int) -> NodeProcess:
    port = free_port()
    config = write_config(tmp / "node.toml", tmp / "var", port, workers=1)
    add_destination(config, pacs_port, "PACS", outbox=OUTBOX)
    return NodeProcess(config, port, tmp / "node.log")


def storescp(folder: Path, port: int) -> subprocess.Popen:
    folder.mkdir(exist_ok=True)
    return subprocess.Popen([require_tool("storescp"), "-aet", "PACS", "-od", str(folder),
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def settled_once(node: NodeProcess, pacs_folder: Path) -> dict:
    """Wait until the three results are sent; then the series is done and the PACS holds one
    SEG, one SR and one result image (a second send would come within the pause)."""
    status = wait_until(lambda: (s := node.status())["outbox"] == {"sent": 3} and s,
                        what="SEG, SR and result image sent")
    time.sleep(2.0)
    assert node.status()["outbox"] == {"sent": 3}
    assert [s["state"] for s in status["series"]] == ["done"]
    held = sop_instances(pacs_folder)
    assert {k: len(v) for k, v in held.items()} == {
        SegmentationStorage: 1, Comprehensive3DSRStorage: 1, SecondaryCaptureImageStorage: 1}
    return status


def test_kill_9_during_analysis_analyses_again_and_sends_once(tmp_path):
    pacs_port = free_port()
    pacs = storescp(tmp_path / "pacs", pacs_port)
    node = node_with_pacs(tmp_path, pacs_port).start()
    try:
        wait_for_port(pacs_port)
        assert store_responses(storescu(node.port, SAMPLE)) == ["(Success)"] * 80
        wait_until(lambda: node.status()["series"][0]["state"] == "processing", interval=0.1,
                   what="the analysis running")
        orphans = [p for p in children(node.proc.pid) if alive(p)]
        node.kill9()
        assert orphans, "no analysis process found"
        wait_until(lambda: not any(alive(p) for p in orphans), timeout=2, interval=0.05,
                   what="the killed node's analysis process gone with it (not finishing its "
                   "job and writing results beside the restarted node's)")
        node.start()
        settled_once(node, tmp_path / "pacs")
    finally:
        node.stop()
        pacs.terminate()
        pacs.wait(10)


def test_kill_9_with_results_written_but_not_sent_sends_them_once_after_restart(tmp_path):
    pacs_port = free_port()
    node = node_with_pacs(tmp_path, pacs_port).start()     # the PACS is down
    pacs = None
    try:
        assert store_responses(storescu(node.port, SAMPLE)) == ["(Success)"] * 80
        wait_until(lambda: "result_not_sent" in (tmp_path / "node.log").read_text(),
                   what="a failed send")
        node.kill9()
        pacs = storescp(tmp_path / "pacs", pacs_port)
        wait_for_port(pacs_port)
        node.start()
        settled_once(node, tmp_path / "pacs")
    finally:
        node.stop()
        if pacs is not None:
            pacs.terminate()
            pacs.wait(10)


class StallingPacs:
    """A Storage SCP that keeps every dataset and, while ``stall`` is set, holds its answer
    to an SR until released (so that the node can be killed in the middle of sending)."""

    def __init__(self, port: int):
        self.received: list[pydicom.Dataset] = []
        self.stall, self.stalling, self.release = (threading.Event() for _ in range(3))
        self.stall.set()
        ae = AE(ae_title="PACS")
        for sop_class in (SegmentationStorage, Comprehensive3DSRStorage,
                          SecondaryCaptureImageStorage):
            ae.add_supported_context(sop_class)
        self.server = ae.start_server(("127.0.0.1", port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._on_store)])

    def _on_store(self, event) -> int:
        dataset = event.dataset
        if dataset.SOPClassUID == Comprehensive3DSRStorage and self.stall.is_set():
            self.stalling.set()
            self.release.wait(60)
            return 0xA700         # the node is gone by now; nobody reads this
        self.received.append(dataset)
        return 0x0000

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()


def test_kill_9_during_sending_sends_the_rest_once_after_restart(tmp_path):
    pacs_port = free_port()
    pacs = StallingPacs(pacs_port)
    node = node_with_pacs(tmp_path, pacs_port).start()
    try:
        assert store_responses(storescu(node.port, SAMPLE)) == ["(Success)"] * 80
        assert pacs.stalling.wait(240), "the node never sent its SR"
        node.kill9()
        pacs.stall.clear()
        pacs.release.set()
        node.start()
        wait_until(lambda: node.status()["outbox"] == {"sent": 3},
                   what="SEG, SR and result image sent")
        time.sleep(2.0)
    finally:
        node.stop()
        pacs.stop()
    held: dict[str, set[str]] = {}
    for dataset in pacs.received:
        held.setdefault(dataset.SOPClassUID, set()).add(dataset.SOPInstanceUID)
    assert {k: len(v) for k, v in held.items()} == {
        SegmentationStorage: 1, Comprehensive3DSRStorage: 1, SecondaryCaptureImageStorage: 1}
    assert node.status()["series"][0]["state"] == "done"


def test_no_line_of_the_faulted_nodes_logs_names_the_patient(tmp_path):
    """The sample's patient name, ID and birth date appear in no log line above (run last)."""
    header = pydicom.dcmread(next(SAMPLE.glob("*.dcm")), stop_before_pixels=True)
    secrets = [str(header.PatientName), str(header.PatientID),
               str(header.get("PatientBirthDate", ""))]
    logs = list(Path(os.environ.get("PYTEST_TMP", tmp_path.parent)).rglob("node*.log"))
    assert logs, "no node logs to check"
    for log in logs:
        text = log.read_text(errors="replace")
        for secret in filter(None, secrets):
            assert secret not in text, f"{secret!r} in {log}"
