"""Reading a radiologist's mark from a viewer's SR, and where it points on the CT's grid."""

from __future__ import annotations

import copy

import numpy as np
import pydicom
import pytest

from cdss_node.dicom import mark as mark_module
from cdss_node.dicom.mark import MarkProblem, is_own_report, observer_name, read_mark
from cdss_node.pipeline.mark import IMAGE, PATIENT, Mark, seed_of
from cdss_node.pipeline.reasons import NotEvaluableReason
from cdss_node.pipeline.records import CTVolume, HeaderFacts, NotEvaluable
from tests.marks import (LAYOUTS, TOOLS, comprehensive_sr_variant, ohif_mark_sr,
                         scoord3d_mark_sr, scoords)

HANDLES = {"Length": [(40, 40), (60, 50)],
           "EllipticalROI": [(50, 60), (50, 40), (40, 50), (60, 50)],
           "CircleROI": [(50, 50), (55, 50)], "RectangleROI": [(40, 40), (60, 60)],
           "PlanarFreehandROI": [(40, 40), (60, 40), (60, 60), (40, 60)],
           "Probe": [(50, 50)], "ArrowAnnotate": [(50, 50), (70, 70)]}
CENTRES = {"Length": (50, 45)}


@pytest.fixture(scope="module")
def headers(small_series):
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in small_series.files]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("tool", TOOLS)
def test_every_ohif_tool_gives_its_mark(headers, tool, layout):
    image = headers[5]
    found = read_mark(ohif_mark_sr(headers, image, tool, HANDLES[tool], layout=layout))
    assert isinstance(found, Mark) and found.coordinates == IMAGE
    assert found.image_uid == image.SOPInstanceUID
    assert found.series_uid == image.SeriesInstanceUID
    assert found.observer == ""                      # OHIF's "unknown^unknown"
    assert tuple(found.centre) == pytest.approx(CENTRES.get(tool, (50, 50)))
    if tool in ("Probe", "ArrowAnnotate"):          # the spot: an arrow's head
        assert found.graphic_type == "POINT" and len(found.points) == 1


def test_the_observer_named_and_the_comprehensive_variant(headers):
    sr = ohif_mark_sr(headers, headers[3], "Length", HANDLES["Length"], observer="Doe^Jane")
    assert read_mark(sr).observer == "Doe^Jane"
    other = read_mark(comprehensive_sr_variant(sr))
    assert other.sr_sop_class_uid == "1.2.840.10008.5.1.4.1.1.88.33"
    assert other.image_uid == headers[3].SOPInstanceUID


def test_a_verifying_observer_when_no_person_observer(headers):
    sr = ohif_mark_sr(headers, headers[3], "Probe", [(10, 10)])
    verifier = pydicom.Dataset()
    verifier.VerifyingObserverName = "Roe^Richard"
    sr.VerifyingObserverSequence = [verifier]
    assert observer_name(sr) == "Roe^Richard"


@pytest.mark.parametrize("style", ["cornerstone", "highdicom"])
def test_scoord3d_marks_are_in_patient_coordinates(headers, style):
    where = (12.0, -30.0, float(headers[4].ImagePositionPatient[2]))
    found = read_mark(scoord3d_mark_sr(headers, where, observer="Roe^R", style=style))
    assert found.coordinates == PATIENT and found.graphic_type == "POINT"
    assert tuple(found.centre) == pytest.approx(where)
    assert found.frame_of_reference_uid == headers[0].FrameOfReferenceUID
    assert found.series_uid == headers[0].SeriesInstanceUID and found.observer == "Roe^R"


def test_no_coordinates_is_no_mark_and_no_image_is_a_problem(headers):
    sr = ohif_mark_sr(headers, headers[3], "Length", HANDLES["Length"])
    without = copy.deepcopy(sr)
    for item in scoords(without):
        item.ValueType = "TEXT"
    assert read_mark(without) is None
    for item in scoords(sr):
        del item.ContentSequence
    problem = read_mark(sr)
    assert isinstance(problem, MarkProblem)
    assert problem.reason is NotEvaluableReason.MARK_WITHOUT_IMAGE


@pytest.mark.parametrize("damage", ["odd", "nan", "type", "empty"])
def test_damaged_coordinates_are_a_problem_not_a_crash(headers, damage):
    sr = ohif_mark_sr(headers, headers[3], "Length", HANDLES["Length"])
    item = scoords(sr)[0]
    item.GraphicData = {"odd": [1.0, 2.0, 3.0], "nan": [float("nan"), 1.0],
                        "empty": []}.get(damage, [1.0, 2.0])
    if damage == "type":
        item.GraphicType = "SPLINE"
    assert isinstance(read_mark(sr), MarkProblem)


def test_a_hostile_tree_is_cut(headers, monkeypatch):
    """A chain of nested containers deeper than MAX_ITEMS: looked at only so far."""
    monkeypatch.setattr(mark_module, "MAX_ITEMS", 50)
    sr = ohif_mark_sr(headers, headers[3], "Length", HANDLES["Length"])
    chain = pydicom.Dataset()
    chain.ValueType = "CONTAINER"
    for _ in range(200):
        outer = pydicom.Dataset()
        outer.ValueType = "CONTAINER"
        outer.ContentSequence = [chain]
        chain = outer
    sr.ContentSequence.insert(0, chain)
    assert read_mark(sr) is None


def test_own_reports_by_device_uid_or_by_product(headers):
    sr = ohif_mark_sr(headers, headers[3], "Length", HANDLES["Length"])
    uid_item = pydicom.Dataset()
    uid_item.ValueType, uid_item.UID = "UIDREF", "1.2.3.4"
    concept = pydicom.Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = \
        "121012", "DCM", "Device Observer UID"
    uid_item.ConceptNameCodeSequence = [concept]
    sr.ContentSequence.append(uid_item)
    assert is_own_report(sr, "1.2.3.4") and not is_own_report(sr, "1.2.3.5")
    sr.Manufacturer, sr.SeriesDescription = "CDSS", "CDSS EGFR: report"
    assert is_own_report(sr, None)


def test_own_manufacturer_is_the_segs():
    from cdss_node.dicom.seg import MANUFACTURER

    assert mark_module.OWN_MANUFACTURER == MANUFACTURER


def volume(shape=(10, 20, 30), spacing=(2.0, 0.5, 0.8), origin=(-5.0, 7.0, 100.0),
           direction=((0, 1, 0), (1, 0, 0), (0, 0, -1))) -> CTVolume:
    uids = tuple(f"1.2.3.{k}" for k in range(shape[0]))
    return CTVolume(hu=np.zeros(shape, np.float32), spacing_mm=spacing, origin_mm=origin,
                    direction=direction, source_instance_uids=uids,
                    source_frame_numbers=(0,) * shape[0], study_uid="1.2", series_uid="1.2.3",
                    window=None, header=HeaderFacts())


def image_mark(points, uid="1.2.3.4", graphic="POLYLINE") -> Mark:
    return Mark("1.2.840.10008.5.1.4.1.1.88.22", "9.9", "9.8", "1.2", "1.2.3", "", graphic,
                tuple(points), image_uid=uid)


def test_an_image_mark_lands_on_its_slice_at_the_pixel_centre():
    seed = seed_of(image_mark([(10.5, 4.5), (14.5, 4.5)]), volume())
    assert seed.voxel == pytest.approx((4, 4, 12))
    assert seed.reach_mm == pytest.approx(2 * 0.8)


def test_a_patient_mark_goes_through_the_direction_cosines():
    from cdss_node.results import patient_position

    ct = volume()
    where = patient_position(ct, (3, 11, 17))
    mark = Mark("1.2.840.10008.5.1.4.1.1.88.34", "9.9", "9.8", "1.2", "1.2.3", "", "POINT",
                (tuple(where),), coordinates=PATIENT)
    assert seed_of(mark, ct).voxel == pytest.approx((3, 11, 17))


def test_marks_off_the_series_are_not_evaluable():
    with pytest.raises(NotEvaluable) as other:
        seed_of(image_mark([(1, 1)], uid="7.7.7"), volume())
    assert other.value.reason is NotEvaluableReason.MARK_WITHOUT_IMAGE
    with pytest.raises(NotEvaluable) as outside:
        seed_of(image_mark([(500, 4)]), volume())
    assert outside.value.reason is NotEvaluableReason.MARK_WITHOUT_IMAGE
    assert "outside the scanned volume" in outside.value.detail


def test_a_mark_checks_itself():
    with pytest.raises(ValueError, match="graphic_type"):
        image_mark([(1, 1)], graphic="SPLINE")
    with pytest.raises(ValueError, match="points"):
        image_mark([(1, 1, 1)])
    with pytest.raises(ValueError, match="image_uid"):
        image_mark([(1, 1)], uid="")


def test_the_result_image_says_the_radiologist_chose_the_tumor():
    from types import SimpleNamespace

    from cdss_node.dicom.result_image import _result_lines

    analysis = SimpleNamespace(
        status="ok", quality_flags=(), volume=SimpleNamespace(lossy_compressed=False),
        prediction=SimpleNamespace(label="EGFR mutant", probability=0.7, threshold=0.5),
        tumor=SimpleNamespace(volume_mm3=8000.0, other_candidates=0),
        mark=image_mark([(1.5, 1.5)]))
    analysis.mark = Mark(**{**analysis.mark.__dict__, "observer": "Doe^Jane"})
    lines = _result_lines(analysis)
    assert lines[0] == "Tumor chosen by a radiologist (Doe^Jane): the lesion at the mark in " \
                       "report 9.9."
    analysis.mark = None
    assert not any("radiologist" in line for line in _result_lines(analysis))


def test_a_single_frame_image_named_with_frame_1_and_a_multi_frame_without_a_frame():
    one = image_mark([(10.5, 4.5)])
    one = Mark(**{**one.__dict__, "frame_number": 1})
    assert seed_of(one, volume()).voxel[0] == 4
    multi = volume()
    multi = CTVolume(**{**multi.__dict__, "source_instance_uids": ("1.2.3.4",) * 10,
                        "source_frame_numbers": tuple(range(1, 11))})
    assert seed_of(Mark(**{**one.__dict__, "frame_number": 7}), multi).voxel[0] == 6
    with pytest.raises(NotEvaluable, match="frame -"):
        seed_of(image_mark([(10.5, 4.5)]), multi)


def test_a_content_sequence_that_is_no_sequence_is_no_mark(headers):
    sr = ohif_mark_sr(headers, headers[3], "Length", HANDLES["Length"])
    del sr.ContentSequence
    sr.add_new(0x0040A730, "LO", "not a sequence")
    assert read_mark(sr) is None and not is_own_report(sr, "1.2.3")


def test_a_device_observer_makes_a_cad_report_not_a_mark(headers):
    from cdss_node.dicom.mark import is_device_report

    sr = ohif_mark_sr(headers, headers[3], "Length", HANDLES["Length"])
    assert not is_device_report(sr)                 # OHIF: a Person Observer Name
    observer = next(i for i in sr.ContentSequence if i.ValueType == "PNAME")
    observer.ValueType = "CODE"
    observer.ConceptNameCodeSequence[0].CodeValue = "121005"
    value = pydicom.Dataset()
    value.CodeValue, value.CodingSchemeDesignator, value.CodeMeaning = "121007", "DCM", "Device"
    observer.ConceptCodeSequence = [value]
    del observer.PersonName
    assert is_device_report(sr)
