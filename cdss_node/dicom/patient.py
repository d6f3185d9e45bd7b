"""Reading who a received instance belongs to, for the status page when it is configured to
show patient identity (pydicom only: the node's own process stays light)."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread


def patient_identity(path: Path) -> tuple[str, str]:
    """Patient's Name and Patient ID of a spooled instance."""
    header = dcmread(path, stop_before_pixels=True, specific_tags=["PatientName", "PatientID"])
    return str(header.get("PatientName", "")), str(header.get("PatientID", ""))
