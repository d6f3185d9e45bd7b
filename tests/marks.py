"""Test fixtures: a radiologist's "mark" SR, written as OHIF Viewer 3.x writes it.

OHIF's "Create report" (extension ``@ohif/extension-cornerstone-dicom-sr``) runs
``MeasurementReport.generateReport`` of ``@cornerstonejs/adapters`` (Cornerstone3D), which
builds the tree with dcmjs' ``TID1500``/``TID300`` classes and ``derivations.StructuredReport``,
and stores the naturalized dataset by STOW-RS. What follows was read from the sources below
(cornerstonejs/cornerstone3D at v5.8.2 = 7034957b, tag v4.15.16 for the older layout;
dcmjs-org/dcmjs at v0.52.0 = 81e7e11c, tag v0.45.0 for the older layout; OHIF/Viewers files
from the search index, one stored version each, not pinned to a release).

Established facts (source in brackets; CS3D = cornerstonejs/cornerstone3D
packages/adapters/src/adapters/Cornerstone3D/, DCMJS = dcmjs-org/dcmjs src/, OHIF =
OHIF/Viewers extensions/):

* SOP Class: **Enhanced SR** 1.2.840.10008.5.1.4.1.1.88.22 (DCMJS derivations/StructuredReport.js
  ``sopClassUIDsByName.EnhancedSR``). It is not Comprehensive SR. Comprehensive 3D SR (.34) only
  when some measurement has no image (imageId 'none', SCOORD3D) (CS3D MeasurementReport.ts
  generateReport ``is3DSR``). OHIF's "Create report" never gets that far: it drops every
  annotation without a referencedImageId (OHIF cornerstone-dicom-sr/src/utils/
  getFilteredCornerstoneToolState.ts, default/src/Actions promptSaveReport
  getTrackedMeasurements). So an OHIF mark is always an Enhanced SR with 2D SCOORD.
* Header (DCMJS derivations/DerivedDataset.js, StructuredReport.js; CS3D MeasurementReport.ts,
  helpers/copyStudyTags.ts, copySeriesTags.ts; OHIF cornerstone-dicom-sr/src/commandsModule.ts):
  Modality SR; ValueType CONTAINER. New SeriesInstanceUID and SOPInstanceUID ("2.25." followed
  by 39 random digits). SeriesNumber is the highest SR series number + 1, and at least 4701
  (OHIF getNextSRSeriesNumber, MIN_SR_SERIES_NUMBER = 4700). SeriesDescription is the report
  name the user typed; if left empty, "Research Derived series". InstanceNumber 1.
  SpecificCharacterSet "ISO_IR 192" (set by OHIF's _generateReport). Manufacturer and
  ManufacturerModelName "Unspecified", SoftwareVersions "0", DeviceSerialNumber "1".
  ImageComments "NOT FOR CLINICAL USE" and ContentQualification "RESEARCH" (neither is in the
  SR IOD). SeriesDate/Time and ContentDate/Time are "now" in UTC. Copied from the referenced
  image, or "" when it lacks them: AccessionNumber, ReferringPhysicianName, StudyDate,
  StudyTime, StudyID, StudyInstanceUID, PatientName, PatientID, PatientBirthDate, PatientSex.
  PatientAge is always "": the adapter's study-tag copy leaves it out. StudyDescription and
  TimezoneOffsetFromUTC are not written.
  CompletionFlag COMPLETE, VerificationFlag UNVERIFIED. PerformedProcedureCodeSequence and
  ReferencedPerformedProcedureStepSequence are empty. CodingSchemeIdentificationSequence has
  one item, 99dcmjs. ContentTemplateSequence: DCMR / 1500 (DCMJS
  utilities/TID1500/TID1500MeasurementReport.js).
  CurrentRequestedProcedureEvidenceSequence has one item per referenced instance:
  StudyInstanceUID, then ReferencedSeriesSequence (SeriesInstanceUID, ReferencedSOPSequence).
* File meta as OHIF STOWs it: Explicit VR Little Endian; ImplementationClassUID
  2.25.270695996825855179949881587723571202391.2.0.0; ImplementationVersionName "OHIF-3.11.0"
  (OHIF default/src/DicomWebDataSource/index.ts). FileMetaInformationVersion is taken from
  the adapter's metaSRAnnotation, which is 00\\02 (CS3D constants/index.ts). This module
  writes 00\\01 instead (C-STORE does not carry the file meta anyway).
* Root content, in order (TID1500MeasurementReport.js; OHIF's storeMeasurements relies on
  ``ContentSequence[4]`` being Imaging Measurements):
  [0] HAS CONCEPT MOD CODE 121049 "Language of Content Item and Descendants" = en RFC5646
  "English" (dcmjs < 0.48: "eng"), with a child HAS CONCEPT MOD 121046 = US ISO3166_1.
  [1] HAS OBS CONTEXT PNAME **121008 Person Observer Name = "unknown^unknown"**. dcmjs writes
  ``options.PersonName`` here; OHIF never passes one. No Observer Type (121005) item is
  written; TID 1002's default observer type is PERSON.
  [2] HAS CONCEPT MOD CODE 121058 "Procedure reported" = 363679005 SCT "Imaging procedure"
  (dcmjs < 0.48: 1 / 99dcmjs "Unknown procedure").
  [3] CONTAINS CONTAINER 111028 Image Library, holding CONTAINER 126200 Image Library Group,
  holding one CONTAINS IMAGE per referenced instance (ReferencedSOPClassUID and
  ReferencedSOPInstanceUID; ReferencedFrameNumber only for multi-frame images).
  [4] CONTAINS CONTAINER 126010 Imaging Measurements, holding one CONTAINER 125007
  Measurement Group per annotation.
* Measurement Group (DCMJS utilities/TID300/TID300Measurement.js, TID1501MeasurementGroup.js;
  CS3D LabelData.ts, BaseAdapter3D.ts, cornerstone3DTag.js): HAS OBS CONTEXT TEXT 112039
  Tracking Identifier = "Cornerstone3DTools@^0.1.0:<Tool>"; HAS OBS CONTEXT UIDREF 112040
  Tracking Unique Identifier = a new 2.25 UID; then the tool's NUM items.
  No Finding (121071) or Finding Site item is left in the group.
  A label the user typed becomes a trailing CONTAINS TEXT 121106 DCM "Comment". OHIF first
  puts the label in as a free-text Finding Site (a Finding for ArrowAnnotate, coded
  CORNERSTONEJS CORNERSTONEFREETEXT), and cornerstone's LabelData (adapters >= 3.31.13) takes
  that item out again. Older adapters kept it.
* Spatial coordinates (DCMJS utilities/TID300/TID320ContentItem.js, Length.js, ...): the SCOORD
  is a child of the first NUM, relationship **INFERRED FROM**, with no concept name. Its own
  child is an IMAGE, **SELECTED FROM**, whose ReferencedSOPSequence names the marked image.
  GraphicData is (column, row) in cornerstone's image coordinates (CS3D helpers/toScoordType.ts
  calling core utilities/worldToImageCoords.ts): (0, 0) is the **top-left corner** of the
  top-left pixel, so the centre of pixel (c, r) is (c + 0.5, r + 0.5). That is the DICOM
  SCOORD convention, and it has been so since 2022 (commit 54e1b7f7). The x axis uses
  PixelSpacing[0] and the y axis PixelSpacing[1], which only matters for non-square pixels.
* Per tool. Two layouts exist, both in OHIF 3.x releases:
  "current" = adapters >= 4.15.17 with dcmjs >= 0.48 (Jan 2026; OHIF 3.13, cornerstone3D 5.x);
  "legacy" = adapters 3.31.13 to 4.15.16 with dcmjs <= 0.47 (OHIF 3.10 to 3.12).
  Units in "current": mm / mm2 / [hnsf'U] "Hounsfield unit", UCUM version 1.4. In "legacy":
  mm "millimeter", mm2 "SquareMilliMeter".

  - Length: NUM "Length" = the distance in mm ("current": 410668003 SCT; "legacy": G-D7FE
    SRT), with a POLYLINE of 2 points (CS3D Length.ts; DCMJS TID300/Length.js, OpenPolyline.js).
  - EllipticalROI: the tool stores 4 handles (bottom, top, left, right). The adapter writes
    the major axis first: [top, bottom, left, right] if top-bottom is the longer axis, else
    [left, right, top, bottom] (CS3D EllipticalROI.ts). GraphicType ELLIPSE, 4 points.
    "current": NUMs Area 42798000 SCT (carries the SCOORD), then Maximum 56851009, Minimum
    255605001, Mean 373098007, Standard Deviation 386136009, in HU (DCMJS TID300/Ellipse.js,
    utilities/MeasurementBuilder.js). "legacy": a single NUM coded G-D7FE SRT, meaning "AREA"
    (sic), in mm2.
  - CircleROI: handles [centre, a point on the circle]; GraphicType CIRCLE, 2 points.
    "current": Perimeter 131191004 (carries the SCOORD), Area, Radius 131190003, Max, Min,
    Mean, StdDev. "legacy": Perimeter G-A197 SRT and Area G-A166 SRT, each with its own copy
    of the CIRCLE (CS3D CircleROI.ts; DCMJS TID300/Circle.js).
  - RectangleROI: 4 handles c0..c3, where c0 and c3 are opposite corners, c1 = (x3, y0) and
    c2 = (x0, y3). Written as a closed POLYLINE of 5 points [c0, c1, c3, c2, c0] (CS3D
    RectangleROI.ts). "current": Area (carries the SCOORD), Max, Mean, StdDev; no perimeter,
    because the tool computes none. "legacy": Perimeter 131191004 SCT with **no NumericValue**
    (the tool has no perimeter) and Area G-A166, each with the POLYLINE.
  - PlanarFreehandROI: the contour polyline, closed by repeating the first point (POLYLINE,
    n + 1 points). "current": Perimeter (carries the SCOORD), Area, Max, Mean, StdDev.
    "legacy": Perimeter and Area, each with the POLYLINE (CS3D PlanarFreehandROI.ts,
    ControlPointPolyline.ts; DCMJS TID300/Polyline.js). A freehand contour has no control
    points, so there is no extra 99CS3D ControlPoints SCOORD.
  - Probe: NUM 111010 DCM "Center", with a POINT of 1 point. "current": value 0 in UCUM "1"
    "no units". "legacy": **no MeasuredValueSequence**. The probed HU value is not stored
    (CS3D Probe.ts; DCMJS TID300/Point.js).
  - ArrowAnnotate: the tool stores 2 handles, and with arrowFirst (the default) points[0] is
    the arrow head, i.e. the spot pointed at (CS3D ../../tools ArrowAnnotateTool.ts). The
    adapter writes [head, tail] (CS3D ArrowAnnotate.ts). "current": NUM 111010 DCM with
    meaning "label" (sic), value 0 "no units", and a POLYLINE of 2 points (DCMJS
    TID300/ArrowAnnotate.js). "legacy": the Point class, i.e. NUM "Center" without a value
    and a **POINT GraphicType with 2 points**. DICOM allows one point for POINT. The SR reader
    adds a tail (columns/10, rows/10) when only one point is given.
* The 3D path (CS3D MeasurementReport.ts with NO_IMAGE_ID, TID320ContentItem.js): SCOORD3D
  with the same GraphicType, in patient coordinates (LPS, mm), ReferencedFrameOfReferenceUID
  and no IMAGE child. The SOP class becomes Comprehensive 3D SR. Image Library and evidence
  still name one image, the volume's imageIds[0]. Here that is assumed to be the slice lowest
  along the slice normal, which is where cornerstone's volume sort starts (not verified).

The defects listed above for "legacy" (a NUM without NumericValue, a NUM without
MeasuredValueSequence, a POINT with 2 points) and the warnings (99dcmjs, SRT deprecated,
ImageComments not in the IOD) match what dciodvfy reported for dcmjs output in
dcmjs-org/dcmjs PR #432. This module writes them as they are, on purpose.

Not established: which cornerstone release a particular OHIF 3.x build bundles. The mapping
comes from OHIF PR #6161 (cornerstone 5.6.x), the OHIF 3.13 release notes (cornerstone3D v5)
and the adapters' package.json history. Also not established: the exact label and
text-position behaviour of adapters older than 3.31.13.

How it is built: pydicom datasets, directly. highdicom cannot reproduce this tree. Its TID 1500
classes add an Observer Type and use TID 1410 region items, not TID 300 NUMs carrying the
SCOORD. Its SR constructors group the evidence by series and write their own header. Its NUM
items add FloatingPointValue. The "legacy" NUMs with a missing value cannot be expressed at
all. ``scoord3d_mark_sr(style="highdicom")`` does use highdicom: a Comprehensive 3D SR with
TID 1500, a planar ROI group whose ImageRegion3D is a POINT, and a Person observer context as
other viewers and toolkits commonly write it.

``observer``: it goes where dcmjs puts a name, the Person Observer Name (121008) in place of
"unknown^unknown". OHIF itself never fills it; ``observer=None`` gives what OHIF writes.
"""

from __future__ import annotations

import copy
import datetime as _dt
import math
import random
from typing import Sequence as _Seq

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import DSfloat

ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"

TOOLS = ("Length", "EllipticalROI", "CircleROI", "RectangleROI", "PlanarFreehandROI",
         "Probe", "ArrowAnnotate")
LAYOUTS = ("current", "legacy")
TRACKING_PREFIX = "Cornerstone3DTools@^0.1.0"
OHIF_IMPLEMENTATION_CLASS_UID = "2.25.270695996825855179949881587723571202391.2.0.0"
OHIF_IMPLEMENTATION_VERSION = "OHIF-3.11.0"
FIRST_SR_SERIES_NUMBER = 4701
DEFAULT_SERIES_DESCRIPTION = "Research Derived series"
UNKNOWN_OBSERVER = "unknown^unknown"

_ABSENT = object()   # a NUM without MeasuredValueSequence (legacy Probe/Arrow "Center")

# (CodeValue, CodingSchemeDesignator, CodeMeaning[, CodingSchemeVersion])
_UNITS = {
    "current": {"mm": ("mm", "UCUM", "mm", "1.4"), "mm2": ("mm2", "UCUM", "mm2", "1.4"),
                "HU": ("[hnsf'U]", "UCUM", "Hounsfield unit", "1.4")},
    "legacy": {"mm": ("mm", "UCUM", "millimeter", "1.4"),
               "mm2": ("mm2", "UCUM", "SquareMilliMeter", "1.4")},
}
_NO_UNITS = ("1", "UCUM", "no units")
_CONCEPTS = {
    "current": {
        "length": ("410668003", "SCT", "Length"), "area": ("42798000", "SCT", "Area"),
        "perimeter": ("131191004", "SCT", "Perimeter"), "radius": ("131190003", "SCT", "Radius"),
        "max": ("56851009", "SCT", "Maximum"), "min": ("255605001", "SCT", "Minimum"),
        "mean": ("373098007", "SCT", "Mean"), "stdDev": ("386136009", "SCT", "Standard Deviation"),
        "center": ("111010", "DCM", "Center"), "arrow": ("111010", "DCM", "label"),
    },
    "legacy": {
        "length": ("G-D7FE", "SRT", "Length"), "ellipse_area": ("G-D7FE", "SRT", "AREA"),
        "circle_perimeter": ("G-A197", "SRT", "Perimeter"), "area": ("G-A166", "SRT", "Area"),
        "perimeter": ("131191004", "SCT", "Perimeter"), "center": ("111010", "DCM", "Center"),
    },
}
_LANGUAGE = {"current": "en", "legacy": "eng"}
_PROCEDURE = {"current": ("363679005", "SCT", "Imaging procedure"),
              "legacy": ("1", "99dcmjs", "Unknown procedure")}


# --------------------------------------------------------------------------- public builders

def ohif_mark_sr(ct_headers: list[pydicom.Dataset], image: pydicom.Dataset, tool: str,
                 points: list[tuple[float, float]], observer: str | None = None,
                 series_uid: str | None = None, *, label: str | None = None,
                 layout: str = "current", series_description: str | None = None,
                 series_number: int = FIRST_SR_SERIES_NUMBER) -> pydicom.Dataset:
    """The Enhanced SR OHIF's "Create report" writes for one ``tool`` annotation on ``image``.

    ``points`` are the tool's handles in image coordinates (column, row), with (0, 0) at the
    top-left corner of the top-left pixel, so a pixel's centre is at (c + 0.5, r + 0.5).
    Cornerstone writes exactly these numbers into GraphicData. The handles per tool:
    Length 2 ends; EllipticalROI 4 (bottom, top, left, right; the adapter puts the major axis
    first); CircleROI (centre, a point on the circle); RectangleROI 4 corners in the tool's
    order (c0, c1 = (x3, y0), c2 = (x0, y3), c3), or just 2 opposite corners; PlanarFreehandROI
    the polygon's vertices, at least 3 (it is closed by the builder); Probe 1 point;
    ArrowAnnotate (head, tail), or just the head (the tail is then put at +columns/10,
    +rows/10, as cornerstone does when it reads a single point back).
    The measured values come from the points and PixelSpacing. HU statistics come from the
    image's pixels when it has them, and are left out when it has none.
    ``label`` is the text the user typed (it becomes the 121106 Comment). ``layout`` is
    "current" (OHIF 3.13, cornerstone3D 5) or "legacy" (OHIF 3.10 to 3.12).
    """
    if tool not in TOOLS:
        raise ValueError(f"tool must be one of {TOOLS}, not {tool!r}")
    _check_layout(layout)
    if not any(str(h.SOPInstanceUID) == str(image.SOPInstanceUID) for h in ct_headers):
        raise ValueError("image is not one of ct_headers")
    pts = _points(points)
    geometry = _Geometry(image)
    ref = _referenced_sop(image)
    content = _tool_content(tool, pts, geometry, ref, layout)
    group = _measurement_group(f"{TRACKING_PREFIX}:{tool}", content, label)
    ds = _report(image, [ref], [group], observer, series_uid, layout,
                 series_description, series_number)
    ds.SOPClassUID = ENHANCED_SR
    return _with_file_meta(ds)


def scoord3d_mark_sr(ct_headers: list[pydicom.Dataset], point_lps: tuple[float, float, float],
                     observer: str | None = None, series_uid: str | None = None, *,
                     style: str = "cornerstone", layout: str = "current") -> pydicom.Dataset:
    """A Comprehensive 3D SR that marks one point in patient coordinates (LPS, mm) in the CT's
    Frame of Reference.

    ``style="cornerstone"`` writes it as cornerstone's 3D path writes a Probe: SCOORD3D POINT
    under NUM Center. ``style="highdicom"`` is a highdicom TID 1500 with a planar ROI group
    (ImageRegion3D POINT) and a Person observer context when ``observer`` is given.
    """
    if not ct_headers:
        raise ValueError("ct_headers is empty")
    point = [float(v) for v in point_lps]
    if len(point) != 3 or not all(math.isfinite(v) for v in point):
        raise ValueError(f"point_lps must be 3 finite numbers, not {point_lps!r}")
    frame_uids = {str(h.FrameOfReferenceUID) for h in ct_headers}
    if len(frame_uids) != 1:
        raise ValueError(f"ct_headers span {len(frame_uids)} frames of reference")
    (frame_uid,) = frame_uids
    if style == "highdicom":
        return _highdicom_point_sr(ct_headers, point, frame_uid, observer, series_uid)
    if style != "cornerstone":
        raise ValueError(f"style must be 'cornerstone' or 'highdicom', not {style!r}")
    _check_layout(layout)
    first = _first_along_normal(ct_headers)
    ref = _referenced_sop(first)
    scoord = _scoord("POINT", point, None, frame_uid)
    value = 0 if layout == "current" else _ABSENT
    units = _NO_UNITS if layout == "current" else None
    num = _num(_CONCEPTS[layout]["center"], value, units, scoord)
    group = _measurement_group(f"{TRACKING_PREFIX}:Probe", [num], None)
    ds = _report(first, [ref], [group], observer, series_uid, layout, None,
                 FIRST_SR_SERIES_NUMBER)
    ds.SOPClassUID = COMPREHENSIVE_3D_SR
    return _with_file_meta(ds)


def enhanced_sr_variant(ds: pydicom.Dataset) -> pydicom.Dataset:
    """The same content as an Enhanced SR (…88.22) with a new SOP Instance UID.

    OHIF's own marks already are Enhanced SR, so for them only the UID changes. Enhanced SR
    has no SCOORD3D, so a tree that holds one is refused (ValueError).
    """
    if any(str(item.get("ValueType", "")) == "SCOORD3D" for item in _walk(ds)):
        raise ValueError("Enhanced SR cannot hold SCOORD3D content items")
    return _reclassed(ds, ENHANCED_SR)


def comprehensive_sr_variant(ds: pydicom.Dataset) -> pydicom.Dataset:
    """The same content as a Comprehensive SR (…88.33), as many other viewers write it, with
    a new SOP Instance UID. SCOORD3D is refused here too."""
    if any(str(item.get("ValueType", "")) == "SCOORD3D" for item in _walk(ds)):
        raise ValueError("Comprehensive SR cannot hold SCOORD3D content items")
    return _reclassed(ds, COMPREHENSIVE_SR)


def scoords(ds: pydicom.Dataset) -> list[Dataset]:
    """Every SCOORD/SCOORD3D content item in the tree, in document order (for tests)."""
    return [item for item in _walk(ds) if str(item.get("ValueType", "")) in ("SCOORD", "SCOORD3D")]


# --------------------------------------------------------------------------- geometry + values

class _Geometry:
    """Pixel spacing and (optionally) HU pixels of the marked image."""

    def __init__(self, image: Dataset):
        if "PixelSpacing" not in image:
            raise ValueError("the marked image has no PixelSpacing")
        self.row_mm = float(image.PixelSpacing[0])     # between rows: along y
        self.col_mm = float(image.PixelSpacing[1])     # between columns: along x
        self.rows = int(image.Rows)
        self.columns = int(image.Columns)
        self.hu = None
        if "PixelData" in image:
            slope = float(image.get("RescaleSlope", 1) or 1)
            intercept = float(image.get("RescaleIntercept", 0) or 0)
            self.hu = image.pixel_array.astype(np.float64) * slope + intercept

    def mm(self, p) -> np.ndarray:
        return np.array([p[0] * self.col_mm, p[1] * self.row_mm])

    def dist(self, a, b) -> float:
        return float(np.linalg.norm(self.mm(a) - self.mm(b)))

    def centres_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """The pixel centres (c + 0.5, r + 0.5) in mm, as (x, y) grids of shape rows x cols."""
        xs = (np.arange(self.columns) + 0.5) * self.col_mm
        ys = (np.arange(self.rows) + 0.5) * self.row_mm
        return np.meshgrid(xs, ys)

    def stats(self, inside: np.ndarray | None) -> dict[str, float | None]:
        if self.hu is None or inside is None or not inside.any():
            return {"max": None, "min": None, "mean": None, "stdDev": None}
        values = self.hu[inside]
        return {"max": float(values.max()), "min": float(values.min()),
                "mean": float(values.mean()), "stdDev": float(values.std())}


def _tool_content(tool: str, pts: list[tuple[float, float]], g: _Geometry, ref: Dataset,
                  layout: str) -> list[Dataset]:
    """The tool's NUM items (with the SCOORD under the first), in the layout's order."""
    c = _CONCEPTS[layout]
    units = _UNITS[layout]
    current = layout == "current"

    def scoord(graphic_type, written):
        return _scoord(graphic_type, [v for p in written for v in p], ref, None)

    def current_nums(values, graphic_type, written):
        """dcmjs ≥ 0.48: the configs whose value is defined; the first carries the SCOORD."""
        present = [(key, value, unit) for key, value, unit in values if value is not None]
        return [_num(c[key], value, units[unit], scoord(graphic_type, written) if k == 0 else None)
                for k, (key, value, unit) in enumerate(present)]

    if tool == "Length":
        _need(tool, pts, 2)
        return [_num(c["length"], g.dist(pts[0], pts[1]), units["mm"], scoord("POLYLINE", pts))]

    if tool == "EllipticalROI":
        _need(tool, pts, 4)
        a0, a1, b0, b1 = pts           # tool order: bottom, top, left, right
        written = [a0, a1, b0, b1] if g.dist(a0, a1) > g.dist(b0, b1) else [b0, b1, a0, a1]
        major_half = (g.mm(written[1]) - g.mm(written[0])) / 2
        minor_half = (g.mm(written[3]) - g.mm(written[2])) / 2
        area = math.pi * np.linalg.norm(major_half) * np.linalg.norm(minor_half)
        if not current:
            return [_num(c["ellipse_area"], area, units["mm2"], scoord("ELLIPSE", written))]
        centre = sum(g.mm(p) for p in written) / 4
        x, y = g.centres_mm()
        dx, dy = x - centre[0], y - centre[1]
        u = (dx * major_half[0] + dy * major_half[1]) / float(major_half @ major_half)
        v = (dx * minor_half[0] + dy * minor_half[1]) / float(minor_half @ minor_half)
        s = g.stats(u * u + v * v <= 1.0)
        return current_nums([("area", area, "mm2"), ("max", s["max"], "HU"),
                             ("min", s["min"], "HU"), ("mean", s["mean"], "HU"),
                             ("stdDev", s["stdDev"], "HU")], "ELLIPSE", written)

    if tool == "CircleROI":
        _need(tool, pts, 2)
        radius = g.dist(pts[0], pts[1])
        area, perimeter = math.pi * radius ** 2, 2 * math.pi * radius
        if not current:
            return [_num(c["circle_perimeter"], perimeter, units["mm"], scoord("CIRCLE", pts)),
                    _num(c["area"], area, units["mm2"], scoord("CIRCLE", pts))]
        centre = g.mm(pts[0])
        x, y = g.centres_mm()
        s = g.stats((x - centre[0]) ** 2 + (y - centre[1]) ** 2 <= radius ** 2)
        return current_nums([("perimeter", perimeter, "mm"), ("area", area, "mm2"),
                             ("radius", radius, "mm"), ("max", s["max"], "HU"),
                             ("min", s["min"], "HU"), ("mean", s["mean"], "HU"),
                             ("stdDev", s["stdDev"], "HU")], "CIRCLE", pts)

    if tool == "RectangleROI":
        if len(pts) == 2:
            (x0, y0), (x3, y3) = pts
            pts = [(x0, y0), (x3, y0), (x0, y3), (x3, y3)]
        _need(tool, pts, 4)
        written = [pts[0], pts[1], pts[3], pts[2], pts[0]]
        lo, hi = g.mm(np.min(pts, axis=0)), g.mm(np.max(pts, axis=0))
        area = float((hi[0] - lo[0]) * (hi[1] - lo[1]))
        if not current:
            # the tool computes no perimeter: dcmjs writes the NUM without a NumericValue
            return [_num(c["perimeter"], None, units["mm"], scoord("POLYLINE", written)),
                    _num(c["area"], area, units["mm2"], scoord("POLYLINE", written))]
        x, y = g.centres_mm()
        s = g.stats((x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1]))
        return current_nums([("area", area, "mm2"), ("max", s["max"], "HU"),
                             ("mean", s["mean"], "HU"), ("stdDev", s["stdDev"], "HU")],
                            "POLYLINE", written)

    if tool == "PlanarFreehandROI":
        if len(pts) < 3:
            raise ValueError("PlanarFreehandROI needs at least 3 points")
        if pts[0] == pts[-1]:
            pts = pts[:-1]
        written = pts + [pts[0]]
        poly = np.array([g.mm(p) for p in pts])
        nxt = np.roll(poly, -1, axis=0)
        area = float(abs(np.sum(poly[:, 0] * nxt[:, 1] - nxt[:, 0] * poly[:, 1])) / 2)
        perimeter = float(np.sum(np.linalg.norm(nxt - poly, axis=1)))
        if not current:
            return [_num(c["perimeter"], perimeter, units["mm"], scoord("POLYLINE", written)),
                    _num(c["area"], area, units["mm2"], scoord("POLYLINE", written))]
        x, y = g.centres_mm()
        s = g.stats(_inside_polygon(x, y, poly))
        return current_nums([("perimeter", perimeter, "mm"), ("area", area, "mm2"),
                             ("max", s["max"], "HU"), ("mean", s["mean"], "HU"),
                             ("stdDev", s["stdDev"], "HU")], "POLYLINE", written)

    if tool == "Probe":
        _need(tool, pts, 1)
        if current:
            return [_num(c["center"], 0, _NO_UNITS, scoord("POINT", pts))]
        return [_num(c["center"], _ABSENT, None, scoord("POINT", pts))]

    # ArrowAnnotate
    if len(pts) == 1:
        head = pts[0]
        pts = [head, (head[0] + g.columns / 10, head[1] + g.rows / 10)]
    _need(tool, pts, 2)
    if current:
        return [_num(c["arrow"], 0, _NO_UNITS, scoord("POLYLINE", pts))]
    return [_num(c["center"], _ABSENT, None, scoord("POINT", pts))]   # POINT with 2 points (sic)


def _inside_polygon(x: np.ndarray, y: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule: which of the points (x, y) lie inside the closed polygon."""
    inside = np.zeros(x.shape, dtype=bool)
    for (x1, y1), (x2, y2) in zip(poly, np.roll(poly, -1, axis=0)):
        if y1 == y2:
            continue
        crosses = (y1 > y) != (y2 > y)
        x_at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (x < x_at)
    return inside


def _need(tool: str, pts: list, count: int) -> None:
    if len(pts) != count:
        raise ValueError(f"{tool} takes {count} point(s), not {len(pts)}")


def _points(points) -> list[tuple[float, float]]:
    out = []
    for p in points:
        x, y = (float(v) for v in p)
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"not a finite point: {p!r}")
        out.append((x, y))
    if not out:
        raise ValueError("no points")
    return out


def _first_along_normal(headers: list[Dataset]) -> Dataset:
    """The header lowest along the slice normal (taken as cornerstone's volume imageIds[0])."""
    iop = np.array(headers[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    return min(headers, key=lambda h: float(np.dot(normal, np.array(h.ImagePositionPatient,
                                                                    dtype=float))))


# --------------------------------------------------------------------------- content items

def _code(code: tuple) -> Dataset:
    item = Dataset()
    item.CodeValue = code[0]
    item.CodingSchemeDesignator = code[1]
    if len(code) > 3 and code[3]:
        item.CodingSchemeVersion = code[3]
    item.CodeMeaning = code[2]
    return item


def _content(relationship: str | None, value_type: str, concept: tuple | None = None) -> Dataset:
    item = Dataset()
    if relationship:
        item.RelationshipType = relationship
    item.ValueType = value_type
    if concept is not None:
        item.ConceptNameCodeSequence = Sequence([_code(concept)])
    return item


def _ds(value: float) -> DSfloat:
    return DSfloat(float(value), auto_format=True)


def _num(concept: tuple, value, units: tuple | None, scoord: Dataset | None) -> Dataset:
    """A NUM; ``value=None`` keeps the MeasuredValueSequence without a NumericValue and
    ``value=_ABSENT`` leaves the sequence out (both as dcmjs < 0.48 wrote them)."""
    item = _content("CONTAINS", "NUM", concept)
    if value is not _ABSENT:
        measured = Dataset()
        measured.MeasurementUnitsCodeSequence = Sequence([_code(units)])
        if value is not None:
            measured.NumericValue = _ds(value)
        item.MeasuredValueSequence = Sequence([measured])
    if scoord is not None:
        item.ContentSequence = Sequence([scoord])
    return item


def _scoord(graphic_type: str, flat: list[float], ref: Dataset | None,
            frame_uid: str | None) -> Dataset:
    """TID 320: INFERRED FROM SCOORD (+ SELECTED FROM IMAGE), or SCOORD3D with its frame."""
    if frame_uid is not None:
        item = _content("INFERRED FROM", "SCOORD3D")
        item.GraphicType = graphic_type
        item.add_new(0x00700022, "FL", [float(v) for v in flat])       # GraphicData
        item.ReferencedFrameOfReferenceUID = frame_uid
        return item
    item = _content("INFERRED FROM", "SCOORD")
    item.GraphicType = graphic_type
    item.add_new(0x00700022, "FL", [float(v) for v in flat])
    image = _content("SELECTED FROM", "IMAGE")
    image.ReferencedSOPSequence = Sequence([copy.deepcopy(ref)])
    item.ContentSequence = Sequence([image])
    return item


def _referenced_sop(image: Dataset) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = image.SOPClassUID
    ref.ReferencedSOPInstanceUID = image.SOPInstanceUID
    if int(image.get("NumberOfFrames", 1) or 1) > 1:
        ref.ReferencedFrameNumber = 1
    return ref


def _measurement_group(tracking_identifier: str, content: list[Dataset],
                       label: str | None) -> Dataset:
    tracking = _content("HAS OBS CONTEXT", "TEXT", ("112039", "DCM", "Tracking Identifier"))
    tracking.TextValue = tracking_identifier
    tracking_uid = _content("HAS OBS CONTEXT", "UIDREF",
                            ("112040", "DCM", "Tracking Unique Identifier"))
    tracking_uid.UID = dcmjs_uid()
    items = [tracking, tracking_uid, *content]
    if label:
        comment = _content("CONTAINS", "TEXT", ("121106", "DCM", "Comment"))
        comment.TextValue = label
        items.append(comment)
    group = _content("CONTAINS", "CONTAINER", ("125007", "DCM", "Measurement Group"))
    group.ContinuityOfContent = "SEPARATE"
    group.ContentSequence = Sequence(items)
    return group


def _root_content(refs: list[Dataset], groups: list[Dataset], observer: str | None,
                  layout: str) -> list[Dataset]:
    language = _content("HAS CONCEPT MOD", "CODE",
                        ("121049", "DCM", "Language of Content Item and Descendants"))
    language.ConceptCodeSequence = Sequence([_code((_LANGUAGE[layout], "RFC5646", "English"))])
    country = _content("HAS CONCEPT MOD", "CODE", ("121046", "DCM", "Country of Language"))
    country.ConceptCodeSequence = Sequence([_code(("US", "ISO3166_1", "United States"))])
    language.ContentSequence = Sequence([country])

    person = _content("HAS OBS CONTEXT", "PNAME", ("121008", "DCM", "Person Observer Name"))
    person.PersonName = observer or UNKNOWN_OBSERVER

    procedure = _content("HAS CONCEPT MOD", "CODE", ("121058", "DCM", "Procedure reported"))
    procedure.ConceptCodeSequence = Sequence([_code(_PROCEDURE[layout])])

    entries = []
    for ref in refs:
        entry = _content("CONTAINS", "IMAGE")
        entry.ReferencedSOPSequence = Sequence([copy.deepcopy(ref)])
        entries.append(entry)
    library_group = _content("CONTAINS", "CONTAINER", ("126200", "DCM", "Image Library Group"))
    library_group.ContinuityOfContent = "SEPARATE"
    library_group.ContentSequence = Sequence(entries)
    library = _content("CONTAINS", "CONTAINER", ("111028", "DCM", "Image Library"))
    library.ContinuityOfContent = "SEPARATE"
    library.ContentSequence = Sequence([library_group])

    measurements = _content("CONTAINS", "CONTAINER", ("126010", "DCM", "Imaging Measurements"))
    measurements.ContinuityOfContent = "SEPARATE"
    measurements.ContentSequence = Sequence(groups)
    return [language, person, procedure, library, measurements]


# --------------------------------------------------------------------------- the document

def _report(source: Dataset, refs: list[Dataset], groups: list[Dataset], observer: str | None,
            series_uid: str | None, layout: str, series_description: str | None,
            series_number: int) -> Dataset:
    """dcmjs StructuredReport + TID1500MeasurementReport, as OHIF's _generateReport leaves it.
    ``source`` is the referenced image: the adapter's derivation source dataset."""
    now = _dt.datetime.now(_dt.timezone.utc)
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPInstanceUID = dcmjs_uid()
    for keyword in ("StudyDate", "StudyTime", "AccessionNumber"):
        setattr(ds, keyword, source.get(keyword, ""))
    ds.Modality = "SR"
    ds.Manufacturer = "Unspecified"
    ds.ReferringPhysicianName = source.get("ReferringPhysicianName", "")
    ds.SeriesDescription = series_description or DEFAULT_SERIES_DESCRIPTION
    ds.ManufacturerModelName = "Unspecified"
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        setattr(ds, keyword, source.get(keyword, ""))
    ds.PatientAge = ""
    ds.DeviceSerialNumber = "1"
    ds.SoftwareVersions = "0"
    ds.ContentQualification = "RESEARCH"
    ds.StudyInstanceUID = source.StudyInstanceUID
    ds.SeriesInstanceUID = series_uid or dcmjs_uid()
    ds.StudyID = source.get("StudyID", "")
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    ds.ImageComments = "NOT FOR CLINICAL USE"
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.ContentDate, ds.ContentTime = date, time

    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = Sequence([_code(("126000", "DCM", "Imaging Measurement Report"))])
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "1500"
    ds.ContentTemplateSequence = Sequence([template])
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.PerformedProcedureCodeSequence = Sequence([])
    ds.ReferencedPerformedProcedureStepSequence = Sequence([])
    evidence = []
    for ref in refs:
        series = Dataset()
        series.SeriesInstanceUID = source.SeriesInstanceUID
        series.ReferencedSOPSequence = Sequence([copy.deepcopy(ref)])
        study = Dataset()
        study.StudyInstanceUID = source.StudyInstanceUID
        study.ReferencedSeriesSequence = Sequence([series])
        evidence.append(study)
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence(evidence)
    scheme = Dataset()
    scheme.CodingSchemeDesignator = "99dcmjs"
    scheme.CodingSchemeName = "Codes used for dcmjs"
    scheme.CodingSchemeVersion = "0"
    scheme.CodingSchemeResponsibleOrganization = "https://github.com/dcmjs-org/dcmjs"
    ds.CodingSchemeIdentificationSequence = Sequence([scheme])
    ds.ContentSequence = Sequence(_root_content(refs, groups, observer, layout))
    return ds


def _with_file_meta(ds: Dataset) -> Dataset:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = OHIF_IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = OHIF_IMPLEMENTATION_VERSION
    ds.file_meta = meta
    return ds


def _reclassed(ds: Dataset, sop_class_uid: str) -> Dataset:
    out = copy.deepcopy(ds)
    out.SOPClassUID = sop_class_uid
    out.SOPInstanceUID = dcmjs_uid()
    if hasattr(out, "file_meta"):
        out.file_meta.MediaStorageSOPClassUID = sop_class_uid
        out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    else:
        _with_file_meta(out)
    return out


def _walk(ds: Dataset):
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _walk(item)


def dcmjs_uid() -> str:
    """A UID shaped as dcmjs' DicomMetaDictionary.uid(): "2.25." and 39 random digits."""
    rng = random.SystemRandom()
    return "2.25." + str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(38))


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")


# --------------------------------------------------------------------------- highdicom style

def _highdicom_point_sr(ct_headers: _Seq[Dataset], point: list[float], frame_uid: str,
                        observer: str | None, series_uid: str | None) -> Dataset:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if observer:
        person = hd.sr.ObserverContext(
            observer_type=codes.DCM.Person,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                name=observer))
        context = hd.sr.ObservationContext(observer_person_context=person)
    else:
        context = hd.sr.ObservationContext()
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="mark"),
        referenced_region=hd.sr.ImageRegion3D(
            graphic_type=hd.sr.GraphicTypeValues3D.POINT,
            graphic_data=np.array([point]), frame_of_reference_uid=frame_uid),
        finding_type=codes.SCT.Neoplasm)
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=[group])
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(ct_headers), content=report[0],
        series_instance_uid=series_uid or hd.UID(), series_number=FIRST_SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="Synthetic",
        is_complete=True)
    return sr
