"""SEG and SR written by ``cdss-node analyze``: valid for dciodvfy and PixelMed, readable by
dsrdump and highdicom, and saying what result.json says."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
import SimpleITK as sitk

from cdss_node.pipeline.load import load_volume
from tests.conftest import REPO, require_tool

pytestmark = pytest.mark.integration
SAMPLE = REPO / "sample_dicom" / "series"
PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")
# PixelMed's XSLT exceeds this JDK's default XPath limits
JDK_XPATH = ["-Djdk.xml.xpathExprOpLimit=0", "-Djdk.xml.xpathExprGrpLimit=0",
             "-Djdk.xml.xpathTotalOpLimit=0"]


def analyze(folder: Path, out: Path, env: dict | None = None, args: list[str] = ()) -> dict:
    run = subprocess.run([sys.executable, "-m", "cdss_node", "analyze", str(folder), "--out",
                          str(out), *args], capture_output=True, text=True, timeout=600,
                         env={**os.environ, **(env or {})})
    assert run.returncode == 0, run.stderr
    return json.loads((out / "result.json").read_text())


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs") / "ok"
    return out, analyze(SAMPLE, out)


@pytest.fixture(scope="module")
def not_evaluable(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gap") / "series"
    shutil.copytree(SAMPLE, folder)
    (folder / "CT000040.dcm").unlink()
    out = folder.parent / "out"
    return out, analyze(folder, out)


def dciodvfy_errors(path: Path) -> list[str]:
    run = subprocess.run([require_tool("dciodvfy"), str(path)], capture_output=True, text=True)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


# PixelMed's compiled TID 1500 rule calls TID 1410 for every Measurement Group of the
# Imaging Measurements container once one group has an Image Region SCOORD, so a TID 1411
# group beside a TID 1410 one is reported as lacking 1410's region (rows 5 and 7 of its XOR).
# Only these two, and only at the volumetric group, are passed over (checked against the rule
# in pixelmed.jar's DicomSRDescriptionsCompiled.xsl).
PIXELMED_MIXED_GROUPS = re.compile(
    r'^Error: Template 1410 PlanarROIMeasurements/\[Row 1\] CONTAINER \(125007,DCM,'
    r'"Measurement Group"\)/\[Row [57]\] (SCOORD \(111030|IMAGE \(121214)'
    r'.*within 1\.11\.2: .*Missing conditional content item$')


def pixelmed_errors(path: Path) -> list[str]:
    java = require_tool("java")
    if not PIXELMED_JAR.is_file():
        require_tool("DicomSRValidator")  # skips, or fails in CI, naming the package
    run = subprocess.run([java, *JDK_XPATH, "-cp", str(PIXELMED_JAR),
                          "com.pixelmed.validate.DicomSRValidator", str(path)],
                         capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    assert "Root Template Validation Complete" in out, out[-2000:]
    return [line for line in out.splitlines()
            if line.startswith("Error") and not PIXELMED_MIXED_GROUPS.match(line)]


def test_analyze_writes_seg_sr_and_image_and_a_not_evaluable_sr_and_image(analysed,
                                                                          not_evaluable):
    assert {p.name for p in analysed[0].iterdir()} >= {"seg.dcm", "sr.dcm", "sc.dcm",
                                                        "result.json"}
    names = {p.name for p in not_evaluable[0].iterdir()}
    assert {"sr.dcm", "sc.dcm"} <= names and "seg.dcm" not in names


def test_every_object_passes_dciodvfy(analysed, not_evaluable):
    for path in (analysed[0] / "seg.dcm", analysed[0] / "sr.dcm", analysed[0] / "sc.dcm",
                 not_evaluable[0] / "sr.dcm", not_evaluable[0] / "sc.dcm"):
        assert dciodvfy_errors(path) == [], path


def test_both_srs_pass_pixelmed(analysed, not_evaluable):
    for path in (analysed[0] / "sr.dcm", not_evaluable[0] / "sr.dcm"):
        assert pixelmed_errors(path) == [], path


def test_seg_holds_the_mask_of_result_json_on_the_source_ct(analysed):
    out, _ = analysed
    seg = hd.seg.segread(out / "seg.dcm")
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "tumor_mask.nii.gz"))).astype(bool)
    tumor_slices = np.flatnonzero(mask.any(axis=(1, 2)))
    # only the tumor's frames (empty ones are left out), each on its own slice
    assert seg.SegmentationType == "BINARY" and seg.NumberOfFrames == len(tumor_slices) < 80
    assert seg.StudyInstanceUID == json.loads((out / "result.json").read_text())[
        "series"]["study_uid"]
    slice_uids = load_volume(sorted(SAMPLE.glob("*.dcm"))).source_instance_uids
    frames = seg.get_pixels_by_source_instance(
        [slice_uids[k] for k in tumor_slices], combine_segments=True)
    assert np.array_equal(frames > 0, mask[tumor_slices])
    category = seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0]
    assert (category.CodeValue, category.CodingSchemeDesignator) == ("108369006", "SCT")


def test_sr_says_what_result_json_says(analysed):
    out, result = analysed
    sr = hd.sr.srread(out / "sr.dcm")
    dump = subprocess.run([require_tool("dsrdump"), str(out / "sr.dcm")], capture_output=True,
                          text=True)
    assert dump.returncode == 0 and "Imaging Measurement Report" in dump.stdout
    group = sr.content.get_volumetric_roi_measurement_groups()[0]
    measurements = {m.name.meaning: m for m in group.get_measurements()}
    values = {name: m.value for name, m in measurements.items()}
    assert values["Probability"] == pytest.approx(result["prediction"]["probability"])
    assert values["Volume"] == pytest.approx(result["tumor"]["volume_mm3"])
    algorithm = {item.ConceptNameCodeSequence[0].CodeValue: item.get("TextValue")
                 for item in measurements["Volume"][0].ContentSequence}
    assert f"{algorithm['111001']} {algorithm['111003']}" == result["tumor"]["segmenter"]
    assert sum(name.startswith(("shape_", "firstorder_", "gl", "ngtdm_")) for name in values) == 107
    evaluations = {e.name.meaning: e.value.meaning for e in group.get_qualitative_evaluations()}
    assert evaluations["EGFR mutation status (predicted)"] == result["prediction"]["label"]
    assert "synthetic" in evaluations["Intended use"]
    assert group.referenced_segment.referenced_sop_instance_uid == hd.seg.segread(
        out / "seg.dcm").SOPInstanceUID


def test_not_evaluable_sr_gives_the_coded_reason_and_a_sentence(not_evaluable):
    out, result = not_evaluable
    dump = subprocess.run([require_tool("dsrdump"), "+Pc", "+Pl", str(out / "sr.dcm")],
                          capture_output=True, text=True).stdout
    assert "(NE004,99CDSS,\"Missing slices\")" in dump
    assert "Not evaluable: Slices are missing" in dump and result["reason"]["code"] == "NE004"


def dsr2html_content(path: Path) -> list[str]:
    """The text lines of ``dsr2html``'s rendering after the root's language and observation
    context rows: from TID 1500's procedure reported, or from TID 2000's first section."""
    page = subprocess.run([require_tool("dsr2html"), str(path)], capture_output=True,
                          text=True, check=True).stdout
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    start = next(k for k, line in enumerate(lines)
                 if line in ("Imaging Measurement Report", "Diagnostic Imaging Report"))
    context = [line.startswith(("Concept Modifier:", "Observation Context:"))
               for line in lines[start + 1:]]
    return lines[start + context.index(False):]


def test_dsr2html_shows_the_egfr_result_and_its_caveat_first(analysed):
    out, result = analysed
    lines = dsr2html_content(out / "sr.dcm")
    assert lines[0].startswith("Concept Modifier: Procedure reported")
    prediction = result["prediction"]
    assert lines[1:6] == [
        "Summary", "Impression:",
        f"AI prediction: {prediction['label']}, probability {prediction['probability']:.3f} "
        f"(threshold {prediction['threshold']:.3f}), tumor volume "
        f"{result['tumor']['volume_mm3'] / 1000:.1f} ml.",
        "Intended use:", "Trained on synthetic data; not for clinical use (SYNTHETIC, 99CDSS)"]


def test_dsr2html_shows_why_a_series_was_not_evaluable_first(not_evaluable):
    out, _ = not_evaluable
    lines = dsr2html_content(out / "sr.dcm")
    assert lines[1:3] == ["Summary", "Impression:"]
    assert lines[3].startswith("Not evaluable: Slices are missing")
    assert lines[5].startswith("Trained on synthetic data; not for clinical use")


def test_the_not_evaluable_sr_is_a_text_report_without_measurement_groups(not_evaluable):
    """TID 2000 (Basic Diagnostic Imaging Report), sections Summary and Findings: no TID 1500
    measurement group that a viewer would try to draw."""
    import pydicom

    sr = pydicom.dcmread(not_evaluable[0] / "sr.dcm")
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "2000"
    assert sr.ConceptNameCodeSequence[0].CodeValue == "18748-4"
    sections = [item.ConceptNameCodeSequence[0].CodeMeaning for item in sr.ContentSequence
                if item.ValueType == "CONTAINER"]
    assert sections == ["Summary", "Findings"]


IDENTITY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
            "StudyID", "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName")


def test_seg_and_srs_carry_the_source_patient_and_study_identity_unchanged(analysed,
                                                                          not_evaluable):
    import pydicom

    source = pydicom.dcmread(next(SAMPLE.glob("*.dcm")), stop_before_pixels=True)
    for path in (analysed[0] / "seg.dcm", analysed[0] / "sr.dcm", analysed[0] / "sc.dcm",
                 not_evaluable[0] / "sr.dcm", not_evaluable[0] / "sc.dcm"):
        result = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in IDENTITY:
            assert result.get(keyword) == source.get(keyword), (path.name, keyword)
        assert result.SeriesInstanceUID != source.SeriesInstanceUID   # a new series


def test_an_anonymised_ct_without_type2_identity_still_gets_valid_seg_and_sr(tmp_path):
    """PatientBirthDate, AccessionNumber, StudyID... missing (common after anonymisation):
    the results carry them empty instead of the analysis failing without any report."""
    import pydicom

    folder = tmp_path / "series"
    folder.mkdir()
    for path in sorted(SAMPLE.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        for keyword in ("PatientBirthDate", "AccessionNumber", "StudyID", "StudyTime",
                        "ReferringPhysicianName", "PatientSex"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.save_as(folder / path.name)
    out = tmp_path / "out"
    assert analyze(folder, out)["status"] == "ok"
    for name in ("seg.dcm", "sr.dcm", "sc.dcm"):
        assert dciodvfy_errors(out / name) == [], name
        result = pydicom.dcmread(out / name, stop_before_pixels=True)
        assert result.PatientBirthDate == "" and result.AccessionNumber == ""
        assert result.PatientID == "SYN0001"


def test_a_lossy_compressed_ct_is_flagged_in_result_json_the_sr_and_not_otherwise(tmp_path,
                                                                                  analysed):
    """Lossy Image Compression "01" (images decompressed after a lossy step keep it): the
    impression says so, result.json says so; the sample as sent (lossless) says neither."""
    import pydicom

    from cdss_node.dicom.sr import LOSSY_NOTE

    folder = tmp_path / "series"
    folder.mkdir()
    for path in sorted(SAMPLE.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.LossyImageCompression = "01"
        ds.save_as(folder / path.name)
    out = tmp_path / "out"
    result = analyze(folder, out)
    assert result["series"]["lossy_compressed"] is True
    assert dsr2html_content(out / "sr.dcm")[3].endswith(LOSSY_NOTE.strip())
    assert dciodvfy_errors(out / "sr.dcm") == []
    assert analysed[1]["series"]["lossy_compressed"] is False
    assert LOSSY_NOTE.strip() not in "\n".join(dsr2html_content(analysed[0] / "sr.dcm"))


STANDARD_SCHEMES = {"DCM", "SCT", "UCUM", "LN", "RFC5646"}   # PS3.16 Table 8-1


def designators(ds) -> set[str]:
    """Every Coding Scheme Designator used in a dataset's codes, at any depth."""
    found = set()
    for element in ds:
        if element.keyword == "CodingSchemeIdentificationSequence":
            continue
        if element.VR == "SQ":
            for item in element.value:
                found |= designators(item)
        elif element.keyword == "CodingSchemeDesignator":
            found.add(element.value)
    return found


def test_every_private_coding_scheme_of_the_srs_is_declared(analysed, not_evaluable):
    import pydicom

    for out in (analysed[0], not_evaluable[0]):
        sr = pydicom.dcmread(out / "sr.dcm")
        declared = {item.CodingSchemeDesignator: item
                    for item in sr.CodingSchemeIdentificationSequence}
        used = designators(sr)
        assert "99CDSS" in used and used - STANDARD_SCHEMES <= set(declared)
        assert declared["99CDSS"].CodingSchemeResponsibleOrganization == "CDSS"


def content_items(item):
    """Every content item of an SR tree, depth first."""
    for child in item.get("ContentSequence", []):
        yield child
        yield from content_items(child)


def test_every_container_of_both_srs_is_separate(analysed, not_evaluable):
    import pydicom

    for out in (analysed[0], not_evaluable[0]):
        sr = pydicom.dcmread(out / "sr.dcm")
        containers = [sr, *(i for i in content_items(sr) if i.ValueType == "CONTAINER")]
        assert len(containers) >= 3
        assert {c.ContinuityOfContent for c in containers} == {"SEPARATE"}


def test_dsr2html_names_each_value_of_the_measurement_group(analysed):
    """CONTINUOUS containers ran the group into one paragraph of bare numbers; SEPARATE
    gives each value its own line after its name."""
    out, result = analysed
    lines = dsr2html_content(out / "sr.dcm")
    for name, unit, value in (("Volume:", "mm3", result["tumor"]["volume_mm3"]),
                              ("Probability:", "1", result["prediction"]["probability"])):
        at = len(lines) - 1 - lines[::-1].index(name)     # the volumetric group's
        number, shown_unit = lines[at + 1].split()
        assert shown_unit == unit and float(number) == pytest.approx(value, rel=1e-6)


def test_the_sr_outlines_the_tumor_on_its_key_slice_in_image_coordinates(analysed):
    """TID 1410: a closed polyline on the CT image of largest tumor area, on the tumor's
    edge there, its area, the volume and the EGFR probability in per cent under a name that
    says the predicted status (what OHIF labels the outline with); one tracking UID with the
    volumetric group and the SEG segment (so OHIF merges the two groups into one drawable
    measurement)."""
    from cdss_node.pipeline.load import load_volume

    out, result = analysed
    sr = hd.sr.srread(out / "sr.dcm")
    planar = sr.content.get_planar_roi_measurement_groups()
    assert len(planar) == 1
    group = planar[0]
    region = group.roi
    assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    points = region.value
    assert np.array_equal(points[0], points[-1]) and len(points) >= 8
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "tumor_mask.nii.gz"))).astype(bool)
    areas = mask.reshape(len(mask), -1).sum(axis=1)
    key = int(np.argmax(areas))
    image = region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    volume = load_volume(sorted(SAMPLE.glob("*.dcm")))
    assert image == volume.source_instance_uids[key]
    assert on_the_edge(points, mask[key])
    values = {m.name.meaning: m.value for m in group.get_measurements()}
    assert values["Area"] == pytest.approx(areas[key] * np.prod(volume.spacing_mm[1:]))
    prediction = result["prediction"]
    assert list(values)[0] == f"AI: {prediction['label']}, probability of mutation"
    assert list(values.values())[0] == pytest.approx(100 * prediction["probability"])
    assert values["Volume"] == pytest.approx(result["tumor"]["volume_mm3"])
    volumetric = sr.content.get_volumetric_roi_measurement_groups()[0]
    segment = hd.seg.segread(out / "seg.dcm").SegmentSequence[0]
    assert group.tracking_uid == volumetric.tracking_uid == segment.TrackingUID
    assert group.tracking_identifier == volumetric.tracking_identifier == segment.TrackingID


def on_the_edge(points: np.ndarray, plane: np.ndarray) -> bool:
    """Every point (column, row; pixel centres at index + 0.5) lies half a pixel from both a
    tumor pixel and a pixel outside it."""
    from scipy import ndimage

    padded = np.pad(plane, 1)
    indices = (points[:, ::-1] - 0.5 + 1).T      # row, column in the padded plane
    return all(ndimage.map_coordinates(ndimage.distance_transform_edt(~side), indices,
                                       order=1).max() <= 0.75 for side in (padded, ~padded))


def test_seg_segments_have_a_display_colour_and_say_they_are_ai(analysed):
    out, _ = analysed
    seg = hd.seg.segread(out / "seg.dcm")
    segment = seg.SegmentSequence[0]
    assert segment.SegmentLabel == "Primary lung tumor (AI)"
    red, green, blue = hd.color.CIELabColor.from_dicom_value(
        segment.RecommendedDisplayCIELabValue).to_rgb()
    assert red > 200 and green < 80 and blue < 80


def ocr(path: Path, tmp_path: Path) -> str:
    """The text a reader sees burned into a Secondary Capture (tesseract), on one line."""
    import pydicom
    from PIL import Image

    png = tmp_path / f"{path.parent.name}-{path.stem}.png"
    Image.fromarray(pydicom.dcmread(path).pixel_array).save(png)
    run = subprocess.run([require_tool("tesseract"), str(png), "-"], capture_output=True,
                         text=True, timeout=120)
    return " ".join(run.stdout.split())


def test_the_result_image_says_the_result_the_model_the_date_and_not_for_clinical_use(
        analysed, tmp_path):
    import pydicom

    out, result = analysed
    text = ocr(out / "sc.dcm", tmp_path)
    prediction = result["prediction"]
    for said in ("NOT FOR CLINICAL USE", prediction["label"],
                 f"probability {prediction['probability']:.3f}",
                 f"{result['tumor']['volume_mm3'] / 1000:.1f} ml", "CDSS EGFR default"):
        assert said in text, (said, text)
    made = pydicom.dcmread(out / "sc.dcm", stop_before_pixels=True).ContentDate
    assert f"{made[:4]}-{made[4:6]}-{made[6:]}" in text


def test_the_not_evaluable_result_image_says_why(not_evaluable, tmp_path):
    text = ocr(not_evaluable[0] / "sc.dcm", tmp_path)
    for said in ("NOT FOR CLINICAL USE", "Not evaluable", "Slices are missing from the series"):
        assert said in text, (said, text)


def test_the_result_image_is_the_key_slice_in_a_lung_window_outlined_in_red(analysed):
    """Its source image is the SR's key slice; above the caption its pixels are that slice in
    the lung window (W 1500, L -600) at 512 columns; its red pixels lie on the tumor's edge."""
    import pydicom
    from scipy import ndimage

    out, _ = analysed
    sc, sr, seg = (pydicom.dcmread(out / name) for name in ("sc.dcm", "sr.dcm", "seg.dcm"))
    assert sc.Modality == "OT" and sc.BurnedInAnnotation == "YES"
    assert sc.StudyInstanceUID == sr.StudyInstanceUID
    assert len({sc.SeriesInstanceUID, sr.SeriesInstanceUID, seg.SeriesInstanceUID}) == 3
    region = hd.sr.srread(out / "sr.dcm").content.get_planar_roi_measurement_groups()[0].roi
    key_uid = region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == key_uid
    ct = next(ds for ds in map(pydicom.dcmread, sorted(SAMPLE.glob("*.dcm")))
              if ds.SOPInstanceUID == key_uid)
    hu = ct.pixel_array * float(ct.RescaleSlope) + float(ct.RescaleIntercept)
    zoom = sc.Columns / ct.Columns
    expected = np.clip((ndimage.zoom(hu, zoom, order=1) + 1350) / 1500 * 255, 0, 255)
    shown = sc.pixel_array[:expected.shape[0]].astype(float)
    red = (shown[..., 0] > 180) & (shown[..., 1] < 100) & (shown[..., 2] < 100)
    grey = ~ndimage.binary_dilation(red, iterations=2)
    assert np.median(np.abs(shown[..., 1] - expected)[grey]) <= 2
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "tumor_mask.nii.gz"))).astype(bool)
    plane = mask[int(np.argmax(mask.reshape(len(mask), -1).sum(axis=1)))]
    rows, columns = np.nonzero(red)
    assert len(rows) >= 20
    points = np.stack([columns + 0.5, rows + 0.5], axis=1) / zoom      # CT pixel coordinates
    edge = plane ^ ndimage.binary_erosion(plane)
    distance = ndimage.distance_transform_edt(~edge)
    assert ndimage.map_coordinates(distance, (points[:, ::-1] - 0.5).T, order=1).max() <= 1.5


def test_the_result_image_is_switched_off_in_outputs(tmp_path):
    out = tmp_path / "out"
    assert analyze(SAMPLE, out, env={"CDSS_OUTPUTS_RESULT_IMAGE": "false"})["status"] == "ok"
    assert {p.name for p in out.glob("*.dcm")} == {"seg.dcm", "sr.dcm"}
