"""What ``cdss-node status`` shows: series, their states, instance counts and reasons.

No patient identity is stored in the index, so none can be shown.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cdss_node.store.index import Index


@dataclass(frozen=True)
class SeriesStatus:
    series_uid: str
    study_uid: str
    modality: str | None
    state: str
    generation: int
    instances: int
    first_received: float
    last_received: float
    completed_at: float | None
    reason: str | None
    result_file: str | None   # result.json of the current generation's analysis, if any

    def as_dict(self) -> dict:
        return asdict(self)


def series_status(index: Index, limit: int = 50) -> list[SeriesStatus]:
    """The most recently active series first."""
    rows = index.query(
        "SELECT s.series_uid, s.study_uid, s.modality, s.state, s.generation, "
        "(SELECT COUNT(*) FROM instances i WHERE i.series_uid = s.series_uid) AS instances, "
        "s.first_received, s.last_received, s.completed_at, s.reason, "
        "(SELECT j.result_file FROM jobs j WHERE j.series_uid = s.series_uid AND "
        " j.generation = s.generation AND j.result_file IS NOT NULL "
        " ORDER BY j.id DESC LIMIT 1) AS result_file "
        "FROM series s ORDER BY s.last_received DESC LIMIT ?", (limit,))
    return [SeriesStatus(**dict(r)) for r in rows]


def state_counts(index: Index) -> dict[str, int]:
    rows = index.query("SELECT state, COUNT(*) AS n FROM series GROUP BY state")
    return {r["state"]: r["n"] for r in rows}
