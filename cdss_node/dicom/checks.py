"""Checks of a received dataset before it is stored: can it be parsed, does it match its SOP
class, are its UIDs safe to use. Pixel data is measured, never decoded.

Each check returns a ``StoreProblem`` (the DICOM status to answer and a short comment) or None.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import UID

from cdss_node.dicom.header_scan import (UNDEFINED, HeaderScan, TooDeep, TooManyElements,
                                         Truncated)
from cdss_node.uids import uid_problem

# C-STORE statuses (PS3.4 B.2.3)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110

SOP_CLASS_UID, SOP_INSTANCE_UID, MODALITY = 0x00080016, 0x00080018, 0x00080060
STUDY_INSTANCE_UID, SERIES_INSTANCE_UID = 0x0020000D, 0x0020000E
SAMPLES_PER_PIXEL, NUMBER_OF_FRAMES = 0x00280002, 0x00280008
ROWS, COLUMNS, BITS_ALLOCATED = 0x00280010, 0x00280011, 0x00280100
PIXEL_DATA = 0x7FE00010
_REQUIRED_UIDS = (("StudyInstanceUID", STUDY_INSTANCE_UID),
                  ("SeriesInstanceUID", SERIES_INSTANCE_UID),
                  ("SOPInstanceUID", SOP_INSTANCE_UID), ("SOPClassUID", SOP_CLASS_UID))
_REQUIRED_IMAGE = (("Rows", ROWS), ("Columns", COLUMNS), ("BitsAllocated", BITS_ALLOCATED))


@dataclass(frozen=True)
class StoreProblem:
    status: int
    comment: str  # goes into Error Comment (0000,0902): at most 64 characters

    def __post_init__(self) -> None:
        object.__setattr__(self, "comment", self.comment[:64])


@dataclass(frozen=True)
class InstanceHeader:
    """What the receiver needs to know of an instance that passed the checks."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    modality: str


def scan_dataset(raw: bytes, transfer_syntax: UID) -> HeaderScan | StoreProblem:
    """The dataset's top-level elements, or why it cannot be understood."""
    try:
        scan = HeaderScan(raw, transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian)
    except Truncated as exc:
        return StoreProblem(CANNOT_UNDERSTAND, f"dataset is truncated ({exc})")
    except (TooDeep, TooManyElements) as exc:
        return StoreProblem(CANNOT_UNDERSTAND, f"dataset cannot be parsed ({exc})")
    if not scan.elements:
        return StoreProblem(CANNOT_UNDERSTAND, "empty dataset")
    return scan


def instance_header(scan: HeaderScan, context_sop_class: str, affected_sop_instance: str
                    ) -> InstanceHeader | StoreProblem:
    """UIDs present and valid, and equal to what the C-STORE request announced."""
    values = {name: scan.text(tag) for name, tag in _REQUIRED_UIDS}
    for name, value in values.items():
        problem = uid_problem(name, value)
        if problem:
            return StoreProblem(DATASET_DOES_NOT_MATCH_SOP_CLASS, problem)
    if values["SOPClassUID"] != context_sop_class:
        return StoreProblem(DATASET_DOES_NOT_MATCH_SOP_CLASS,
                            "SOP Class UID differs from the presentation context")
    if values["SOPInstanceUID"] != affected_sop_instance:
        return StoreProblem(DATASET_DOES_NOT_MATCH_SOP_CLASS,
                            "SOP Instance UID differs from the C-STORE request")
    return InstanceHeader(values["SOPClassUID"], values["SOPInstanceUID"],
                          values["StudyInstanceUID"], values["SeriesInstanceUID"],
                          scan.text(MODALITY) or "")


def image_problem(scan: HeaderScan, transfer_syntax: UID) -> StoreProblem | None:
    """An image IOD needs its pixel description and pixel data of a plausible length."""
    missing = [name for name, tag in _REQUIRED_IMAGE if not scan.us(tag)]
    if missing or PIXEL_DATA not in scan:
        what = ", ".join(missing or ["Pixel Data"])
        return StoreProblem(DATASET_DOES_NOT_MATCH_SOP_CLASS, f"missing {what}")
    found = scan.elements[PIXEL_DATA].length
    if transfer_syntax.is_encapsulated:
        if found != UNDEFINED:  # PS3.5 A.4: encapsulated Pixel Data has an undefined length
            return StoreProblem(DATASET_DOES_NOT_MATCH_SOP_CLASS,
                                "Pixel Data is not encapsulated as the transfer syntax says")
        return None
    expected = _native_pixel_bytes(scan)
    if expected is None or found < expected:
        return StoreProblem(DATASET_DOES_NOT_MATCH_SOP_CLASS,
                            f"Pixel Data has {found} bytes, expected {expected}")
    return None


def _native_pixel_bytes(scan: HeaderScan) -> int | None:
    try:
        frames = int(scan.text(NUMBER_OF_FRAMES) or 1)
    except ValueError:
        return None
    samples = scan.us(SAMPLES_PER_PIXEL) or 1
    rows, columns, bits = scan.us(ROWS), scan.us(COLUMNS), scan.us(BITS_ALLOCATED)
    return (rows * columns * frames * samples * bits + 7) // 8  # type: ignore[operator]
