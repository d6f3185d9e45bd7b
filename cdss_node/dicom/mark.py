"""A radiologist's mark, read from the SR a viewer saved (OHIF's "Create report" and others).

The node accepts Comprehensive SR, Enhanced SR and Comprehensive 3D SR. It looks through the
content tree in document order for the first spatial coordinates: a SCOORD (a region, line or
point on one image, with the IMAGE item it was SELECTED FROM) or a SCOORD3D (patient
coordinates in a frame of reference). Where a viewer nests them (OHIF: a measurement group's
NUM, INFERRED FROM a SCOORD) does not matter, except that a point under a "Center" NUM
(OHIF's Probe and ArrowAnnotate) is taken at its first point, the spot pointed at. OHIF 3.x
writes Enhanced SR with SCOORD (``tests/marks.py`` says what it writes, with sources). The
observer is the Person Observer Name (DCM 121008) of the observation context (not dcmjs's
placeholder "unknown^unknown"), else the first Verifying Observer, else the Author Observer;
the marked series is the one the SR's evidence lists with the marked image.

The node's own reports are recognised by their Device Observer UID (DCM 121012) and ignored;
so is a report of this product whose device UID differs (a node whose data folder was made
anew), by its manufacturer and series description.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom.sop_class import (
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    EnhancedSRStorage,
)

from cdss_node.dicom.sop import STORAGE_SOP_CLASSES
from cdss_node.pipeline.mark import GRAPHIC_TYPES, IMAGE, PATIENT, Mark
from cdss_node.pipeline.reasons import NotEvaluableReason

MARK_SOP_CLASSES = (ComprehensiveSRStorage, EnhancedSRStorage, Comprehensive3DSRStorage)
PERSON_OBSERVER_NAME = "121008"
UNNAMED = ("", "unknown^unknown")  # dcmjs (OHIF) writes this name when it is given none
POINTED_AT = "111010"             # DCM "Center": OHIF's Probe and ArrowAnnotate NUMs; their
                                  # first point is the spot (the arrow's head)
DEVICE_OBSERVER_UID = "121012"
OBSERVER_TYPE, DEVICE = "121005", "121007"
OWN_SERIES_PREFIX = "CDSS EGFR"   # the node's result series' descriptions begin so
OWN_MANUFACTURER = "CDSS"         # dicom.seg.MANUFACTURER; not imported, so that highdicom
                                  # stays out of the receiving process
MAX_ITEMS = 10000                 # content items looked at, at most (a hostile tree is cut)


@dataclass(frozen=True)
class MarkProblem:
    """A mark the node cannot act on: its coded reason and a sentence."""

    reason: NotEvaluableReason
    detail: str


def is_own_report(ds: Dataset, device_uid: str | None) -> bool:
    """A report this node (or another node of this product) wrote."""
    try:
        if device_uid and device_uid in set(_device_uids(ds)):
            return True
    except (ValueError, TypeError, AttributeError, KeyError):   # an unreadable tree
        pass
    return (str(ds.get("Manufacturer", "")) == OWN_MANUFACTURER
            and str(ds.get("SeriesDescription", "")).startswith(OWN_SERIES_PREFIX))


def is_device_report(ds: Dataset) -> bool:
    """A report whose observer is a device (CAD, another AI) and no person: not a
    radiologist's mark (TID 1002: Observer Type (121005) = Device (121007))."""
    try:
        device = person = False
        for item in _items(ds):
            if _concept(item) == OBSERVER_TYPE and item.get("ValueType") == "CODE":
                device |= _code_value(item) == DEVICE
            person |= _concept(item) == PERSON_OBSERVER_NAME
        return device and not person
    except (ValueError, TypeError, AttributeError, KeyError):   # an unreadable tree
        return False


def read_mark(ds: Dataset) -> Mark | MarkProblem | None:
    """The SR's first mark; a MarkProblem when its first spatial coordinates cannot be used
    (or its tree cannot be read); None when it has none (a report without a mark)."""
    try:
        for item, image, parent in _coordinates(ds):
            return _mark(ds, item, image, parent)
    except (ValueError, TypeError, AttributeError, IndexError, KeyError) as error:
        return MarkProblem(NotEvaluableReason.MARK_WITHOUT_IMAGE,
                           f"the mark cannot be read ({type(error).__name__}: {error})"[:300])
    return None


def _mark(ds: Dataset, item: Dataset, image: Dataset | None, parent: str
           ) -> Mark | MarkProblem:
    common = dict(sr_sop_class_uid=str(ds.SOPClassUID),
                  sr_sop_instance_uid=str(ds.SOPInstanceUID),
                  sr_series_uid=str(ds.SeriesInstanceUID),
                  study_uid=str(ds.StudyInstanceUID), observer=observer_name(ds),
                  graphic_type=str(item.GraphicType).upper())
    if common["graphic_type"] not in GRAPHIC_TYPES:
        raise ValueError(f"graphic type {common['graphic_type']!r}")
    data = [float(v) for v in _values(item.GraphicData)]
    width = 3 if item.ValueType == "SCOORD3D" else 2
    points = _grouped(data, width)
    if parent == POINTED_AT or common["graphic_type"] == "POINT":
        common["graphic_type"], points = "POINT", points[:1]     # an arrow's head, a probe
    if item.ValueType == "SCOORD3D":
        frame = str(item.get("ReferencedFrameOfReferenceUID", ""))
        return Mark(**common, points=points, coordinates=PATIENT,
                    frame_of_reference_uid=frame, series_uid=_evidence_series(ds, None))
    reference = image.ReferencedSOPSequence[0] if image is not None else None
    if reference is None or not reference.get("ReferencedSOPInstanceUID"):
        return MarkProblem(NotEvaluableReason.MARK_WITHOUT_IMAGE,
                           "the mark's coordinates name no image (no SELECTED FROM image)")
    uid = str(reference.ReferencedSOPInstanceUID)
    frames = _values(reference.get("ReferencedFrameNumber", []))
    return Mark(**common, points=points, coordinates=IMAGE, image_uid=uid,
                frame_number=int(frames[0]) if frames else 0, series_uid=_evidence_series(ds, uid))


def _coordinates(ds: Dataset) -> Iterator[tuple[Dataset, Dataset | None, str]]:
    """Each SCOORD (with its IMAGE child) and SCOORD3D item in document order, with the
    concept of the item it hangs from (OHIF: the NUM it was INFERRED FROM)."""
    for item, parent in _items_with_parents(ds):
        kind = item.get("ValueType")
        if kind == "SCOORD3D":
            yield item, None, parent
        elif kind == "SCOORD":
            yield item, next((c for c in _children(item) if c.get("ValueType") == "IMAGE"),
                             None), parent


def _items_with_parents(ds: Dataset) -> Iterator[tuple[Dataset, str]]:
    stack = [(item, "") for item in reversed(_children(ds))]
    seen = 0
    while stack and seen < MAX_ITEMS:
        item, parent = stack.pop()
        seen += 1
        yield item, parent
        stack.extend((child, _concept(item)) for child in reversed(_children(item)))


def _children(item: Dataset) -> list[Dataset]:
    """An item's content items; none where (0040,A730) is not a sequence of items (a hostile
    or damaged SR may give it another VR)."""
    children = item.get("ContentSequence", [])
    if not isinstance(children, Sequence):
        return []
    return [child for child in children if isinstance(child, Dataset)]


def _items(ds: Dataset) -> Iterator[Dataset]:
    """Content items depth first, in document order, at most MAX_ITEMS."""
    return (item for item, _ in _items_with_parents(ds))


def observer_name(ds: Dataset) -> str:
    """The person who made the report: Person Observer Name, Verifying or Author Observer."""
    for item in _items(ds):
        if item.get("ValueType") == "PNAME" and _concept(item) == PERSON_OBSERVER_NAME:
            name = str(item.get("PersonName", "")).strip()
            if name.lower() not in UNNAMED:
                return name
    for sequence, attribute in (("VerifyingObserverSequence", "VerifyingObserverName"),
                                ("AuthorObserverSequence", "PersonName")):
        for entry in ds.get(sequence, []):
            if entry.get(attribute):
                return str(entry.get(attribute))
    return ""


def _device_uids(ds: Dataset) -> Iterator[str]:
    for item in _items(ds):
        if item.get("ValueType") == "UIDREF" and _concept(item) == DEVICE_OBSERVER_UID:
            yield str(item.get("UID", ""))


def _evidence_series(ds: Dataset, image_uid: str | None) -> str:
    """The evidence series holding ``image_uid``; for None, the first series of CT images."""
    for study in [*ds.get("CurrentRequestedProcedureEvidenceSequence", []),
                  *ds.get("PertinentOtherEvidenceSequence", [])]:
        for series in study.get("ReferencedSeriesSequence", []):
            for sop in series.get("ReferencedSOPSequence", []):
                if (sop.get("ReferencedSOPInstanceUID") == image_uid if image_uid
                        else sop.get("ReferencedSOPClassUID") in STORAGE_SOP_CLASSES):
                    return str(series.SeriesInstanceUID)
    return ""


def _concept(item: Dataset) -> str:
    names = item.get("ConceptNameCodeSequence", [])
    if not isinstance(names, Sequence) or not names or not isinstance(names[0], Dataset):
        return ""
    return str(names[0].get("CodeValue", ""))


def _code_value(item: Dataset) -> str:
    codes = item.get("ConceptCodeSequence", [])
    if not isinstance(codes, Sequence) or not codes or not isinstance(codes[0], Dataset):
        return ""
    return str(codes[0].get("CodeValue", ""))


def _values(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") \
        and not isinstance(value, (str, bytes)) else [value]


def _grouped(data: list[float], width: int) -> tuple[tuple[float, ...], ...]:
    if not data or len(data) % width:
        raise ValueError(f"{len(data)} graphic data values, not a multiple of {width}")
    return tuple(tuple(data[k:k + width]) for k in range(0, len(data), width))
