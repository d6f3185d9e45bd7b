"""DICOM UIDs as they arrive from the network: checked before they name a file or a row."""

from __future__ import annotations

import re

# PS3.5 9.1: components of digits, no leading zero unless the component is "0", at most 64 chars.
_UID_RE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
MAX_UID_LENGTH = 64


def is_valid_uid(value: object) -> bool:
    """True for a syntactically valid UID; such a string is also a safe file name."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_UID_LENGTH
        and _UID_RE.fullmatch(value) is not None
    )


def uid_problem(name: str, value: object) -> str | None:
    """A sentence saying why ``value`` is not a valid UID for attribute ``name``, or None."""
    if value is None or value == "":
        return f"{name} is missing"
    if not is_valid_uid(value):
        shown = str(value)[:80]
        return f"{name} is not a valid UID: {shown!r}"
    return None
