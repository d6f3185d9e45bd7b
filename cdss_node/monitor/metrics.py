"""``/metrics`` in Prometheus' text format.

The process's own counters (``Telemetry``) and, read from the index at each scrape so that
they survive restarts: series by state, the analysis queue, the outbox by state, spooled
instances, the analysis time and the round trip (first instance received → last result taken
by the destination) as histograms, disk free and reserve, the active model, and GPU memory
where ``nvidia-smi`` answers.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import TYPE_CHECKING, Iterable

from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from cdss_node.store import outbox
from cdss_node.store.states import SeriesState

if TYPE_CHECKING:
    from cdss_node.node import Node

ANALYSIS_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 900)
ROUNDTRIP_BUCKETS = (5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)


def metrics_text(node: "Node") -> bytes:
    return generate_latest(node.telemetry.registry)


class IndexCollector(Collector):
    """Gauges and histograms computed from the index (and the disk) when scraped."""

    def __init__(self, node: "Node"):
        self.node = node

    def collect(self) -> Iterable[Metric]:
        index = self.node.index
        yield _labelled("cdss_series", "Series by state.", "state",
                        _counts(index, "SELECT state AS k, COUNT(*) AS n FROM series "
                                "GROUP BY state"), [s.value for s in SeriesState])
        yield GaugeMetricFamily("cdss_queue_depth", "Series waiting for analysis.",
                                value=_scalar(index, "SELECT COUNT(*) FROM series WHERE state=?",
                                              (SeriesState.QUEUED.value,)))
        yield _labelled("cdss_outbox", "Result files to send, by state (pending, sent, dead).",
                        "state", outbox.counts(index), [outbox.PENDING, outbox.SENT, outbox.DEAD])
        yield GaugeMetricFamily("cdss_instances_spooled", "Instances held in the spool.",
                                value=_scalar(index, "SELECT COUNT(*) FROM instances"))
        yield _histogram("cdss_analysis_seconds", "Time of one analysis (finished jobs).",
                         _column(index, "SELECT finished_at - started_at FROM jobs WHERE "
                                 "finished_at IS NOT NULL AND started_at IS NOT NULL"),
                         ANALYSIS_BUCKETS)
        yield _histogram("cdss_roundtrip_seconds", "First instance received to last result "
                         "taken by the destinations, per analysed series generation.",
                         _column(index, ROUNDTRIP_SQL), ROUNDTRIP_BUCKETS)
        yield from self._disk()
        yield from self._model()
        yield from _gpu_memory()

    def _disk(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("cdss_disk_free_bytes", "Free bytes on the spool's disk.",
                                value=self.node.spool.free_bytes())
        yield GaugeMetricFamily("cdss_disk_reserve_bytes", "Free bytes kept in reserve; below "
                                "them C-STORE is refused with 0xA700.",
                                value=self.node.config.store.reserve_mb * 2**20)

    def _model(self) -> Iterable[Metric]:
        model = self.node.loaded_model
        info = GaugeMetricFamily("cdss_model_loaded", "1 while the analysis process holds the "
                                 "model named by the labels.",
                                 labels=["model_id", "version", "sha256", "synthetic", "device"])
        if model:
            info.add_metric([model["model_id"], model["version"], model["sha256"],
                             str(model["synthetic"]).lower(), model["device"]], 1)
        yield info


ROUNDTRIP_SQL = (
    "SELECT MAX(o.sent_at) - s.first_received FROM outbox o JOIN series s "
    "ON s.series_uid = o.series_uid GROUP BY o.series_uid, o.generation "
    "HAVING SUM(o.state != 'sent') = 0")


def _counts(index, sql: str) -> dict[str, int]:
    return {row["k"]: row["n"] for row in index.query(sql)}


def _scalar(index, sql: str, params: tuple = ()) -> float:
    return float(index.query(sql, params)[0][0])


def _column(index, sql: str) -> list[float]:
    return [float(row[0]) for row in index.query(sql) if row[0] is not None]


def _labelled(name: str, documentation: str, label: str, counts: dict[str, int],
              known: list[str]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key in dict.fromkeys([*known, *counts]):
        family.add_metric([key], counts.get(key, 0))
    return family


def _histogram(name: str, documentation: str, values: list[float],
               buckets: tuple[float, ...]) -> HistogramMetricFamily:
    cumulative = [(str(b), sum(v <= b for v in values)) for b in buckets]
    cumulative.append(("+Inf", len(values)))
    return HistogramMetricFamily(name, documentation, buckets=cumulative,
                                 sum_value=float(sum(values)))


def _gpu_memory() -> Iterable[Metric]:
    """GPU memory in use per GPU, where nvidia-smi exists (the analysis process holds it)."""
    tool = shutil.which("nvidia-smi")
    if not tool:
        return
    try:
        out = subprocess.run([tool, "--query-gpu=index,memory.used,memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return
    used = GaugeMetricFamily("cdss_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu"])
    total = GaugeMetricFamily("cdss_gpu_memory_total_bytes", "GPU memory.", labels=["gpu"])
    for line in out.strip().splitlines():
        gpu, used_mib, total_mib = (part.strip() for part in line.split(","))
        used.add_metric([gpu], float(used_mib) * 2**20)
        total.add_metric([gpu], float(total_mib) * 2**20)
    yield used
    yield total
