"""What the node's own process counts as it runs: instances received, C-STORE refusals and
rejected associations (by reason), and when the periodic work last ran.

Everything else the metrics and the status page show is read from the index when asked, so it
survives restarts; these counters start at 0 with the process, as Prometheus counters do. Each
node has its own registry (tests run several nodes in one process).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

RECENT_REFUSALS = 50


@dataclass(frozen=True)
class Refusal:
    """One refused C-STORE or rejected association, as the status page lists it."""

    at: float
    what: str              # "C-STORE" or "association"
    status: str            # "0xa700", or the A-ASSOCIATE-RJ reason
    reason: str
    calling_aet: str


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.instances_received = Counter(
            "cdss_instances_received", "Instances stored by C-STORE since the node started "
            "(duplicates not counted).", registry=self.registry)
        self.store_refusals = Counter(
            "cdss_store_refusals", "C-STORE requests refused, by DICOM status and reason.",
            ["status", "reason"], registry=self.registry)
        self.association_rejections = Counter(
            "cdss_association_rejections", "Associations rejected, by reason.", ["reason"],
            registry=self.registry)
        self._recent: deque[Refusal] = deque(maxlen=RECENT_REFUSALS)
        self._beats: dict[str, float] = {}
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def refused_store(self, status: int, reason: str, calling_aet: str) -> None:
        self.store_refusals.labels(hex(status), _reason_label(reason)).inc()
        self._remember(Refusal(time.time(), "C-STORE", hex(status), reason, calling_aet))

    def rejected_association(self, reason: str, calling_aet: str) -> None:
        self.association_rejections.labels(reason).inc()
        self._remember(Refusal(time.time(), "association", "rejected", reason, calling_aet))

    def recent_refusals(self) -> list[Refusal]:
        with self._lock:
            return list(reversed(self._recent))

    def beat(self, name: str) -> None:
        """The periodic job ``name`` has just run."""
        self._beats[name] = time.monotonic()

    def seconds_since(self, name: str) -> float | None:
        last = self._beats.get(name)
        return None if last is None else time.monotonic() - last

    def seconds_up(self) -> float:
        return time.monotonic() - self.started

    def _remember(self, refusal: Refusal) -> None:
        with self._lock:
            self._recent.append(refusal)


def _reason_label(reason: str) -> str:
    """A bounded label: the reason's words before any detail (a UID, a number, a path)."""
    head = reason.split(":")[0].split("(")[0].strip()
    return " ".join(w for w in head.split() if not any(c.isdigit() for c in w))[:60] or "other"
