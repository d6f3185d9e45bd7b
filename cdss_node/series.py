"""When is a series complete?

DICOM has no "end of series" message. The node calls a series complete when every association
that delivered to it has ended and no instance arrived for a short grace period, or, as a
fallback for peers that hold an association open, after a longer quiet period. An instance that
arrives later reopens the series (the index does that), and its result will be superseded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from cdss_node.logs import get_logger
from cdss_node.store.index import Index, ReceivingSeries

log = get_logger(__name__)


@dataclass(frozen=True)
class CompletionRule:
    grace_s: float = 1.9
    quiet_s: float = 30.0

    def __post_init__(self) -> None:
        if self.grace_s < 0:
            raise ValueError(f"grace_s: expected >= 0, found {self.grace_s}")
        if self.quiet_s <= 0:
            raise ValueError(f"quiet_s: expected > 0, found {self.quiet_s}")

    def why_complete(self, series: ReceivingSeries, now: float) -> str | None:
        """The reason the series is complete at ``now``, or None while it may still grow."""
        idle = now - series.last_received
        if series.open_associations == 0 and idle >= self.grace_s:
            return f"associations ended and no instance for {idle:.1f} s"
        if idle >= self.quiet_s:
            return f"no instance for {idle:.0f} s with an association still open"
        return None


class SeriesTracker:
    """Applies the completion rule to the index; run periodically and after each release."""

    def __init__(self, index: Index, rule: CompletionRule):
        self.index = index
        self.rule = rule

    def check(self, now: float | None = None) -> list[str]:
        """Mark due series complete and queue their job; returns their UIDs."""
        now = time.time() if now is None else now
        completed = []
        for series in self.index.receiving_series():
            why = self.rule.why_complete(series, now)
            if why and self.index.complete_and_queue(series.series_uid, series.last_received, why):
                log.info("series_complete", series_uid=series.series_uid, reason=why)
                completed.append(series.series_uid)
        return completed
