"""A full-size CT: 244 slices of 512 x 512 sent with storescu +sd is indexed and completed.
(How fast is measured in bench/ingest.py, not asserted here.)"""

from __future__ import annotations

import time

import pytest

from tests.conftest import write_series
from tests.integration.dcmtk import store_responses, storescu

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_244_slice_series_is_fully_indexed_and_complete(node, tmp_path):
    series = write_series(tmp_path / "series", rows=512, slices=244)
    result = storescu(node.config.node.port, series.folder)
    assert store_responses(result) == ["(Success)"] * 244
    released = time.time()
    assert node.wait_until_settled(30)
    [(state, count, completed_at)] = node.index.query(
        "SELECT s.state, (SELECT COUNT(*) FROM instances i WHERE i.series_uid = s.series_uid), "
        "s.completed_at FROM series s")
    assert (state, count) == ("queued", 244)
    files = list((node.spool.root).rglob("*.dcm"))
    assert len(files) == 244
    print(f"release -> complete: {completed_at - released:.2f} s (grace "
          f"{node.config.series.grace_s} s)")
