"""kill -9 in the middle of a series: every instance answered with success survives."""

from __future__ import annotations

import os
import subprocess
import time

import pydicom
import pytest

from cdss_node.node import INDEX_FILE
from cdss_node.store.index import Index
from tests.conftest import free_port, require_tool, write_series
from tests.integration.nodeproc import NodeProcess, write_config

pytestmark = pytest.mark.integration


def acknowledged_files(storescu_output: str) -> list[str]:
    """Files whose C-STORE was answered with success, read from storescu -v output."""
    current, done = None, []
    for line in storescu_output.splitlines():
        if "Sending file:" in line:
            current = line.split("Sending file:", 1)[1].strip()
        elif "Received Store Response (Success)" in line and current:
            done.append(current)
    return done


def send_until_killed(node: NodeProcess, folder, kill_after: int) -> str:
    """Run storescu; kill -9 the node once ``kill_after`` instances were acknowledged."""
    args = [require_tool("storescu"), "-v", "-aec", "CDSS_EGFR", "+sd", "127.0.0.1",
            str(node.port), str(folder)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "TCP_NODELAY": "1"})
    lines, acks = [], 0
    for line in proc.stdout:
        lines.append(line)
        acks += "Received Store Response (Success)" in line
        if acks == kill_after:
            node.kill9()
    proc.wait(60)
    return "".join(lines)


def test_kill_9_mid_series_loses_no_acknowledged_instance(tmp_path):
    series = write_series(tmp_path / "series", rows=256, slices=60)
    port = free_port()
    config = write_config(tmp_path / "node.toml", tmp_path / "var", port)
    node = NodeProcess(config, port, tmp_path / "node.log").start()
    output = send_until_killed(node, series.folder, kill_after=25)
    acknowledged = acknowledged_files(output)
    assert 25 <= len(acknowledged) < len(series.files), output[-2000:]

    node.start()  # restart: recovery runs
    index = Index(tmp_path / "var" / INDEX_FILE)
    for path in acknowledged:
        sop = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        rows = index.query("SELECT path FROM instances WHERE sop_instance_uid=?", (sop,))
        assert rows, f"acknowledged {path} is not in the index"
        stored = pydicom.dcmread(tmp_path / "var" / "spool" / rows[0][0])
        assert stored.SOPInstanceUID == sop and len(stored.PixelData) > 0
    assert index.query("SELECT COUNT(*) FROM associations WHERE released_at IS NULL")[0][0] == 0

    # The PACS sends the series again: it completes with every instance exactly once.
    resend = subprocess.run([require_tool("storescu"), "-aec", "CDSS_EGFR", "+sd", "127.0.0.1",
                             str(port), str(series.folder)], capture_output=True, timeout=120)
    assert resend.returncode == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and index.receiving_series():
        time.sleep(0.1)
    [(state, count)] = index.query("SELECT s.state, (SELECT COUNT(*) FROM instances i "
                                   "WHERE i.series_uid=s.series_uid) FROM series s")
    assert (state, count) == ("queued", len(series.files))
    assert not list((tmp_path / "var" / "spool" / ".tmp").iterdir())
    index.close()
    assert node.stop() == 0


def test_an_instance_renamed_into_the_spool_but_never_indexed_is_indexed_at_restart(tmp_path):
    """A crash between the receiver's rename and its index commit leaves a file no row names;
    retention deletes only what the index names, so it would stay forever. The restarted node
    indexes it into its series (the series completes with it) and deletes an unreadable one."""
    from cdss_node.node import Node
    from tests.conftest import node_config
    from tests.integration.dcmtk import store_responses, storescu

    series = write_series(tmp_path / "series", rows=64, slices=8)
    config = node_config(tmp_path / "var")
    node = Node(config)
    node.start()
    try:
        assert store_responses(storescu(config.node.port, *series.files[:6])) == ["(Success)"] * 6
        assert node.wait_until_settled(30)
    finally:
        node.stop()
    spool = tmp_path / "var" / "spool"
    [study] = [p for p in spool.iterdir() if p.name != ".tmp"]
    [folder] = list(study.iterdir())
    header = pydicom.dcmread(series.files[6], stop_before_pixels=True)
    orphan = folder / f"{header.SOPInstanceUID}.dcm"
    orphan.write_bytes(series.files[6].read_bytes())          # renamed, then the crash
    broken = folder / "1.2.3.4.dcm"
    broken.write_bytes(series.files[7].read_bytes()[:300])    # a damaged file
    node = Node(config)
    node.start()
    try:
        assert node.wait_until_settled(30)
        rows = node.index.query("SELECT s.state, (SELECT COUNT(*) FROM instances i WHERE "
                                "i.series_uid=s.series_uid) AS n FROM series s")
        path = node.index.query("SELECT path FROM instances WHERE sop_instance_uid=?",
                                (header.SOPInstanceUID,))
    finally:
        node.stop()
    assert [(r["state"], r["n"]) for r in rows] == [("queued", 7)]
    assert path[0]["path"] == str(orphan.relative_to(spool))
    assert orphan.is_file() and not broken.exists()
