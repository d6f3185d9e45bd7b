"""``cdss-node demo``: the main job on the embedded defaults, told step by step.

Starts the node, sends a folder of DICOM files to it over a real association, waits until the
series is complete and queued, prints the node's status, and stops.
"""

from __future__ import annotations

import time
from pathlib import Path

from cdss_node.config import Config
from cdss_node.dicom.sender import AssociationFailed, dicom_files, store_files
from cdss_node.node import INDEX_FILE, Node
from cdss_node.store.status import series_status, state_counts


def run_demo(config: Config, series_dir: Path) -> int:
    files = dicom_files(series_dir) if series_dir.is_dir() else []
    if not files:
        print(f"demo: no DICOM files in {series_dir} (run from the repository root, "
              "or pass --series DIR)")
        return 1
    node = Node(config)
    node.start()
    try:
        return _send_and_show(node, config, files, series_dir)
    finally:
        node.stop()


def _send_and_show(node: Node, config: Config, files: list[Path], series_dir: Path) -> int:
    host = "127.0.0.1" if config.node.host in ("0.0.0.0", "::") else config.node.host
    say(f"1. node {config.node.ae_title} listening on {host}:{config.node.port}, "
        f"data in {config.data_path.resolve()}")
    say(f"2. sending {len(files)} files from {series_dir} with C-STORE ...")
    started = time.monotonic()
    try:
        results = store_files(files, config.node.ae_title, host, config.node.port)
    except AssociationFailed as exc:
        say(f"   failed: {exc}")
        return 1
    seconds = time.monotonic() - started
    failed = [r for r in results if not r.ok]
    say(f"   {len(results) - len(failed)} stored, {len(failed)} refused, "
        f"{seconds:.1f} s ({len(results) / seconds:.0f} images/s)")
    say(f"3. waiting for the series to be complete (grace {config.series.grace_s:g} s) ...")
    settled = node.wait_until_settled(config.series.grace_s + config.series.quiet_s + 5)
    say("4. the node's index now says (cdss-node status):")
    from cdss_node.cli import format_status

    latest = series_status(node.index, limit=5)
    say(format_status(config.data_path / INDEX_FILE, state_counts(node.index), latest))
    if latest:
        say("5. what happened to that series:")
        for line in series_history(node, latest[0].series_uid):
            say(f"   {line}")
    say("   The analysis worker (EGFR model, SEG and SR back to PACS) is not wired into the node "
        "yet: the series waits in state 'queued'.")
    return 0 if settled and not failed else 1


def series_history(node: Node, series_uid: str) -> list[str]:
    rows = node.index.query("SELECT at, from_state, to_state, reason FROM series_events "
                            "WHERE series_uid=? ORDER BY id", (series_uid,))
    first = rows[0]["at"] if rows else 0.0
    return [f"+{r['at'] - first:6.2f} s  {r['from_state'] or '-':>10} -> {r['to_state']:<10} "
            f"{r['reason'] or ''}" for r in rows]


def say(text: str) -> None:
    print(text, flush=True)
