"""The status page's result column, read from a series' result.json."""

from __future__ import annotations

import json

import pytest

from cdss_node.monitor.page import _result
from cdss_node.store.status import SeriesStatus


def row(tmp_path, result: dict | None, state: str = "done", reason: str | None = None):
    path = None
    if result is not None:
        path = tmp_path / "result.json"
        path.write_text(json.dumps(result))
    return SeriesStatus("1.2.3", "1.2", "CT", state, 1, 80, 0.0, 1.0, 2.0, reason,
                        str(path) if path else None)


PREDICTION = {"label": "EGFR wild type", "probability": 0.0741}


@pytest.mark.parametrize("lossy, shown", [
    (False, "EGFR wild type (p = 0.074)"),
    (True, "EGFR wild type (p = 0.074; lossy-compressed CT)"),
])
def test_the_result_names_the_prediction_and_a_lossy_source(tmp_path, lossy, shown):
    result = {"prediction": PREDICTION, "series": {"lossy_compressed": lossy}}
    assert _result(row(tmp_path, result)) == shown


def test_a_result_of_an_older_node_without_the_flag_is_shown_plainly(tmp_path):
    assert _result(row(tmp_path, {"prediction": PREDICTION})) == "EGFR wild type (p = 0.074)"


def test_a_failed_series_shows_its_reason(tmp_path):
    assert _result(row(tmp_path, None, "not_evaluable", "NE004 missing slices")) == \
        "NE004 missing slices"
