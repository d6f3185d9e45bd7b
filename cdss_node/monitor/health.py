"""``/healthz``: is the node able to do its job right now?

Checks, each ``ok`` or not with a one-line detail: the index takes a write; the spool takes a
file as the receiver writes one (created in its temporary folder, written, renamed, deleted: when
it cannot, for want of inodes, a read-only disk or a broken folder, C-STORE answers 0xA700); the
disk has more free space than the reserve (below it, 0xA700 too); the model is loaded and hashed
by the analysis process; the scheduler runs its periodic work. The answer is 200 when every
check passes, else 503, with the active model's identity and the last error (for reading, not
counted against health).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from cdss_node.store import outbox
from cdss_node.store.orphans import PROBE_PREFIX    # start-up deletes a probe left behind

if TYPE_CHECKING:
    from cdss_node.node import Node

STALE_FACTOR, STALE_MIN_S = 10, 5.0   # the completion check is late beyond max(10 x interval, 5 s)
_probes = itertools.count()           # concurrent requests probe with files of their own


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def health(node: "Node") -> dict:
    checks = [_index_writable(node), _spool_writable(node), _disk_headroom(node), _model(node),
              _scheduler(node)]
    return {"status": "ok" if all(c.ok for c in checks) else "unhealthy",
            "checks": [asdict(c) for c in checks], "model": node.loaded_model,
            "last_error": last_error(node)}


def _index_writable(node: "Node") -> Check:
    try:
        node.index.write_heartbeat(time.time())
    except Exception as error:   # sqlite3.Error, OSError: reported, never raised
        return Check("index_writable", False, f"{type(error).__name__}: {error}")
    return Check("index_writable", True, str(node.index.path))


def _spool_writable(node: "Node") -> Check:
    """The receiver's own write (temporary file, rename) of a small file, then its deletion."""
    root = node.spool.root
    probe = root / f"{PROBE_PREFIX}{next(_probes)}"
    try:
        node.spool.write_atomic(probe, b"healthz\n")
        probe.unlink()
    except OSError as error:
        return Check("spool_writable", False, f"cannot write a file in {root}: "
                     f"{error.strerror or error}: C-STORE is refused with 0xA700")
    return Check("spool_writable", True, f"a file was written, renamed and deleted in {root}")


def _disk_headroom(node: "Node") -> Check:
    free_mb = node.spool.free_bytes() / 2**20
    reserve_mb = node.config.store.reserve_mb
    detail = f"{free_mb:.0f} MB free, reserve {reserve_mb} MB"
    if free_mb <= reserve_mb:
        return Check("disk_headroom", False, detail + ": C-STORE is refused with 0xA700")
    return Check("disk_headroom", True, detail)


def _model(node: "Node") -> Check:
    if node.worker is None:
        return Check("model_loaded", True, "no analysis on this node ([analysis] workers = 0)")
    model = node.loaded_model
    if not model:
        return Check("model_loaded", False, "the analysis process has not loaded a model "
                     f"from {node.worker.settings.bundle_path}")
    return Check("model_loaded", True, f"{model['name']} {model['version']} "
                 f"sha256 {model['sha256'][:12]}… on {model['device']}")


def _scheduler(node: "Node") -> Check:
    interval = node.config.series.check_interval_s
    since = node.telemetry.seconds_since("completion")
    limit = max(STALE_FACTOR * interval, STALE_MIN_S)
    if not node.scheduler.running:
        return Check("scheduler_alive", False, "the scheduler is not running")
    if since is None and node.telemetry.seconds_up() <= limit:   # the first run is due
        return Check("scheduler_alive", True, "started; the first completion check is due")
    if since is None or since > limit:
        late = "never ran" if since is None else f"last ran {since:.0f} s ago"
        return Check("scheduler_alive", False, f"the series completion check {late}")
    return Check("scheduler_alive", True, f"series completion checked {since:.1f} s ago")


def last_error(node: "Node") -> dict | None:
    """The newest of: the analysis process's, a job's, a delivery's."""
    found = []
    if node.worker and node.worker.last_error:
        at, message = node.worker.last_error
        found.append({"at": at, "where": "analysis", "error": message})
    job = node.index.query("SELECT COALESCE(finished_at, started_at, created_at) AS at, error "
                           "FROM jobs WHERE error IS NOT NULL "
                           "ORDER BY COALESCE(finished_at, created_at) DESC LIMIT 1")
    if job and job[0]["at"]:
        found.append({"at": job[0]["at"], "where": "job", "error": job[0]["error"]})
    sent = node.index.query("SELECT next_attempt_at AS at, destination, last_error FROM outbox "
                            "WHERE last_error IS NOT NULL AND state != ? "
                            "ORDER BY id DESC LIMIT 1", (outbox.SENT,))
    if sent:
        found.append({"at": sent[0]["at"], "where": f"sending to {sent[0]['destination']}",
                      "error": sent[0]["last_error"]})
    return max(found, key=lambda e: e["at"]) if found else None
