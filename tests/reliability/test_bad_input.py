"""The bad-input corpus (``bad_inputs.py``) sent to one node process, case after case.

Each case is checked for the C-STORE status on the wire and, where it was stored, for the
series' final state and coded reason in ``cdss-node status``, result.json and the SR. Then
the node must still answer C-ECHO and analyse a good series, and its log must not hold the
corpus' patient names, IDs or birth dates.
"""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from cdss_node.dicom.sender import store_files
from tests.conftest import REPO, free_port, require_tool
from tests.integration.dcmtk import echoscu, store_responses, storescu
from tests.integration.nodeproc import NodeProcess, wait_until, write_config
from tests.reliability.bad_inputs import (
    CASES, NO_CONTEXT, STATUS_TEXT, SUCCESS, Case, Stored, Wire, base_series, series_uid,
    write_case)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SAMPLE = REPO / "sample_dicom" / "series"
FINAL = {"done", "not_evaluable", "failed"}
BY_TEXT = {text: code for code, text in STATUS_TEXT.items()}


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    require_tool("storescu")
    folder = tmp_path_factory.mktemp("bad_input_node")
    port = free_port()
    config = write_config(folder / "node.toml", folder / "var", port, workers=1)
    running = NodeProcess(config, port, folder / "node.log").start()
    yield running
    running.stop()


def send(node: NodeProcess, case: Case, files: list[Path]) -> list[int]:
    """The status of each file as the sender saw it (NO_CONTEXT: never sent)."""
    if case.sender == "pynetdicom":
        results = store_files(files, "CDSS_EGFR", "127.0.0.1", node.port, calling_aet="BADINPUT")
        return [NO_CONTEXT if r.status is None else r.status for r in results]
    result = storescu(node.port, *files, extra=("--no-halt", *case.propose), aet="BADINPUT")
    texts = store_responses(result)
    if not texts and "no presentation context" in (result.stdout + result.stderr).lower():
        return [NO_CONTEXT] * len(files)
    assert all(t in BY_TEXT for t in texts) and len(texts) == len(files), \
        result.stdout + result.stderr
    return [BY_TEXT[t] for t in texts]


@pytest.fixture(scope="module")
def outcomes(node, tmp_path_factory):
    """Every case sent in turn, then every stored series waited for; by case name:
    (statuses on the wire, the series' status row or None)."""
    folder = tmp_path_factory.mktemp("bad_inputs")
    base = base_series(folder / "base")
    wire = {case.name: send(node, case, write_case(case, n, base, folder / case.name))
            for n, case in enumerate(CASES)}
    stored = {series_uid(c) for c in CASES if isinstance(c.expected, Stored)}

    def settled() -> dict | None:
        rows = {s["series_uid"]: s for s in node.status()["series"]}
        waiting = [uid for uid in stored if uid in rows and rows[uid]["state"] not in FINAL]
        return None if waiting else rows
    rows = wait_until(settled, timeout=180, what="every stored corpus series analysed")
    return {c.name: (wire[c.name], rows.get(series_uid(c))) for c in CASES}


def _code_values(ds) -> set[str]:
    found = set()
    for item in ds.get("ContentSequence", []):
        for name in ("ConceptNameCodeSequence", "ConceptCodeSequence"):
            found |= {str(code.CodeValue) for code in item.get(name, [])}
        found |= _code_values(item)
    return found


def _params():
    return [pytest.param(c, id=c.name, marks=[pytest.mark.xfail(reason=c.xfail, strict=True)]
                         if c.xfail else []) for c in CASES]


@pytest.mark.parametrize("case", _params())
def test_case_outcome(case: Case, outcomes):
    statuses, series = outcomes[case.name]
    expected = case.expected
    if isinstance(expected, Wire):
        assert statuses and set(statuses) == {expected.status}, [hex(s) for s in statuses]
        assert series is None, series
        return
    wanted = [expected.refused.get(k, SUCCESS) for k in range(len(statuses))]
    assert statuses == wanted, [hex(s) for s in statuses]
    assert series is not None
    assert series["state"] == expected.state, series
    result = json.loads(Path(series["result_file"]).read_text())
    sr = pydicom.dcmread(Path(series["result_file"]).parent / "sr.dcm")
    if expected.reason is None:
        assert result["status"] == "ok"
        return
    assert series["reason"].startswith(expected.reason), series["reason"]
    assert result["reason"]["code"] == expected.reason, result["reason"]
    assert expected.reason in _code_values(sr)


def test_node_still_serves_after_the_corpus(node, outcomes, tmp_path):
    echo = echoscu(node.port)
    assert "Received Echo Response (Success)" in echo.stdout + echo.stderr
    assert store_responses(storescu(node.port, SAMPLE)) == ["(Success)"] * 80
    sample_uid = pydicom.dcmread(sorted(SAMPLE.glob("*.dcm"))[0]).SeriesInstanceUID

    def finished():
        rows = [s for s in node.status()["series"] if s["series_uid"] == sample_uid]
        return rows and rows[0]["state"] in FINAL and rows[0]
    assert wait_until(finished, timeout=180, what="the sample series analysed")["state"] == "done"


def test_no_patient_identity_in_the_log(node, outcomes):
    log = node.log_file.read_text(encoding="utf-8", errors="replace")
    assert "store_refused" in log  # the log was written
    for number, case in enumerate(CASES):
        for value in case.patient(number):
            assert value not in log, f"{case.name}: {value} is in the node's log"
    assert "BADINPUT^" not in log and "LONGNAME" not in log


def test_no_handler_failed_inside_the_receiver(node, outcomes):
    """Every refusal above was a check's answer, none an exception caught in the handler
    (0x0110 with a traceback in the log)."""
    events = [json.loads(line) for line in node.log_file.read_text(errors="replace").splitlines()
              if line.startswith("{")]
    assert not [e for e in events if e["event"] == "store_failed"]
    assert [e for e in events if e["event"] == "store_refused"]
