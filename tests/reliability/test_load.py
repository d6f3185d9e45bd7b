"""Load: 8 concurrent associations into one node while it analyses, and nothing is lost.

One node process (``cdss-node serve``, workers = 1, the HTTP port on) with dcmtk storescp as
its PACS. First ``EARLY`` series are sent and the test waits until the analysis process is
working on them; then 8 dcmtk ``storescu -v`` processes are started together (a barrier), each
sending ``PER_ASSOCIATION`` distinct series in one association, while those earlier series are
analysed. Counts: 8 x 3 = 24 series + 2 earlier ones = 26 series; slices cycle 24 / 32 / 40,
128 x 128 (832 + 64 = 896 instances, about 28 MB). Each series has its own Study and Series
UIDs and holds the phantom's tumor, so every one is analysable and ends ``done``.

Checked: every C-STORE answered Success (storescu -v), every SOP Instance UID sent is in the
index, every series ``done``, exactly one SEG and one SR per series at the PACS (by SOP Class and
by the series they reference), the outbox has nothing pending or dead, /metrics
``cdss_instances_received_total`` equals the instances sent, analysis overlapped the
concurrent receive, and the peak resident memory (VmRSS from /proc, sampled every 0.5 s) of the
node process and of its analysis process stays under stated bounds.

About 1 to 1.5 minutes on the shared 2-core machine (CPU only): 58 and 78 s measured.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from cdss_node.dicom.seg import result_series_uid
from tests.conftest import require_tool
from tests.integration.nodeproc import read_metrics, wait_until
from tests.reliability.loadrun import (
    COMPREHENSIVE_3D_SR, SECONDARY_CAPTURE, SEG_STORAGE, LoadNode, make_series, pacs_files, send_concurrently)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ASSOCIATIONS, PER_ASSOCIATION, EARLY = 8, 3, 2
SLICES, ROWS = [24, 32, 40], 128
# Peak VmRSS bounds, MiB. Measured with these counts on the shared 2-core machine (CPU only),
# two runs: node process 69 and 69 MiB, analysis process 501 and 517 MiB (most of it the
# libraries and model it loads once; bench/load.py at 256 x 256 x 40: 73 and 570 MiB). The node
# bound is about 1.5x its peak: a leak of more than about 40 KiB per instance (896 instances)
# would cross it. Segmenter v0.4 and later find candidates on a fixed 1.5 mm grid: these series
# (2.9 mm pixels, 5 mm slices) become up to 133 x 249 x 249 voxels there, and scipy's distance
# transform holds about 20 bytes per voxel, so each analysis peaks 100-300 MiB above the
# process's idle level: analysis peaks of 700 (here) and 785 MiB (CI) with v0.4/v0.5. The
# analysis bound is about 1.5x that peak; a leak is caught by the idle level instead: the
# process's lowest RSS late in the run may exceed its lowest after the first analyses by at
# most ANALYSIS_IDLE_GROWTH_MIB (about 15 analyses lie between the two, so a leak of about
# 8 MiB per analysis would cross it; measured: 505 -> 506 MiB).
NODE_RSS_BOUND_MIB = 105
ANALYSIS_RSS_BOUND_MIB = 1100
ANALYSIS_IDLE_GROWTH_MIB = 120


def test_eight_concurrent_associations_while_analysing_lose_nothing(tmp_path: Path):
    require_tool("storescu")
    require_tool("storescp")
    made = make_series(tmp_path / "series", EARLY + ASSOCIATIONS * PER_ASSOCIATION, SLICES, ROWS)
    early, rest = made[:EARLY], made[EARLY:]
    groups = [rest[i::ASSOCIATIONS] for i in range(ASSOCIATIONS)]
    sent_uids = set().union(*(s.instance_uids for s in made))

    run = LoadNode(tmp_path, grace_s=1.0, check_interval_s=0.25,
                   outbox="check_interval_s = 0.5")
    query, port, log = run.query, run.port, run.log
    try:
        run.start()
        first = send_concurrently(port, [early], "CDSS_EGFR")
        wait_until(lambda: query("SELECT 1 FROM jobs WHERE started_at IS NOT NULL"),
                   timeout=60, what="analysis of the earlier series started")
        sent = first + send_concurrently(port, groups, "CDSS_EGFR")
        received_at = time.time()
        total = len(made)
        wait_until(lambda: query("SELECT COUNT(*) FROM outbox WHERE state = 'sent'")[0][0]
                   >= 3 * total, timeout=240, what=f"{3 * total} results sent")
        time.sleep(1.0)  # anything extra (a duplicate) would be queued by now
        found = read_metrics(run.http)
        files = pacs_files(run.pacs_folder)
    finally:
        run.stop()
    sampler = run.sampler

    # every C-STORE answered Success, and every storescu exited 0
    assert [s.returncode for s in sent] == [0] * len(sent), [s.output[-2000:] for s in sent]
    responses = Counter(r for s in sent for r in s.responses())
    assert responses == {"(Success)": len(sent_uids)}, responses
    # every instance in the index, every series done
    assert {uid for uid, in query("SELECT sop_instance_uid FROM instances")} == sent_uids
    states = Counter(state for state, in query("SELECT state FROM series"))
    assert states == {"done": total}, (states, query("SELECT series_uid, reason FROM series "
                                                     "WHERE state != 'done'"))
    # analysis ran while the 8 associations were receiving
    window = (min(s.started for s in sent[1:]), max(s.ended for s in sent[1:]))
    overlapping = query("SELECT COUNT(*) FROM jobs WHERE started_at < ? AND "
                        "COALESCE(finished_at, ?) > ?", window[1], received_at, window[0])
    assert overlapping[0][0] >= 1
    # exactly one SEG, one SR and one result image per series at the PACS, and nothing else
    by_series = Counter((f.sop_class, ref) for f in files for ref in f.referenced_series
                        if ref in {s.series_uid for s in made})
    expected = {(cls, s.series_uid): 1 for s in made for cls in (SEG_STORAGE, COMPREHENSIVE_3D_SR)}
    assert by_series == expected
    images = Counter(f.series_uid for f in files if f.sop_class == SECONDARY_CAPTURE)
    assert images == {result_series_uid(s.series_uid, "SC"): 1 for s in made}
    assert Counter(f.sop_class for f in files) == {SEG_STORAGE: total, COMPREHENSIVE_3D_SR: total,
                                                   SECONDARY_CAPTURE: total}
    # the outbox: everything sent once, nothing pending or dead
    assert Counter(state for state, in query("SELECT state FROM outbox")) == {"sent": 3 * total}
    assert found[("cdss_outbox", (("state", "pending"),))] == 0
    assert found[("cdss_outbox", (("state", "dead"),))] == 0
    assert found[("cdss_instances_received_total", ())] == len(sent_uids)
    assert found[("cdss_analysis_seconds_count", ())] == total
    assert "Traceback" not in log.read_text()
    # memory stayed bounded
    node_mib, analysis_mib = sampler.node_peak_kib / 1024, sampler.analysis_peak_kib / 1024
    print(f"peak VmRSS: node {node_mib:.0f} MiB, analysis {analysis_mib:.0f} MiB, tree "
          f"{sampler.tree_peak_kib / 1024:.0f} MiB over {sampler.samples} samples")
    assert sampler.samples > 10 and analysis_mib > 0
    assert node_mib < NODE_RSS_BOUND_MIB
    assert analysis_mib < ANALYSIS_RSS_BOUND_MIB
    early, late = idle_levels_mib(sampler.history)
    assert late - early <= ANALYSIS_IDLE_GROWTH_MIB, (early, late)


def idle_levels_mib(history: list[tuple[float, int, int]]) -> tuple[float, float]:
    """The analysis process's lowest RSS (MiB) in the second fifth of the run, after its first
    analyses loaded what it keeps, and in the last fifth, when it is idle again."""
    analysis = [kib / 1024 for _, _, kib in history if kib > 0]
    fifth = max(1, len(analysis) // 5)
    return min(analysis[fifth:2 * fifth]), min(analysis[-fifth:])
