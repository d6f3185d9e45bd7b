"""The worker in the node: a received series is analysed in the analysis process; a process that
cannot start or overruns is reported and replaced, and no job is lost."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from cdss_node.jobs import DEFAULT_BUNDLE, AnalysisRequest, AnalysisSettings
from cdss_node.worker import AnalysisFailed, AnalysisProcess
from tests.conftest import REPO, free_port
from tests.integration.dcmtk import store_responses, storescu
from tests.integration.nodeproc import NodeProcess, wait_until, write_config

pytestmark = pytest.mark.integration
SAMPLE = REPO / "sample_dicom" / "series"


def wait_for_state(node: NodeProcess, wanted: set[str], timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = json.loads(node.cli("status", "--json").stdout)
        if report["series"] and report["series"][0]["state"] in wanted:
            return report["series"][0]
        time.sleep(0.5)
    raise AssertionError(f"no series reached {wanted} in {timeout} s: {report}")


def test_node_analyses_a_received_series_and_keeps_the_result(tmp_path):
    port = free_port()
    config = write_config(tmp_path / "node.toml", tmp_path / "var", port, workers=1)
    node = NodeProcess(config, port, tmp_path / "node.log").start()
    try:
        assert store_responses(storescu(port, SAMPLE)) == ["(Success)"] * 80
        series = wait_for_state(node, {"done", "not_evaluable", "failed"})
        table = node.cli("status").stdout
    finally:
        node.stop()
    assert series["state"] == "done", series
    expected = tmp_path / "var" / "results" / series["series_uid"] / "g1" / "result.json"
    assert series["result_file"] == str(expected) and f"result: {expected}" in table
    result = json.loads(expected.read_text())
    assert result["status"] == "ok" and len(result["radiomics"]) == 107
    for path in (expected, expected.parent / "sr.dcm", tmp_path / "var" / "index.sqlite3"):
        assert path.stat().st_mode & 0o077 == 0, path   # patient data: the node's user only
    log = node_log(tmp_path / "node.log")
    finished = [e for e in log if e["event"] == "analysis_finished"]
    assert finished[0]["probability"] == result["prediction"]["probability"]
    peak = next(e for e in log if e["event"] == "analysis_process_memory")["peak_rss_mb"]
    assert 100 < peak < 1500        # torch and the pipeline loaded; issue 19's bound


def node_log(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def ready_node(tmp_path, grace_s: float) -> tuple[NodeProcess, int]:
    """A node whose analysis process has started (as it is in service)."""
    port = free_port()
    config = write_config(tmp_path / "node.toml", tmp_path / "var", port, grace_s=grace_s,
                          workers=1)
    node = NodeProcess(config, port, tmp_path / "node.log").start()
    wait_until(lambda: "analysis_process_ready" in (tmp_path / "node.log").read_text(),
               what="the analysis process started", interval=0.2)
    return node, port


def test_the_grace_period_is_spent_on_the_analysis(tmp_path):
    """One association: the analysis begun when it ended is the one the job takes."""
    node, port = ready_node(tmp_path, grace_s=3.0)
    try:
        assert store_responses(storescu(port, SAMPLE)) == ["(Success)"] * 80
        series = wait_for_state(node, {"done", "not_evaluable", "failed"})
    finally:
        node.stop()
    assert series["state"] == "done", series
    events = [e for e in node_log(tmp_path / "node.log") if "ahead" in e["event"]]
    assert [(e["event"], e.get("instances")) for e in events] == [
        ("analysis_ahead_asked", 80), ("analysis_ahead_taken", None)]


def test_the_analysis_ahead_of_completion_is_used_only_for_the_whole_series(tmp_path):
    """A series sent in two associations within the grace period: the analysis begun after
    the first (50 of 80 slices) is not the answer; the answer is of all 80 slices."""
    files = sorted(SAMPLE.glob("*.dcm"))
    node, port = ready_node(tmp_path, grace_s=4.0)
    try:
        assert store_responses(storescu(port, *files[:50])) == ["(Success)"] * 50
        wait_until(lambda: any(e["event"] == "analysis_ahead_asked"
                               for e in node_log(tmp_path / "node.log")),
                   timeout=3, what="an analysis ahead asked for", interval=0.05)
        assert store_responses(storescu(port, *files[50:])) == ["(Success)"] * 30
        series = wait_for_state(node, {"done", "not_evaluable", "failed"})
    finally:
        node.stop()
    assert series["state"] == "done" and series["instances"] == 80, series
    result = json.loads((tmp_path / "var" / "results" / series["series_uid"] / "g1" /
                         "result.json").read_text())
    assert result["series"]["shape_zyx"][0] == 80
    events = node_log(tmp_path / "node.log")
    asked = [e["instances"] for e in events if e["event"] == "analysis_ahead_asked"]
    assert asked[0] == 50
    taken = [e for e in events if e["event"] == "analysis_ahead_taken"]
    stale = [e for e in events if e["event"] == "analysis_ahead_stale"]
    # the 50-slice analysis was found stale, or all 80 were analysed next and taken
    assert stale or (taken and asked[-1] == 80), (asked, taken, stale)


def test_a_bundle_that_cannot_load_keeps_series_queued_and_says_why(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, bundle)
    (bundle / "fold_2.safetensors").write_bytes(b"not weights")
    port = free_port()
    config = write_config(tmp_path / "node.toml", tmp_path / "var", port, workers=1)
    with open(config, "a") as f:
        f.write(f'bundle = "{bundle}"\n')
    node = NodeProcess(config, port, tmp_path / "node.log").start()
    try:
        assert store_responses(storescu(port, SAMPLE)) == ["(Success)"] * 80
        assert wait_for_state(node, {"queued"})["instances"] == 80
        deadline = time.monotonic() + 120
        while "analysis_unavailable" not in (tmp_path / "node.log").read_text():
            assert time.monotonic() < deadline, "the node never said the analysis is unavailable"
            time.sleep(0.5)
        assert wait_for_state(node, {"queued"}, timeout=5)["state"] == "queued"
    finally:
        node.stop()
    unavailable = [json.loads(line) for line in (tmp_path / "node.log").read_text().splitlines()
                   if "analysis_unavailable" in line][0]
    assert "fold_2.safetensors" in unavailable["error"] and "sha256" in unavailable["error"]


def test_the_node_process_leaves_torch_and_the_pipeline_to_the_analysis_process():
    import subprocess
    import sys

    code = "import sys, cdss_node.node; print(sorted({'torch', 'radiomics', 'monai'} & " \
           "set(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.stdout.strip() == "[]", run.stdout + run.stderr


def test_an_analysis_that_overruns_is_stopped_and_reported(tmp_path):
    process = AnalysisProcess(AnalysisSettings(), "warning", "json")
    process.start()
    try:
        request = AnalysisRequest(paths=tuple(str(p) for p in sorted(SAMPLE.glob("*.dcm"))),
                                  out_dir=str(tmp_path / "out"))
        with pytest.raises(AnalysisFailed, match="timed out after 0 s analysing"):
            process.run(request, timeout_s=0.01)
        assert not process.alive
        process.start()  # replaced, and the next analysis runs
        assert process.run(request, timeout_s=300).status == "ok"
    finally:
        process.stop()
