"""Checks of a received dataset before it is stored: can it be parsed, does it match its SOP
class, are its UIDs safe to use. Pixel data is measured, never decoded.

Each check returns a ``StoreProblem`` (the DICOM status to answer and a short comment) or None.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID

from cdss_node.uids import uid_problem

# C-STORE statuses (PS3.4 B.2.3)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110

_SEQUENCE_DELIMITER = {True: b"\xfe\xff\xdd\xe0\x00\x00\x00\x00",
                       False: b"\xff\xfe\xe0\xdd\x00\x00\x00\x00"}
_UNDEFINED = 0xFFFFFFFF
_PIXEL_DATA = 0x7FE00010
_DEFER_BYTES = 4096  # larger values (pixel data) are measured, not read
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
_REQUIRED_IMAGE = ("Rows", "Columns", "BitsAllocated")


@dataclass(frozen=True)
class StoreProblem:
    status: int
    comment: str  # goes into Error Comment (0000,0902): at most 64 characters

    def __post_init__(self) -> None:
        object.__setattr__(self, "comment", self.comment[:64])


def parse_dataset(raw: bytes, transfer_syntax: UID) -> Dataset | StoreProblem:
    """The dataset with values left unconverted, or the problem that stops parsing it."""
    little = transfer_syntax.is_little_endian
    try:
        ds = read_dataset(BytesIO(raw), transfer_syntax.is_implicit_VR, little,
                          defer_size=_DEFER_BYTES)
    except Exception as exc:  # pydicom raises many types on garbage; all mean the same here
        return StoreProblem(CANNOT_UNDERSTAND, f"cannot parse dataset: {type(exc).__name__}")
    if len(ds) == 0:
        return StoreProblem(CANNOT_UNDERSTAND, "empty or unreadable dataset")
    return _truncation_problem(ds, raw, little) or ds


def _truncation_problem(ds: Dataset, raw: bytes, little_endian: bool) -> StoreProblem | None:
    """pydicom silently drops a cut-off last element: check the last one ends the stream."""
    last = ds.get_item(max(ds.keys()), keep_deferred=True)
    length = getattr(last, "length", None)
    tell = getattr(last, "value_tell", None)
    if length is None or tell is None:
        return None
    if length == _UNDEFINED:
        ends = raw.endswith(_SEQUENCE_DELIMITER[little_endian])
    else:
        ends = tell + length == len(raw)
    return None if ends else StoreProblem(CANNOT_UNDERSTAND, "dataset is truncated")


def sop_problem(ds: Dataset, context_sop_class: str, affected_sop_instance: str
                ) -> StoreProblem | None:
    """UIDs present and valid, and equal to what the C-STORE request announced."""
    for keyword in _REQUIRED_UIDS:
        problem = uid_problem(keyword, ds.get(keyword))
        if problem:
            return StoreProblem(DATASET_DOES_NOT_MATCH_SOP_CLASS, problem)
    if ds.SOPClassUID != context_sop_class:
        return StoreProblem(DATASET_DOES_NOT_MATCH_SOP_CLASS,
                            "SOP Class UID differs from the presentation context")
    if ds.SOPInstanceUID != affected_sop_instance:
        return StoreProblem(DATASET_DOES_NOT_MATCH_SOP_CLASS,
                            "SOP Instance UID differs from the C-STORE request")
    return None


def image_problem(ds: Dataset, transfer_syntax: UID) -> StoreProblem | None:
    """An image IOD needs its pixel description and pixel data of a plausible length."""
    missing = [k for k in _REQUIRED_IMAGE if ds.get(k) in (None, "")]
    if missing or _PIXEL_DATA not in ds:
        what = ", ".join(missing or ["Pixel Data"])
        return StoreProblem(DATASET_DOES_NOT_MATCH_SOP_CLASS, f"missing {what}")
    if transfer_syntax.is_encapsulated:
        return None
    expected = _native_pixel_bytes(ds)
    found = ds.get_item(_PIXEL_DATA, keep_deferred=True).length
    if expected is None or found < expected:
        return StoreProblem(DATASET_DOES_NOT_MATCH_SOP_CLASS,
                            f"Pixel Data has {found} bytes, expected {expected}")
    return None


def _native_pixel_bytes(ds: Dataset) -> int | None:
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
        samples = int(ds.get("SamplesPerPixel") or 1)
        bits = int(ds.BitsAllocated)
        return (int(ds.Rows) * int(ds.Columns) * frames * samples * bits + 7) // 8
    except (TypeError, ValueError):
        return None
