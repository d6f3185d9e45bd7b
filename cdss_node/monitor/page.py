"""The status page: what the node did with each recent series, for IT and the reading room.

One HTML page, no scripts, reloading itself every 10 s: the node and its active model (marked
when trained on synthetic data), the health checks, disk and outbox, recent series (state,
instances, times, result or reason) and recent refusals. Patient name and ID appear only when
``[http] show_patient_identity`` is true; otherwise only UIDs, as in the logs.
"""

from __future__ import annotations

import json
import time
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from cdss_node.dicom.patient import patient_identity
from cdss_node.monitor.health import health
from cdss_node.store import outbox
from cdss_node.store.status import SeriesStatus, series_status

if TYPE_CHECKING:
    from cdss_node.node import Node

RECENT_SERIES = 50
STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#1d2733}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;font-size:.88em}td,th{border:1px solid #c9d1da;padding:.3em .55em;
text-align:left;vertical-align:top}th{background:#eef2f6}
.ok{color:#17723a}.bad{color:#b3261e;font-weight:600}.warn{background:#fff4d6;padding:.5em;
border:1px solid #e0b84b}.uid{font-family:monospace;font-size:.9em}
.state-done{color:#17723a}.state-failed,.state-not_evaluable{color:#b3261e}
"""


def status_page(node: "Node", now: float | None = None) -> str:
    now = time.time() if now is None else now
    report = health(node)
    parts = [f"<h1>CDSS EGFR node {escape(node.config.node.ae_title)}</h1>",
             _model_section(report["model"]), _health_section(report),
             _series_section(node, now), _refusals_section(node)]
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<meta http-equiv=refresh content=10><title>CDSS EGFR node status</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}"
            f"<p>Page made {_time(now)} UTC.</p></body></html>")


def _model_section(model: dict | None) -> str:
    if not model:
        return "<p class=bad>No model loaded (see the checks below).</p>"
    text = (f"<p>Model <b>{escape(model['name'])}</b> {escape(model['version'])} "
            f"(<span class=uid>{escape(model['model_id'])}</span>, sha256 "
            f"<span class=uid>{escape(model['sha256'][:16])}…</span>) on "
            f"{escape(model['device'])}; segmenter {escape(model['segmenter'])}.</p>")
    if model["synthetic"]:
        text += ("<p class=warn>This model was trained on SYNTHETIC data: its results are "
                 "not for clinical use.</p>")
    return text


def _health_section(report: dict) -> str:
    rows = "".join(f"<tr><td>{escape(c['name'])}</td><td class={'ok' if c['ok'] else 'bad'}>"
                   f"{'ok' if c['ok'] else 'FAILING'}</td><td>{escape(c['detail'])}</td></tr>"
                   for c in report["checks"])
    error = report["last_error"]
    last = ("none" if not error else
            f"{_time(error['at'])} UTC, {escape(error['where'])}: {escape(error['error'])}")
    return (f"<h2>Health: <span class={'ok' if report['status'] == 'ok' else 'bad'}>"
            f"{escape(report['status'])}</span></h2><table>{rows}</table>"
            f"<p>Last error: {last}</p>")


def _series_section(node: "Node", now: float) -> str:
    rows = series_status(node.index, RECENT_SERIES)
    sending = outbox.counts(node.index)
    head = (f"<h2>Recent series</h2><p>Results waiting to be sent: "
            f"{sending.get(outbox.PENDING, 0)}; undeliverable (dead): "
            f"<span class={'bad' if sending.get(outbox.DEAD) else 'ok'}>"
            f"{sending.get(outbox.DEAD, 0)}</span>.</p>")
    if not rows:
        return head + "<p>No series received yet.</p>"
    timings = _timings(node, [r.series_uid for r in rows])
    identity = node.config.http.show_patient_identity
    columns = ["series", *(["patient"] if identity else []), "modality", "state",
               "instances", "received", "analysis", "sent", "result or reason"]
    body = "".join(_series_row(node, r, timings.get(r.series_uid, {}), identity, now)
                   for r in rows)
    return (head + "<table><tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>"
            + body + "</table>")


def _series_row(node: "Node", row: SeriesStatus, timing: dict, identity: bool,
                now: float) -> str:
    cells = [f"<span class=uid title='{escape(row.series_uid)}'>…{escape(row.series_uid[-18:])}"
             f"</span>"]
    if identity:
        cells.append(escape(_patient(node, row.series_uid)))
    analysis = timing.get("analysis_s")
    cells += [escape(row.modality or ""), f"<span class=state-{escape(row.state)}>"
              f"{escape(row.state)}</span>", str(row.instances),
              f"{_time(row.first_received)} ({_ago(now - row.last_received)})",
              "" if analysis is None else f"{analysis:.1f} s",
              _time(timing["sent_at"]) if timing.get("sent_at") else "",
              escape(_result(row))]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _timings(node: "Node", series_uids: list[str]) -> dict[str, dict]:
    marks = ",".join("?" * len(series_uids))
    found: dict[str, dict] = {uid: {} for uid in series_uids}
    for r in node.index.query(
            f"SELECT series_uid, MAX(finished_at - started_at) AS s FROM jobs WHERE series_uid "
            f"IN ({marks}) AND finished_at IS NOT NULL GROUP BY series_uid", tuple(series_uids)):
        found[r["series_uid"]]["analysis_s"] = r["s"]
    for r in node.index.query(
            f"SELECT series_uid, MAX(sent_at) AS t FROM outbox WHERE series_uid IN ({marks}) "
            f"GROUP BY series_uid", tuple(series_uids)):
        found[r["series_uid"]]["sent_at"] = r["t"]
    return found


def _result(row: SeriesStatus) -> str:
    if row.reason and row.state != "done":
        return row.reason
    if not row.result_file or not Path(row.result_file).is_file():
        return ""
    result = json.loads(Path(row.result_file).read_text())
    prediction = result.get("prediction") or {}
    if prediction.get("probability") is None:
        return row.reason or ""
    lossy = "; lossy-compressed CT" if (result.get("series") or {}).get("lossy_compressed") else ""
    flags = "".join(f"; {flag['meaning']}" for flag in result.get("quality_flags") or [])
    return f"{prediction['label']} (p = {prediction['probability']:.3f}{lossy}{flags})"


def _patient(node: "Node", series_uid: str) -> str:
    paths = node.index.series_paths(series_uid)
    if not paths:
        return "(instances purged)"
    name, patient_id = patient_identity(node.spool.root / paths[0])
    return f"{name} ({patient_id})"


def _refusals_section(node: "Node") -> str:
    refusals = node.telemetry.recent_refusals()
    if not refusals:
        return "<h2>Refusals</h2><p>None since the node started.</p>"
    rows = "".join(f"<tr><td>{_time(r.at)}</td><td>{escape(r.what)}</td>"
                   f"<td>{escape(r.status)}</td><td>{escape(r.reason)}</td>"
                   f"<td>{escape(r.calling_aet)}</td></tr>" for r in refusals)
    return ("<h2>Refusals</h2><table><tr><th>time (UTC)</th><th>what</th><th>status</th>"
            f"<th>reason</th><th>calling AE</th></tr>{rows}</table>")


def _time(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"
