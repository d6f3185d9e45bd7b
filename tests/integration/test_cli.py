"""The node as IT runs it: serve, status, a clean stop, readable logs without patient identity."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.conftest import REPO, free_port, write_series
from tests.integration.dcmtk import echoscu, store_responses, storescu
from tests.integration.nodeproc import NodeProcess, write_config

pytestmark = pytest.mark.integration

PHI = {"name": "ZZPHINAME^SECRET", "patient_id": "PHI-998877", "birth_date": "19230405"}


@pytest.fixture
def served(tmp_path):
    port = free_port()
    config = write_config(tmp_path / "node.toml", tmp_path / "var", port, level="debug")
    node = NodeProcess(config, port, tmp_path / "node.log").start()
    yield node
    node.stop()


def test_serve_status_and_logs_without_patient_identity(served, tmp_path):
    series = write_series(tmp_path / "series", slices=8, **PHI)
    assert echoscu(served.port).returncode == 0
    assert store_responses(storescu(served.port, series.folder)) == ["(Success)"] * 8
    status = served.cli("status", "--json")
    for _ in range(50):
        if json.loads(status.stdout)["series"][0]["state"] == "queued":
            break
        status = served.cli("status", "--json")
    report = json.loads(status.stdout)
    assert report["states"] == {"queued": 1}
    assert report["series"][0]["instances"] == 8
    table = served.cli("status").stdout
    assert "queued" in table and report["series"][0]["series_uid"] in table
    assert served.stop() == 0

    log_text = (tmp_path / "node.log").read_text()
    events = [json.loads(line)["event"] for line in log_text.splitlines()]
    assert {"receiver_listening", "association_accepted", "series_complete",
            "node_stopped"} <= set(events)
    index_bytes = (tmp_path / "var" / "index.sqlite3").read_bytes()
    for value in PHI.values():
        assert value not in log_text and value.split("^")[0] not in log_text
        assert value.encode() not in index_bytes
        assert value not in status.stdout + table


def test_port_in_use_is_a_one_line_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(tmp_path / "node.toml", tmp_path / "var", port)
        result = subprocess.run([sys.executable, "-m", "cdss_node", "--config", str(config),
                                 "serve"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr.strip().splitlines()[-1]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cdss_node", *map(str, args)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("data_dir", ["a_file", "a_file/var", "/proc", "/proc/cdss"])
def test_an_unusable_data_dir_is_one_line_and_exit_2_from_check_config_and_serve(tmp_path,
                                                                                 data_dir):
    (tmp_path / "a_file").write_text("not a folder\n")
    config = write_config(tmp_path / "node.toml", tmp_path / data_dir, free_port())
    for args in (("check-config", config), ("--config", config, "serve")):
        result = cli(*args)
        assert (result.returncode, result.stdout) == (2, ""), result.stderr
        [line] = result.stderr.splitlines()
        assert line.startswith(f"{config}: node.data_dir: ") and "Traceback" not in line


def test_toml_nested_too_deeply_is_one_line_and_exit_2(tmp_path):
    config = tmp_path / "node.toml"
    config.write_text("[node]\nport = " + "[" * 5000 + "]" * 5000 + "\n")
    for args in (("check-config", config), ("--config", config, "serve")):
        result = cli(*args)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [
            f"{config}: not valid TOML: arrays or inline tables nested too deeply"]


@pytest.mark.parametrize("command", ["status", "resend"])
@pytest.mark.parametrize("data_dir", ["nothing", "a_file/var"])
def test_status_and_resend_without_index_say_so_in_one_line(tmp_path, command, data_dir):
    """Neither makes a data folder (resend used to, and died with a traceback where the
    folder could not be made, under a file say)."""
    (tmp_path / "a_file").write_text("not a folder\n")
    config = write_config(tmp_path / "node.toml", tmp_path / data_dir, free_port())
    result = subprocess.run([sys.executable, "-m", "cdss_node", "--config", str(config),
                             command], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1
    assert "no index at" in result.stderr and not (tmp_path / "nothing").exists()


def test_demo_sends_the_committed_sample_and_shows_its_analysis(tmp_path):
    env = {**os.environ, "CDSS_NODE_PORT": str(free_port()),
           "CDSS_NODE_DATA_DIR": str(tmp_path / "var"), "CDSS_STORE_RESERVE_MB": "0",
           "CDSS_LOGGING_FORMAT": "json"}
    result = subprocess.run([sys.executable, "-m", "cdss_node", "demo"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 refused" in result.stdout
    assert "series by state: done 1" in result.stdout
    assert "TRAINED ON SYNTHETIC DATA, not for clinical use" in result.stdout
    assert "EGFR: EGFR " in result.stdout and "107 radiomics features" in result.stdout
    pacs = sorted(path.name.split("_")[0] for path in (tmp_path / "var" / "demo_pacs").iterdir())
    assert pacs == ["OT", "SEG", "SR"] and "outbox: {'sent': 3}" in result.stdout
    assert "into the CT's study" in result.stdout and "ANOTHER" not in result.stdout
    summary = result.stdout.split("first lines of the SR, as a viewer shows them:")[1]
    assert summary.lstrip().startswith("AI prediction: EGFR ")
