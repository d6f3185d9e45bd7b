"""Seconds from the association's release to the SR stored at the destination, per stage.

    python bench/roundtrip.py [--repeats 2] [--ct lung2|synthetic] [--no-ahead]

A chest CT is sent by dcmtk storescu to the node (its default settings, the shipped default
bundle, the default segmenter); the node's destination is dcmtk storescp. The clock starts
when storescu's association is released (the node's index) and stops when the SR file appears
in storescp's folder. The CT: ``lung2`` (default), a real CT of 241 slices of 512 x 512 with a
48 ml tumor (``bench/real_series.py``; needs ``cdss-train real-ct``), or ``synthetic``, the
phantom of 244 x 512 x 512 of ``bench/analyze.py``. Stages come from the node's index (series
events, outbox), result.json and the node's log (the analysis ahead of completion, taken or
not; the analysis process's peak memory). Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pydicom  # noqa: E402

from bench.analyze import OUT, chest_ct  # noqa: E402
from cdss_node.config import SeriesSection  # noqa: E402
from bench.real_series import lung2_series  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.integration.nodeproc import (  # noqa: E402
    NodeProcess, add_destination, wait_for_port, write_config)

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


def one_run(paths: list[Path], work: Path, ahead: bool = True) -> dict[str, float]:
    pacs_port, port = free_port(), free_port()
    received = work / "pacs"
    received.mkdir()
    pacs = subprocess.Popen(["storescp", "-aet", "PACS", "-od", str(received), str(pacs_port)],
                            env=DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = write_config(work / "node.toml", work / "var", port, grace_s=SeriesSection.grace_s,
                          check_interval_s=0.5, workers=1)
    with open(config, "a") as f:    # write_config ends with its [analysis] table
        f.write(f"ahead_of_completion = {'true' if ahead else 'false'}\n")
    add_destination(config, pacs_port, "PACS")
    node = NodeProcess(config, port, work / "node.log").start()
    try:
        wait_for_port(pacs_port)
        _wait_for_log(work / "node.log", "analysis_process_ready")
        subprocess.run(["storescu", "-aec", "CDSS_EGFR", "+sd", "127.0.0.1", str(port),
                        str(paths[0].parent)], env=DCMTK_ENV, check=True, capture_output=True)
        arrived = _wait_for_sr(received)
        return _stages(work / "var" / "index.sqlite3", arrived, work / "node.log")
    finally:
        node.stop()
        pacs.terminate()
        pacs.wait(10)


def _wait_for_log(log: Path, event: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while event not in log.read_text():
        if time.monotonic() > deadline:
            sys.exit(f"bench: the node never logged {event}")
        time.sleep(0.1)


def _wait_for_sr(folder: Path, timeout: float = 600) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in folder.iterdir():
            try:
                if pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID == \
                        COMPREHENSIVE_3D_SR:
                    return time.time()
            except Exception:  # still being written
                continue
        time.sleep(0.05)
    sys.exit("bench: no SR arrived at the destination")


def _stages(index_file: Path, arrived: float, log: Path) -> dict[str, float]:
    with sqlite3.connect(index_file) as db:
        released = db.execute("SELECT MAX(released_at) FROM associations").fetchone()[0]
        at = dict(db.execute("SELECT to_state, MAX(at) FROM series_events GROUP BY to_state"))
        result_file, = db.execute("SELECT result_file FROM jobs WHERE result_file IS NOT NULL")\
            .fetchone()
        sent = db.execute("SELECT MAX(sent_at) FROM outbox").fetchone()[0]
    result = json.loads(Path(result_file).read_text())
    ahead = "analysis_ahead_taken" in log.read_text()
    stages = {"release -> complete (grace)": at["complete"] - released,
              "complete -> job started": at["processing"] - at["complete"],
              "job: pipeline (or its rest) + result files, SEG, SR":
                  at["done"] - at["processing"]}
    stages.update({f"  pipeline{' (ahead)' if ahead else ''}: {k}": v
                   for k, v in result["stage_seconds"].items()})
    stages["done -> SR sent (outbox)"] = (sent or arrived) - at["done"]
    stages["TOTAL release -> SR at destination"] = arrived - released
    stages["analysis ahead of completion taken (1 = yes)"] = float(ahead)
    peaks = re.findall(r'"peak_rss_mb": (\d+)', log.read_text())
    stages["analysis process peak memory (MB)"] = float(peaks[-1]) if peaks else float("nan")
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ct", choices=("lung2", "synthetic"), default="lung2")
    parser.add_argument("--no-ahead", action="store_true",
                        help="[analysis] ahead_of_completion = false (start at completion)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    paths = lung2_series(OUT / "lung2_1.25")[0] if args.ct == "lung2" else chest_ct()
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(dir=OUT) as tmp:
            runs.append(one_run(paths, Path(tmp), ahead=not args.no_ahead))
    print(f"\nround trip of the {args.ct} CT, {len(paths)} slices of 512 x 512, default bundle, "
          f"CPU; median of {args.repeats} runs (seconds)")
    for stage in runs[0]:
        print(f"{stage:<52}{statistics.median(r[stage] for r in runs):>8.2f}")


if __name__ == "__main__":
    main()
