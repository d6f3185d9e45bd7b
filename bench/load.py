"""Load: concurrent associations into the node while it analyses, against dcmtk's storescp.

    python bench/load.py [--associations 8] [--series-per-association 3] [--slices 32]
                         [--size 128] [--early 2] [--repeats 1]

The scenario of tests/reliability/test_load.py, parameterised: distinct synthetic CT series
(each its own Study and Series UIDs, the phantom's tumor in each) are generated once; then
``--associations`` dcmtk ``storescu +sd`` processes are started together, each sending
``--series-per-association`` series in one association (TCP_NODELAY=1 for the dcmtk programs).
The node (one process, workers = 1, its defaults otherwise: grace 1.9 s, checks every 0.5 s) has
dcmtk storescp as its PACS; ``--early`` series are sent first, and the concurrent senders start
once their analysis has begun, so the node receives while it analyses. The peer is
``storescp --fork`` (one process per association, so it serves them concurrently too), given
the same senders in the same run, just before and just after the node (their mean is the
peer's figure: this shared 2-core machine's speed drifts).

Prints: instances, wall time of the concurrent send and instances/s for each receiver (and the
ratio node / storescp), seconds from the last C-STORE to the last SR at the PACS, the analysis
seconds (the node's /metrics histogram), the round trip per series from the index
(series.first_received to its last outbox.sent_at; median and max), and the peak resident memory
(VmRSS sampled every 0.5 s) of the node process and of its analysis process.
Not a test: it asserts nothing, but says if anything sent is missing.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cdss_node.config import SeriesSection  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.integration.nodeproc import read_metrics, wait_for_port, wait_until  # noqa: E402
from tests.reliability.loadrun import (  # noqa: E402
    COMPREHENSIVE_3D_SR, SEG_STORAGE, LoadNode, LoadSeries, make_series, pacs_files,
    send_concurrently, start_storescp)

OUT = REPO / "bench" / "out"
GRACE_S, CHECK_INTERVAL_S = SeriesSection.grace_s, SeriesSection.check_interval_s


def wave(made: list[LoadSeries], args) -> tuple[list[LoadSeries], list[list[LoadSeries]]]:
    early, rest = made[:args.early], made[args.early:]
    return early, [rest[i::args.associations] for i in range(args.associations)]


def instances(groups: list[list[LoadSeries]]) -> int:
    return sum(len(s.instance_uids) for group in groups for s in group)


def run_storescp(groups: list[list[LoadSeries]], work: Path) -> float:
    """Instances/s of storescp --fork under the same concurrent senders."""
    port, out = free_port(), work / "storescp"
    proc = start_storescp(port, out, "STORESCP", fork=True)
    try:
        wait_for_port(port)
        sent = send_concurrently(port, groups, "STORESCP")
    finally:
        proc.terminate()
        proc.wait(10)
    n = instances(groups)
    if any(s.returncode for s in sent) or len(list(out.iterdir())) != n:
        print(f"bench: storescp got {len(list(out.iterdir()))} of {n} files")
    return n / (max(s.ended for s in sent) - min(s.started for s in sent))


def settled(query, series: int) -> bool:
    """Every series in a final state and nothing left to send."""
    final = query("SELECT COUNT(*) FROM series WHERE state IN "
                  "('done', 'failed', 'not_evaluable')")[0][0]
    waiting = query("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")[0][0]
    return final == series and waiting == 0


def run_node(made: list[LoadSeries], args, work: Path) -> dict[str, float]:
    early, groups = wave(made, args)
    run = LoadNode(work, grace_s=GRACE_S, check_interval_s=CHECK_INTERVAL_S)
    query, port = run.query, run.port
    try:
        run.start()
        if early:
            send_concurrently(port, [early], "CDSS_EGFR")
            wait_until(lambda: query("SELECT 1 FROM jobs WHERE started_at IS NOT NULL"),
                       timeout=120, what="analysis of the earlier series started")
        sent = send_concurrently(port, groups, "CDSS_EGFR")
        wait_until(lambda: settled(query, len(made)), timeout=3600, interval=0.2,
                   what="every series analysed and its results sent")
        metrics = read_metrics(run.http)
    finally:
        run.stop()
    sampler = run.sampler
    files = pacs_files(run.pacs_folder)
    sent_uids = set().union(*(s.instance_uids for s in made))
    indexed = {uid for uid, in query("SELECT sop_instance_uid FROM instances")}
    states = dict(query("SELECT state, COUNT(*) FROM series GROUP BY state"))
    srs = [f for f in files if f.sop_class == COMPREHENSIVE_3D_SR]
    segs = [f for f in files if f.sop_class == SEG_STORAGE]
    print(f"series states {states}; at the PACS {len(segs)} SEG and {len(srs)} SR")
    if indexed != sent_uids or len(srs) != len(made) or len(segs) != states.get("done", 0) \
            or any(s.returncode for s in sent):
        print(f"bench: LOST OR DUPLICATED: {len(sent_uids - indexed)} instances not indexed, "
              f"{len(segs)} SEG and {len(srs)} SR for {len(made)} series")
    finished = sorted(t for t, in query("SELECT finished_at FROM jobs"))
    after = lambda t: next((a for at, _, a in sampler.history if at >= t and a), 0) / 1024
    roundtrips = [t for t, in query(
        "SELECT MAX(o.sent_at) - s.first_received FROM series s JOIN outbox o "
        "ON o.series_uid = s.series_uid GROUP BY s.series_uid")]
    last_store, = query("SELECT MAX(received_at) FROM instances")[0]
    n = instances(groups)
    return {
        "instances": n,
        "sent_total": len(sent_uids),
        "send_s": max(s.ended for s in sent) - min(s.started for s in sent),
        "rate": n / (max(s.ended for s in sent) - min(s.started for s in sent)),
        "last_store_to_last_sr_s": max(f.arrived for f in srs) - last_store,
        "analyses": metrics[("cdss_analysis_seconds_count", ())],
        "analysis_mean_s": metrics[("cdss_analysis_seconds_sum", ())]
        / metrics[("cdss_analysis_seconds_count", ())],
        "received_total": metrics[("cdss_instances_received_total", ())],
        "roundtrip_median_s": statistics.median(roundtrips),
        "roundtrip_max_s": max(roundtrips),
        "node_rss_mib": sampler.node_peak_kib / 1024,
        "analysis_rss_mib": sampler.analysis_peak_kib / 1024,
        "tree_rss_mib": sampler.tree_peak_kib / 1024,
        "analysis_rss_first_mib": after(finished[0]),
        "analysis_rss_last_mib": after(finished[-1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--associations", type=int, default=8)
    parser.add_argument("--series-per-association", type=int, default=3)
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--size", type=int, default=128,
                        help="rows = columns; at 96 the default segmenter finds no tumor in the "
                        "phantom (not_evaluable, an SR and no SEG), 128 and up are analysable")
    parser.add_argument("--early", type=int, default=2,
                        help="series sent (and being analysed) before the concurrent senders")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    for tool in ("storescu", "storescp"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} not found (apt-get install dcmtk)")
    OUT.mkdir(parents=True, exist_ok=True)
    total = args.early + args.associations * args.series_per_association
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        started = time.monotonic()
        made = make_series(Path(tmp) / "series", total, [args.slices], args.size)
        print(f"generated {total} series of {args.slices} x {args.size} x {args.size} in "
              f"{time.monotonic() - started:.1f} s")
        peer, runs = [], []
        for _ in range(args.repeats):  # the peer before and after the node, in each run
            rates = []
            with tempfile.TemporaryDirectory(dir=OUT) as work:
                rates.append(run_storescp(wave(made, args)[1], Path(work)))
            with tempfile.TemporaryDirectory(dir=OUT) as work:
                runs.append(run_node(made, args, Path(work)))
            with tempfile.TemporaryDirectory(dir=OUT) as work:
                rates.append(run_storescp(wave(made, args)[1], Path(work)))
            peer.append(statistics.mean(rates))
    report(args, total, peer, runs)


def report(args, total: int, peer: list[float], runs: list[dict]) -> None:
    med = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    print(f"\nload: {args.associations} concurrent storescu (+sd, TCP_NODELAY=1), "
          f"{args.series_per_association} series each of {args.slices} x {args.size} x "
          f"{args.size}, after {args.early} earlier series; {total} series in all; node with "
          f"workers = 1; median of {args.repeats} run(s)")
    print(f"{'instances sent concurrently':<44}{med('instances'):>10.0f}")
    print(f"{'instances sent in all (with the earlier)':<44}{med('sent_total'):>10.0f}")
    print(f"{'node: instances counted by /metrics':<44}{med('received_total'):>10.0f}")
    print(f"{'node: wall time of the concurrent send, s':<44}{med('send_s'):>10.2f}")
    print(f"{'node: instances/s':<44}{med('rate'):>10.0f}")
    print(f"{'storescp --fork: instances/s (before+after)':<44}{statistics.median(peer):>10.0f}")
    ratio = statistics.median(r["rate"] / p for r, p in zip(runs, peer))
    print(f"{'ratio node / storescp (same run)':<44}{ratio:>10.2f}")
    print(f"{'last C-STORE -> last SR at the PACS, s':<44}{med('last_store_to_last_sr_s'):>10.1f}")
    print(f"{'analyses (metrics count)':<44}{med('analyses'):>10.0f}")
    print(f"{'analysis s, mean (metrics sum / count)':<44}{med('analysis_mean_s'):>10.2f}")
    print(f"{'round trip per series, median s':<44}{med('roundtrip_median_s'):>10.1f}")
    print(f"{'round trip per series, max s':<44}{med('roundtrip_max_s'):>10.1f}")
    print(f"{'peak VmRSS node process, MiB':<44}{med('node_rss_mib'):>10.0f}")
    print(f"{'peak VmRSS analysis process, MiB':<44}{med('analysis_rss_mib'):>10.0f}")
    print(f"{'  analysis process after its first job, MiB':<44}"
          f"{med('analysis_rss_first_mib'):>10.0f}")
    print(f"{'  analysis process after its last job, MiB':<44}"
          f"{med('analysis_rss_last_mib'):>10.0f}")
    print(f"{'peak VmRSS process tree (sum), MiB':<44}{med('tree_rss_mib'):>10.0f}")
    print("round trip: series.first_received to its last outbox.sent_at (index), every series")


if __name__ == "__main__":
    main()
