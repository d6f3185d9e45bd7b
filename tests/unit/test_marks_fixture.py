"""The OHIF mark fixtures of tests/marks.py: round trip, content tree, references, dciodvfy."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from tests import marks
from tests.conftest import require_tool, write_series

POINTS = {
    "Length": [(10.5, 20.5), (40.5, 30.5)],
    "EllipticalROI": [(32.0, 44.0), (32.0, 20.0), (25.0, 32.0), (39.0, 32.0)],  # b, t, l, r
    "CircleROI": [(32.5, 32.5), (40.5, 32.5)],
    "RectangleROI": [(20.0, 22.0), (41.0, 36.0)],
    "PlanarFreehandROI": [(20.0, 20.0), (40.0, 22.0), (38.0, 40.0), (22.0, 38.0)],
    "Probe": [(32.5, 32.5)],
    "ArrowAnnotate": [(32.5, 32.5), (45.0, 45.0)],
}
# (GraphicType, points per SCOORD, SCOORDs in the tree) per layout
EXPECTED = {
    "current": {"Length": ("POLYLINE", 2, 1), "EllipticalROI": ("ELLIPSE", 4, 1),
                "CircleROI": ("CIRCLE", 2, 1), "RectangleROI": ("POLYLINE", 5, 1),
                "PlanarFreehandROI": ("POLYLINE", 5, 1), "Probe": ("POINT", 1, 1),
                "ArrowAnnotate": ("POLYLINE", 2, 1)},
    "legacy": {"Length": ("POLYLINE", 2, 1), "EllipticalROI": ("ELLIPSE", 4, 1),
               "CircleROI": ("CIRCLE", 2, 2), "RectangleROI": ("POLYLINE", 5, 2),
               "PlanarFreehandROI": ("POLYLINE", 5, 2), "Probe": ("POINT", 1, 1),
               "ArrowAnnotate": ("POINT", 2, 1)},
}
# what dciodvfy finds wrong in the SRs the older adapters wrote (faithfully reproduced)
LEGACY_DEFECTS = {
    "RectangleROI": {"<NumericValue>"},
    "Probe": {"<MeasuredValueSequence>"},
    "ArrowAnnotate": {"<MeasuredValueSequence>", "GraphicTypeIsPOINT"},
}
CASES = [(layout, tool) for layout in marks.LAYOUTS for tool in marks.TOOLS]


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    return write_series(tmp_path_factory.mktemp("mark_ct"), rows=64, slices=8)


@pytest.fixture(scope="module")
def headers(series) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(path, stop_before_pixels=True) for path in series.files]


@pytest.fixture(scope="module")
def image(series) -> pydicom.Dataset:
    return pydicom.dcmread(series.files[4])


def _saved(ds: pydicom.Dataset, folder: Path, name: str) -> tuple[Path, pydicom.Dataset]:
    path = folder / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path, pydicom.dcmread(path)


def _dciodvfy(path: Path) -> list[str]:
    done = subprocess.run([require_tool("dciodvfy"), str(path)], capture_output=True, text=True,
                          timeout=120)
    return (done.stdout + done.stderr).splitlines()


def _groups(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    measurements = ds.ContentSequence[4]
    assert measurements.ConceptNameCodeSequence[0].CodeValue == "126010"
    return list(measurements.ContentSequence)


def _pairs(scoord: pydicom.Dataset) -> list[tuple[float, float]]:
    data = [float(v) for v in scoord.GraphicData]
    return list(zip(data[0::2], data[1::2]))


@pytest.mark.parametrize("layout,tool", CASES)
def test_mark_round_trips_with_the_expected_tree(layout, tool, headers, image, tmp_path):
    ds = marks.ohif_mark_sr(headers, image, tool, POINTS[tool], layout=layout)
    path, back = _saved(ds, tmp_path, f"{layout}-{tool}")

    assert back.SOPClassUID == marks.ENHANCED_SR == back.file_meta.MediaStorageSOPClassUID
    assert back.Modality == "SR" and back.ValueType == "CONTAINER"
    assert back.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert back.StudyInstanceUID == image.StudyInstanceUID
    assert back.PatientID == image.PatientID
    assert back.ConceptNameCodeSequence[0].CodeValue == "126000"
    if not (layout == "legacy" and tool in ("Probe", "ArrowAnnotate")):
        # highdicom cannot parse a NUM without MeasuredValueSequence: pydicom does below
        assert isinstance(hd.sr.srread(path), hd.sr.EnhancedSR)

    (group,) = _groups(back)
    tracking = group.ContentSequence[0]
    assert tracking.ConceptNameCodeSequence[0].CodeValue == "112039"
    assert tracking.TextValue == f"Cornerstone3DTools@^0.1.0:{tool}"
    assert group.ContentSequence[1].ValueType == "UIDREF"

    graphic_type, count, how_many = EXPECTED[layout][tool]
    found = marks.scoords(back)
    assert len(found) == how_many
    for scoord in found:
        assert scoord.ValueType == "SCOORD" and scoord.RelationshipType == "INFERRED FROM"
        assert scoord.GraphicType == graphic_type
        assert len(scoord.GraphicData) == 2 * count
        (selected,) = scoord.ContentSequence
        assert (selected.RelationshipType, selected.ValueType) == ("SELECTED FROM", "IMAGE")
        (ref,) = selected.ReferencedSOPSequence
        assert ref.ReferencedSOPInstanceUID == image.SOPInstanceUID
        assert ref.ReferencedSOPClassUID == image.SOPClassUID
    nums = [item for item in group.ContentSequence if item.ValueType == "NUM"]
    assert nums[0].ContentSequence[0].ValueType == "SCOORD"      # under the first NUM

    library_image = back.ContentSequence[3].ContentSequence[0].ContentSequence[0]
    assert library_image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == image.SOPInstanceUID
    evidence = back.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.SeriesInstanceUID == image.SeriesInstanceUID
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == image.SOPInstanceUID


@pytest.mark.parametrize("layout,tool", CASES)
def test_dciodvfy_finds_only_what_ohif_itself_gets_wrong(layout, tool, headers, image, tmp_path):
    ds = marks.ohif_mark_sr(headers, image, tool, POINTS[tool], observer="Doe^Jane",
                            label="RUL nodule", layout=layout)
    path, _ = _saved(ds, tmp_path, f"{layout}-{tool}")
    lines = _dciodvfy(path)
    print("\n".join(lines))
    assert any("EnhancedSR" in line for line in lines), "dciodvfy did not recognise Enhanced SR"
    errors = [line for line in lines if "Error" in line]
    expected = LEGACY_DEFECTS.get(tool, set()) if layout == "legacy" else set()
    assert {marker for marker in expected if any(marker in e for e in errors)} == expected
    assert all(any(marker in e for marker in expected) for e in errors), "\n".join(lines)


def test_observer_goes_where_dcmjs_puts_it(headers, image):
    as_ohif = marks.ohif_mark_sr(headers, image, "Length", POINTS["Length"])
    named = marks.ohif_mark_sr(headers, image, "Length", POINTS["Length"], observer="Doe^Jane")
    for ds, name in ((as_ohif, "unknown^unknown"), (named, "Doe^Jane")):
        person = ds.ContentSequence[1]
        assert person.ConceptNameCodeSequence[0].CodeValue == "121008"
        assert (person.RelationshipType, person.ValueType) == ("HAS OBS CONTEXT", "PNAME")
        assert str(person.PersonName) == name
    codes = [item.ConceptNameCodeSequence[0].CodeValue for item in named.ContentSequence]
    assert codes == ["121049", "121008", "121058", "111028", "126010"]   # no Observer Type


def test_series_uid_and_label(headers, image):
    ds = marks.ohif_mark_sr(headers, image, "ArrowAnnotate", POINTS["ArrowAnnotate"],
                            series_uid="1.2.3.4", label="look here")
    assert ds.SeriesInstanceUID == "1.2.3.4" and ds.SeriesNumber == 4701
    (group,) = _groups(ds)
    comment = group.ContentSequence[-1]
    assert comment.ConceptNameCodeSequence[0].CodeValue == "121106"
    assert comment.TextValue == "look here"
    assert not [item for item in group.ContentSequence
                if item.ConceptNameCodeSequence[0].CodeValue in ("121071", "363698007")]


def test_values_follow_the_points_and_the_pixel_spacing(headers, image):
    spacing = float(image.PixelSpacing[0])
    length = marks.ohif_mark_sr(headers, image, "Length", POINTS["Length"])
    (num,) = [i for i in _groups(length)[0].ContentSequence if i.ValueType == "NUM"]
    assert num.ConceptNameCodeSequence[0].CodeValue == "410668003"
    assert float(num.MeasuredValueSequence[0].NumericValue) == pytest.approx(
        spacing * math.hypot(30, 10), rel=1e-9)

    circle = marks.ohif_mark_sr(headers, image, "CircleROI", POINTS["CircleROI"])
    values = {i.ConceptNameCodeSequence[0].CodeMeaning:
              float(i.MeasuredValueSequence[0].NumericValue)
              for i in _groups(circle)[0].ContentSequence if i.ValueType == "NUM"}
    radius = 8 * spacing
    assert values["Radius"] == pytest.approx(radius)
    assert values["Area"] == pytest.approx(math.pi * radius ** 2)
    assert values["Perimeter"] == pytest.approx(2 * math.pi * radius)
    assert values["Minimum"] <= values["Mean"] <= values["Maximum"]


def test_statistics_are_left_out_without_pixels(headers):
    ds = marks.ohif_mark_sr(headers, headers[4], "EllipticalROI", POINTS["EllipticalROI"])
    meanings = [i.ConceptNameCodeSequence[0].CodeMeaning
                for i in _groups(ds)[0].ContentSequence if i.ValueType == "NUM"]
    assert meanings == ["Area"]


def test_handles_are_written_as_the_adapters_write_them(headers, image):
    ellipse = marks.scoords(marks.ohif_mark_sr(headers, image, "EllipticalROI",
                                               POINTS["EllipticalROI"]))[0]
    bottom, top, left, right = POINTS["EllipticalROI"]
    assert _pairs(ellipse) == [bottom, top, left, right]          # vertical axis is the major
    wide = [(32.0, 36.0), (32.0, 28.0), (20.0, 32.0), (44.0, 32.0)]
    ellipse = marks.scoords(marks.ohif_mark_sr(headers, image, "EllipticalROI", wide))[0]
    assert _pairs(ellipse) == [wide[2], wide[3], wide[0], wide[1]]

    (x0, y0), (x3, y3) = POINTS["RectangleROI"]
    four = [(x0, y0), (x3, y0), (x0, y3), (x3, y3)]
    two = marks.scoords(marks.ohif_mark_sr(headers, image, "RectangleROI", POINTS["RectangleROI"]))
    both = marks.scoords(marks.ohif_mark_sr(headers, image, "RectangleROI", four))
    assert _pairs(two[0]) == _pairs(both[0]) == [four[0], four[1], four[3], four[2], four[0]]

    freehand = marks.scoords(marks.ohif_mark_sr(headers, image, "PlanarFreehandROI",
                                                POINTS["PlanarFreehandROI"]))[0]
    assert _pairs(freehand) == POINTS["PlanarFreehandROI"] + POINTS["PlanarFreehandROI"][:1]

    arrow = marks.scoords(marks.ohif_mark_sr(headers, image, "ArrowAnnotate", [(10.5, 12.5)]))[0]
    assert _pairs(arrow) == [(10.5, 12.5), (10.5 + 64 / 10, 12.5 + 64 / 10)]   # head first

    with pytest.raises(ValueError):
        marks.ohif_mark_sr(headers, image, "Length", [(1.0, 2.0)])
    with pytest.raises(ValueError):
        marks.ohif_mark_sr(headers, image, "Bidirectional", [(1.0, 2.0)])


@pytest.mark.parametrize("style", ["cornerstone", "highdicom"])
def test_scoord3d_mark(style, headers, tmp_path):
    centre = headers[4]
    point = tuple(float(v) + 7.25 for v in centre.ImagePositionPatient)
    ds = marks.scoord3d_mark_sr(headers, point, observer="Doe^Jane", style=style)
    path, back = _saved(ds, tmp_path, style)
    assert back.SOPClassUID == marks.COMPREHENSIVE_3D_SR
    assert isinstance(hd.sr.srread(path), hd.sr.Comprehensive3DSR)
    (scoord,) = marks.scoords(back)
    assert (scoord.ValueType, scoord.GraphicType) == ("SCOORD3D", "POINT")
    assert np.allclose([float(v) for v in scoord.GraphicData], point, atol=1e-3)
    assert scoord.ReferencedFrameOfReferenceUID == centre.FrameOfReferenceUID
    names = [str(item.PersonName) for item in _walk(back) if item.ValueType == "PNAME"]
    assert "Doe^Jane" in names
    lines = _dciodvfy(path)
    assert not [line for line in lines if "Error" in line], "\n".join(lines)
    with pytest.raises(ValueError):
        marks.enhanced_sr_variant(back)


def test_enhanced_and_comprehensive_variants(headers, image, tmp_path):
    ds = marks.ohif_mark_sr(headers, image, "CircleROI", POINTS["CircleROI"], observer="Doe^Jane")
    for variant, sop_class in ((marks.enhanced_sr_variant, marks.ENHANCED_SR),
                               (marks.comprehensive_sr_variant, marks.COMPREHENSIVE_SR)):
        other = variant(ds)
        assert other.SOPClassUID == sop_class and other.SOPInstanceUID != ds.SOPInstanceUID
        assert other.ContentSequence == ds.ContentSequence
        path, back = _saved(other, tmp_path, sop_class)
        assert back.file_meta.MediaStorageSOPInstanceUID == other.SOPInstanceUID
        hd.sr.srread(path)
        lines = _dciodvfy(path)
        assert not [line for line in lines if "Error" in line], "\n".join(lines)
    assert ds.SOPClassUID == marks.ENHANCED_SR                  # the original is left alone


def _walk(ds):
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _walk(item)
