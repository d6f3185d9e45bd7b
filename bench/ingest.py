"""Ingest throughput: the node against dcmtk's storescp, same series, same sender, same run.

    python bench/ingest.py [--rows 512] [--slices 244] [--repeats 3]

Both receivers get the same synthetic CT series from dcmtk's storescu (+sd), with TCP_NODELAY=1
for the dcmtk programs. Prints images/s for each, the ratio node / storescp, and for the node
the seconds from the association's release to the series being marked complete (with the
default grace of 1.9 s).
Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cdss_node.config import SeriesSection  # noqa: E402
from tests.conftest import free_port, write_series  # noqa: E402
from tests.integration.nodeproc import NodeProcess, wait_for_port, write_config  # noqa: E402

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
GRACE_S = SeriesSection.grace_s  # the node's default completion grace
CHECK_INTERVAL_S = 0.5  # and its default interval of completion checks


def series_folder(rows: int, slices: int) -> Path:
    folder = REPO / "bench" / "out" / f"series_{rows}x{rows}x{slices}"
    marker = folder.with_name(folder.name + ".complete")
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        started = time.monotonic()
        write_series(folder, rows=rows, slices=slices, seed=7)
        marker.touch()
        print(f"generated {slices} slices {rows}x{rows} in {time.monotonic() - started:.1f} s")
    return folder


def send(port: int, folder: Path, aec: str) -> float:
    started = time.monotonic()
    subprocess.run(["storescu", "-aec", aec, "+sd", "127.0.0.1", str(port), str(folder)],
                   check=True, env=DCMTK_ENV, capture_output=True)
    return time.monotonic() - started


def run_storescp(folder: Path, work: Path) -> float:
    port, out = free_port(), work / "storescp"
    out.mkdir()
    proc = subprocess.Popen(["storescp", "-aet", "STORESCP", "-od", str(out), str(port)],
                            env=DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        return send(port, folder, "STORESCP")
    finally:
        proc.terminate()
        proc.wait(10)


def run_node(folder: Path, work: Path, fsync: bool) -> tuple[float, float]:
    """Seconds to send, and seconds from association release to series complete."""
    port = free_port()
    config = write_config(work / "node.toml", work / "var", port, grace_s=GRACE_S, fsync=fsync,
                          check_interval_s=CHECK_INTERVAL_S)
    node = NodeProcess(config, port, work / "node.log").start()
    try:
        seconds = send(port, folder, "CDSS_EGFR")
        return seconds, completion_latency(work / "var" / "index.sqlite3")
    finally:
        node.stop()


def completion_latency(index_file: Path, timeout: float = 30) -> float:
    import sqlite3

    deadline = time.monotonic() + timeout
    with sqlite3.connect(index_file) as db:
        while time.monotonic() < deadline:
            row = db.execute("SELECT s.completed_at - a.released_at FROM series s, associations a "
                             "WHERE s.completed_at IS NOT NULL").fetchone()
            if row:
                return row[0]
            time.sleep(0.05)
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--slices", type=int, default=244)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    for tool in ("storescu", "storescp"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} not found (apt-get install dcmtk)")
    folder = series_folder(args.rows, args.slices)
    n = len(list(folder.glob("*.dcm")))
    rates: dict[str, list[float]] = {"storescp": [], "node": [], "node fsync": []}
    latency: dict[str, list[float]] = {"node": [], "node fsync": []}
    (REPO / "bench" / "out").mkdir(exist_ok=True)
    for _ in range(args.repeats):  # interleaved, so that both see the same machine
        for name in rates:
            with tempfile.TemporaryDirectory(dir=REPO / "bench" / "out") as tmp:
                if name == "storescp":
                    rates[name].append(n / run_storescp(folder, Path(tmp)))
                else:
                    seconds, late = run_node(folder, Path(tmp), fsync=name.endswith("fsync"))
                    rates[name].append(n / seconds)
                    latency[name].append(late)
    report(n, args, rates, latency)


def report(n: int, args, rates: dict, latency: dict) -> None:
    print(f"\ningest of {n} CT images {args.rows}x{args.rows}, {args.repeats} interleaved runs "
          "(sender: storescu +sd, TCP_NODELAY=1)")
    print(f"{'receiver':<12}{'images/s median':>16}{'  (min-max)':<14}{'ratio':>7}"
          f"{'release->complete s':>21}")
    peer = rates["storescp"]
    for name, values in rates.items():
        ratio = statistics.median(v / p for v, p in zip(values, peer))
        late = f"{statistics.median(latency[name]):.2f}" if name in latency else "-"
        spread = f"  ({min(values):.0f}-{max(values):.0f})"
        print(f"{name:<12}{statistics.median(values):>16.0f}{spread:<14}{ratio:>7.2f}{late:>21}")
    print("ratio: median over runs of the receiver's images/s over storescp's in the same run")


if __name__ == "__main__":
    main()
