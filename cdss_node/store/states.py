"""The life of a series in the node, and the transitions allowed between its states."""

from __future__ import annotations

from enum import StrEnum


class SeriesState(StrEnum):
    RECEIVING = "receiving"
    COMPLETE = "complete"
    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    NOT_EVALUABLE = "not_evaluable"


FINISHED = frozenset({SeriesState.DONE, SeriesState.FAILED, SeriesState.NOT_EVALUABLE})

_ALLOWED: dict[SeriesState, frozenset[SeriesState]] = {
    SeriesState.RECEIVING: frozenset({SeriesState.COMPLETE}),
    SeriesState.COMPLETE: frozenset({SeriesState.QUEUED, SeriesState.RECEIVING}),
    SeriesState.QUEUED: frozenset({SeriesState.PROCESSING, SeriesState.RECEIVING}),
    SeriesState.PROCESSING: frozenset(FINISHED | {SeriesState.QUEUED, SeriesState.RECEIVING}),
    # a finished series is queued again for a request (a radiologist's mark, analyze-study)
    SeriesState.DONE: frozenset({SeriesState.RECEIVING, SeriesState.QUEUED}),
    SeriesState.FAILED: frozenset({SeriesState.RECEIVING, SeriesState.QUEUED}),
    SeriesState.NOT_EVALUABLE: frozenset({SeriesState.RECEIVING, SeriesState.QUEUED}),
}


class TransitionError(ValueError):
    pass


def check_transition(current: str, to: str) -> None:
    """Raise TransitionError unless a series may go from ``current`` to ``to``."""
    if SeriesState(to) not in _ALLOWED[SeriesState(current)]:
        raise TransitionError(f"series state cannot go from {current} to {to}")
