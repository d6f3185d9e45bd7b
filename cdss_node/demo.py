"""``cdss-node demo``: the main job on the embedded defaults, told step by step.

Starts the node, sends a folder of DICOM files to it over a real association, waits until the
series is complete and analysed, prints the node's status and the analysis result, waits until
the SEG, SR and result image have been sent to the destinations and stops. With no
``[[destinations]]`` in the configuration it starts a stand-in PACS
(:mod:`cdss_node.dicom.demo_pacs`) and sends to that, then shows what arrived there: the objects
and the first lines of the SR.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from cdss_node.config import Config
from cdss_node.dicom.demo_pacs import DemoPacs
from cdss_node.dicom.sender import AssociationFailed, dicom_files, store_files
from cdss_node.jobs import SC_FILE, SEG_FILE, SR_FILE
from cdss_node.node import INDEX_FILE, Node
from cdss_node.store import outbox
from cdss_node.store.status import series_status, state_counts


def run_demo(config: Config, series_dir: Path) -> int:
    files = dicom_files(series_dir) if series_dir.is_dir() else []
    if not files:
        print(f"demo: no DICOM files in {series_dir} (run from the repository root, "
              "or pass --series DIR)")
        return 1
    pacs = None if config.destinations else DemoPacs(config.data_path / "demo_pacs")
    if pacs is not None:
        config = replace(config, destinations=(pacs.start(),))
    node = Node(config)
    node.start()
    try:
        ok = _send_and_show(node, config, files, series_dir)
        return 0 if _show_delivery(node, config, pacs) and ok else 1
    finally:
        node.stop()
        if pacs is not None:
            pacs.stop()


def _send_and_show(node: Node, config: Config, files: list[Path], series_dir: Path) -> bool:
    host = "127.0.0.1" if config.node.host in ("0.0.0.0", "::") else config.node.host
    say(f"1. node {config.node.ae_title} listening on {host}:{config.node.port}, "
        f"data in {config.data_path.resolve()}")
    if node.http:
        say(f"   status page http://{config.http.host}:{node.http.port}/ (and /healthz, "
            f"/metrics) while it runs")
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
    latest = series_status(node.index, limit=1)
    analysed = bool(latest) and _wait_for_analysis(node, config, latest[0].series_uid)
    say("5. the node's index now says (cdss-node status):")
    from cdss_node.cli import format_status

    latest = series_status(node.index, limit=5)
    say(format_status(config.data_path / INDEX_FILE, state_counts(node.index), latest))
    if latest:
        say("6. what happened to that series:")
        for line in series_history(node, latest[0].series_uid):
            say(f"   {line}")
        show_result(node, latest[0].series_uid)
    return settled and analysed and not failed


def _wait_for_analysis(node: Node, config: Config, series_uid: str) -> bool:
    if node.worker is None:
        say("4. [analysis] workers = 0: the series waits in state 'queued'")
        return True
    say("4. analysing (segmentation, radiomics, clinical facts, EGFR model) ...")
    started = time.monotonic()
    state = node.wait_until_analysed(series_uid, config.analysis.job_timeout_s + 300)
    say(f"   {state or 'not finished'} after {time.monotonic() - started:.1f} s")
    return state is not None


def show_result(node: Node, series_uid: str) -> None:
    rows = node.index.query("SELECT result_file FROM jobs WHERE series_uid=? AND result_file "
                            "IS NOT NULL ORDER BY id DESC LIMIT 1", (series_uid,))
    if not rows:
        return
    path = Path(rows[0]["result_file"])
    result = json.loads(path.read_text(encoding="utf-8"))
    say(f"7. the result ({path}):")
    for line in result_lines(result):
        say(f"   {line}")
    dicom = [name for name in (SEG_FILE, SR_FILE, SC_FILE) if (path.parent / name).is_file()]
    say(f"   DICOM for the viewer, beside it: {', '.join(dicom) or 'none'}")


def result_lines(result: dict) -> list[str]:
    model = result["model"]
    lines = [f"model: {model['name']} {model['version']} ({model['folds']} folds)"
             + (" - TRAINED ON SYNTHETIC DATA, not for clinical use"
                if model["trained_on_synthetic_data"] else "")]
    if result["status"] != "ok":
        reason = result["reason"]
        return lines + [f"not evaluable: {reason['code']} {reason['meaning']} - "
                        f"{reason['detail']}"]
    p, tumor = result["prediction"], result["tumor"]
    return lines + [
        f"tumor: {tumor['volume_mm3'] / 1000:.1f} ml at voxel (z, y, x) "
        f"{tuple(tumor['centre_voxel_zyx'])}, mask in {tumor['mask_file']}",
        f"EGFR: {p['label']}, probability {p['probability']:.3f} (threshold "
        f"{p['threshold']:.3f}; folds " + ", ".join(f"{v:.3f}" for v in
                                                   p["fold_probabilities"]) + ")",
        f"{len(result['radiomics'])} radiomics features; clinical inputs imputed: "
        + (", ".join(result["clinical"]["imputed"]) or "none"),
        "seconds per stage: " + ", ".join(f"{k} {v:.2f}" for k, v in
                                          result["stage_seconds"].items())]


def _show_delivery(node: Node, config: Config, pacs: DemoPacs | None) -> bool:
    if node.worker is None:
        return True
    names = ", ".join(f"{d.name} ({d.ae_title}@{d.host}:{d.port})" for d in config.destinations)
    say(f"8. sending SEG, SR and result image to {names} ...")
    counts = _wait_for_outbox(node, timeout_s=60)
    say(f"   outbox: {counts}")
    if pacs is None:
        return not counts.get(outbox.PENDING) and not counts.get(outbox.DEAD)
    studies = {row["study_uid"] for row in node.index.query("SELECT study_uid FROM series")}
    say(f"9. the stand-in PACS ({pacs.folder}) received:")
    for item in pacs.received:
        where = "the CT's study" if item.study_uid in studies else "ANOTHER study"
        say(f"   {item.modality:<3} {item.series_description!r} into {where} ({item.path.name})")
        if item.summary:
            say("   first lines of the SR, as a viewer shows them:")
            for line in item.summary:
                say(f"     {line}")
    return len(pacs.received) > 0 and not counts.get(outbox.PENDING)


def _wait_for_outbox(node: Node, timeout_s: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    counts = outbox.counts(node.index)
    while counts.get(outbox.PENDING) and time.monotonic() < deadline:
        time.sleep(0.2)
        counts = outbox.counts(node.index)
    return counts


def series_history(node: Node, series_uid: str) -> list[str]:
    rows = node.index.query("SELECT at, from_state, to_state, reason FROM series_events "
                            "WHERE series_uid=? ORDER BY id", (series_uid,))
    first = rows[0]["at"] if rows else 0.0
    return [f"+{r['at'] - first:6.2f} s  {r['from_state'] or '-':>10} -> {r['to_state']:<10} "
            f"{r['reason'] or ''}" for r in rows]


def say(text: str) -> None:
    print(text, flush=True)
