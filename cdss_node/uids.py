"""DICOM UIDs as they arrive from the network, checked before they name a file or a row; and
the node's own device UID."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from pydicom.uid import generate_uid

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


DEVICE_UID_FILE = "device_uid"


def node_device_uid(data_dir: Path) -> str:
    """The node's own Device UID (the SR's Device Observer UID), made once at the first analysis
    and kept in ``data_dir/device_uid``, so that every report of one installation names the
    same device. A file that holds no valid UID is an error, not silently replaced."""
    path = Path(data_dir) / DEVICE_UID_FILE
    if not path.exists():
        _create_once(path, str(generate_uid()) + "\n")
    value = path.read_text(encoding="ascii", errors="replace").strip()
    if not is_valid_uid(value):
        raise ValueError(f"{path}: expected one DICOM UID, found {value[:80]!r} "
                         "(delete the file to make a new device UID)")
    return value


def _create_once(path: Path, text: str) -> None:
    """``path`` with ``text``, whole, unless another process made it first (link, not rename)."""
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w", encoding="ascii") as draft:
        draft.write(text)
    try:
        os.link(name, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(name)


def result_series_uid(source_series_uid: str, kind: str) -> str:
    """One SEG series (``kind`` "SEG") and one SR series ("SR") per analysed CT series: a
    new analysis of the series adds an instance to them, which viewers show as the current one."""
    return str(generate_uid(entropy_srcs=["CDSS EGFR node", kind, source_series_uid]))
