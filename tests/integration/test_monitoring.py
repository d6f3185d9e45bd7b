"""The HTTP side port as IT uses it: after a series is sent (dcmtk storescu) and analysed and the
results taken by a PACS (dcmtk storescp), /healthz is healthy and names the loaded model,
/metrics counts what happened, a rejected calling AE is counted and listed, and the status page
shows the series in headless Chromium (screenshot). A node whose model cannot load answers 503."""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pydicom
import pytest

from cdss_node.jobs import DEFAULT_BUNDLE
from cdss_node.model.bundle import bundle_sha256, read_manifest
from cdss_node.node import Node
from tests.conftest import REPO, free_port, node_config, require_tool
from tests.integration.dcmtk import store_responses, storescu
from tests.integration.nodeproc import (
    NodeProcess, add_destination, parse_metrics, wait_for_port, wait_until, write_config)

pytestmark = pytest.mark.integration
SAMPLE = REPO / "sample_dicom" / "series"
SCREENSHOT = "status-page.png"


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    """A node with a PACS; one series sent and analysed, one association rejected."""
    tmp = tmp_path_factory.mktemp("monitored")
    port, http, pacs_port = free_port(), free_port(), free_port()
    config = write_config(tmp / "node.toml", tmp / "var", port, workers=1, http_port=http)
    add_destination(config, pacs_port, "PACS", outbox="check_interval_s = 0.5")
    text = config.read_text().replace("[node]", '[security]\nallowed_calling_aets = '
                                      '["STORESCU"]\n[node]')
    config.write_text(text)
    (tmp / "pacs").mkdir()
    pacs = subprocess.Popen([require_tool("storescp"), "-aet", "PACS", "-od", str(tmp / "pacs"),
                             str(pacs_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    node = NodeProcess(config, port, tmp / "node.log").start()
    try:
        wait_for_port(pacs_port)
        assert store_responses(storescu(port, SAMPLE)) == ["(Success)"] * 80
        rogue = storescu(port, SAMPLE / sorted(p.name for p in SAMPLE.iterdir())[0],
                         aet="INTRUDER")
        assert rogue.returncode != 0
        wait_until(lambda: node.status()["outbox"].get("sent") == 3,
                   what="SEG, SR and result image sent")
        yield {"http": http, "tmp": tmp, "status": node.status()}
    finally:
        node.stop()
        pacs.terminate()
        pacs.wait(10)


def test_healthz_is_ok_and_names_the_model_the_analysis_process_loaded(monitored):
    status, body = get(monitored["http"], "/healthz")
    report = json.loads(body)
    assert status == 200 and report["status"] == "ok", report
    assert {c["name"] for c in report["checks"] if c["ok"]} == {
        "index_writable", "spool_writable", "disk_headroom", "model_loaded",
        "scheduler_alive"}
    assert report["model"]["sha256"] == bundle_sha256(read_manifest(DEFAULT_BUNDLE))
    assert report["model"]["synthetic"] is True


def test_the_sr_at_the_pacs_names_the_node_s_device_uid_that_healthz_shows(monitored):
    from tests.integration.test_supersession import device_observer_uid

    device_uid = json.loads(get(monitored["http"], "/healthz")[1])["model"]["device_uid"]
    assert device_uid == (monitored["tmp"] / "var" / "device_uid").read_text().strip()
    reports = [ds for ds in map(pydicom.dcmread, (monitored["tmp"] / "pacs").iterdir())
               if ds.Modality == "SR"]
    assert [device_observer_uid(sr) for sr in reports] == [device_uid]


def test_metrics_count_the_series_its_analysis_its_delivery_and_the_rejection(monitored):
    status, body = get(monitored["http"], "/metrics")
    found = parse_metrics(body)
    assert status == 200
    assert found[("cdss_instances_received_total", ())] == 80
    assert found[("cdss_series", (("state", "done"),))] == 1
    assert found[("cdss_queue_depth", ())] == 0
    assert found[("cdss_outbox", (("state", "sent"),))] == 3
    assert found[("cdss_outbox", (("state", "dead"),))] == 0
    assert found[("cdss_analysis_seconds_count", ())] == 1
    assert found[("cdss_roundtrip_seconds_count", ())] == 1
    assert 0 < found[("cdss_roundtrip_seconds_sum", ())] < 600
    rejected = (("reason", "calling AE title not allowed"),)
    assert found[("cdss_association_rejections_total", rejected)] == 1
    model = [k for k in found if k[0] == "cdss_model_loaded"]
    assert len(model) == 1 and dict(model[0][1])["synthetic"] == "true"


def test_the_status_page_shows_the_series_and_chromium_renders_it(monitored):
    status, page = get(monitored["http"], "/")
    series = monitored["status"]["series"][0]
    assert status == 200 and series["series_uid"] in page
    assert "EGFR" in page and "SYNTHETIC" in page and "INTRUDER" in page
    assert "PatientName" not in page and "SYNTHETIC^" not in page  # no identity by default
    shot = monitored["tmp"] / SCREENSHOT
    subprocess.run([require_tool("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
                    f"--screenshot={shot}", "--window-size=1400,1000",
                    f"http://127.0.0.1:{monitored['http']}/"], check=True, timeout=120,
                   capture_output=True)
    assert shot.stat().st_size > 20_000
    keep = Path(REPO / "var" / "screenshots")
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / SCREENSHOT)   # for a person to look at


def test_a_node_whose_model_cannot_load_answers_503_and_says_why(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, bundle)
    (bundle / "fold_3.safetensors").write_bytes(b"damaged")
    port, http = free_port(), free_port()
    config = write_config(tmp_path / "node.toml", tmp_path / "var", port, workers=1,
                          http_port=http)
    with open(config, "a") as f:
        f.write(f'bundle = "{bundle}"\n')
    node = NodeProcess(config, port, tmp_path / "node.log").start()
    try:
        wait_until(lambda: "analysis_unavailable" in (tmp_path / "node.log").read_text(),
                   timeout=120, what="the analysis process failing to start")
        status, body = get(http, "/healthz")
    finally:
        node.stop()
    report = json.loads(body)
    failing = [c for c in report["checks"] if not c["ok"]]
    assert status == 503 and [c["name"] for c in failing] == ["model_loaded"]
    assert "fold_3.safetensors" in report["last_error"]["error"]


def test_model_use_switches_the_running_node_to_the_installed_model(tmp_path):
    from tests.unit.test_model_installed import bundle_version

    port, http = free_port(), free_port()
    config = write_config(tmp_path / "node.toml", tmp_path / "var", port, workers=1,
                          http_port=http)
    node = NodeProcess(config, port, tmp_path / "node.log").start()
    try:
        version = lambda: (json.loads(get(http, "/healthz")[1])["model"] or {}).get("version")
        assert wait_until(version, timeout=120, what="the default model loaded") == "0.3"
        installed = node.cli("model", "install", str(bundle_version(tmp_path, "0.4")), "--use")
        assert installed.returncode == 0, installed.stderr
        assert wait_until(lambda: version() == "0.4", timeout=120, what="the new model loaded")
        listed = node.cli("model", "list").stdout
    finally:
        node.stop()
    assert "* cdss-egfr-synthetic-radiomics-clinical-0.4" in listed


def test_a_disk_below_the_reserve_is_refused_0xA700_counted_listed_and_unhealthy(tmp_path):
    port, http = free_port(), free_port()
    config = write_config(tmp_path / "node.toml", tmp_path / "var", port, http_port=http)
    config.write_text(config.read_text().replace("reserve_mb = 0", "reserve_mb = 100000000"))
    node = NodeProcess(config, port, tmp_path / "node.log").start()
    try:
        first = sorted(SAMPLE.iterdir())[0]
        responses = store_responses(storescu(port, first))
        health_status, body = get(http, "/healthz")
        metrics = parse_metrics(get(http, "/metrics")[1])
        page = get(http, "/")[1]
    finally:
        node.stop()
    assert responses == ["(Refused: OutOfResources)"]        # storescu's words for 0xA700
    failing = [c["name"] for c in json.loads(body)["checks"] if not c["ok"]]
    assert health_status == 503 and failing == ["disk_headroom"]
    reserve = (("reason", "disk below the configured reserve"), ("status", "0xa700"))
    assert metrics[("cdss_store_refusals_total", reserve)] >= 1
    assert "0xa700" in page and "disk below the configured reserve" in page


def test_a_spool_that_cannot_take_a_file_is_refused_0xA700_and_unhealthy(node, small_series):
    """Bytes free but no file can be made (inodes used up, a read-only remount, a broken
    folder): root ignores permission bits, so the spool's temporary folder becomes a file."""
    wait_until(lambda: get(node.http.port, "/healthz")[0] == 200, timeout=30, interval=0.1,
               what="a healthy node")
    shutil.rmtree(node.spool.tmp)
    node.spool.tmp.write_text("not a folder\n")
    responses = store_responses(storescu(node.config.node.port, small_series.files[0]))
    status, body = get(node.http.port, "/healthz")
    assert responses == ["(Refused: OutOfResources)"]
    failing = [c for c in json.loads(body)["checks"] if not c["ok"]]
    assert status == 503 and [c["name"] for c in failing] == ["spool_writable"]
    assert failing[0]["detail"] == (f"cannot write a file in {node.spool.root}: Not a directory: "
                                    "C-STORE is refused with 0xA700")
    node.spool.tmp.unlink()
    node.spool.tmp.mkdir()
    assert get(node.http.port, "/healthz")[0] == 200
    assert [p.name for p in node.spool.root.iterdir()] == [".tmp"]    # no probe left behind


def reset(connection: socket.socket) -> None:
    """Close with a TCP reset, as a client that gives up does."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


def handled(log: Path) -> int:
    """Clients gone, as the node logs them, or as http.server printed them before."""
    text = log.read_text()
    return text.count("http_client_gone") + text.count("Exception occurred during processing")


def test_clients_that_leave_early_are_one_json_line_each_and_no_traceback(tmp_path):
    port, http = free_port(), free_port()
    config = write_config(tmp_path / "node.toml", tmp_path / "var", port, http_port=http,
                          level="debug")
    node = NodeProcess(config, port, tmp_path / "node.log").start()   # stdout and stderr
    try:
        wait_for_port(http)
        for request, close in [(b"GET /healthz HTTP/1.1\r\nHost: node\r\n", reset),
                               (b"GET / HTTP/1.1\r\nHost: node\r\n\r\n", reset),
                               (b"GET /healthz HTTP/1.1\r\n", socket.socket.close),
                               (b"GET /metrics HTTP/1.1\r\n\r\n", socket.socket.close)]:
            with socket.create_connection(("127.0.0.1", http)) as client:
                client.sendall(request)
                if not request.endswith(b"\r\n\r\n"):
                    time.sleep(0.2)          # the node waits for the rest of the request
                close(client)
        wait_until(lambda: handled(tmp_path / "node.log") >= 2, timeout=30, interval=0.1,
                   what="the two clients that reset gone")   # the others may leave unnoticed
        assert get(http, "/healthz")[0] == 200
        time.sleep(0.5)
    finally:
        assert node.stop() == 0
    lines = (tmp_path / "node.log").read_text().splitlines()
    events = [json.loads(line) for line in lines]     # every line is JSON
    gone = [e for e in events if e["event"] == "http_client_gone"]
    assert len(gone) >= 2 and {e["error"] for e in gone} <= {"ConnectionResetError",
                                                             "BrokenPipeError"}
    assert all(e["level"] == "debug" and "exception" not in e for e in gone)


def test_the_page_names_the_patient_only_when_configured(tmp_path, small_series):
    from dataclasses import replace

    from cdss_node.config import HttpSection
    from cdss_node.node import Node
    from tests.conftest import node_config

    header = pydicom_header(small_series.files[0])
    for shown in (False, True):
        config = node_config(tmp_path / f"var-{shown}")
        node = Node(replace(config, http=HttpSection(port=0, show_patient_identity=shown)))
        node.start()
        try:
            assert store_responses(storescu(config.node.port, *small_series.files[:2])) == [
                "(Success)"] * 2
            page = get(node.http.port, "/")[1]
        finally:
            node.stop()
        assert (str(header.PatientID) in page) is shown
        assert (str(header.PatientName) in page) is shown


def pydicom_header(path: Path):
    import pydicom

    return pydicom.dcmread(path, stop_before_pixels=True)


def test_a_client_that_sends_nothing_is_let_go(monkeypatch, tmp_path):
    """http.server waits for a silent client forever, a thread each: the node lets it go."""
    from cdss_node.monitor import server

    monkeypatch.setattr(server, "CLIENT_TIMEOUT_S", 1.0)
    node = Node(node_config(tmp_path / "var"))
    node.start()
    try:
        silent = socket.create_connection(("127.0.0.1", node.http.port))
        silent.settimeout(10)
        started = time.monotonic()
        assert silent.recv(1024) == b""            # closed by the node
        assert time.monotonic() - started < 5
        assert get(node.http.port, "/healthz")[0] in (200, 503)
    finally:
        node.stop()
