"""The image network's Grad-CAM as the radiologist gets it: ``attention.dcm`` beside SEG and
SR (a fractional SEG of the source CT, valid for dciodvfy), referenced from the SR (valid for
PixelMed), the same map as ``attention_map.nii.gz`` of result.json; ``[outputs]
attention_map = false`` switches it off. The model is a resnet10-small bundle with random
weights: what it attends to means nothing, where the map goes is tested."""

from __future__ import annotations

from dataclasses import replace

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from cdss_node.analysis import series_files
from cdss_node.jobs import DEFAULT_BUNDLE
from cdss_node.model.bundle import describe_network, read_manifest, save_bundle
from cdss_node.pipeline.load import load_volume
from tests.integration.test_dicom_outputs import SAMPLE, analyze, dciodvfy_errors, pixelmed_errors
from tests.unit.model_fixtures import randomise

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cnn_bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundle") / "resnet10-small"
    default = read_manifest(DEFAULT_BUNDLE).description       # its radiomics and clinical inputs
    desc = replace(default, architecture="resnet10-small", model_id="egfr-test-cnn",
                   name="EGFR resnet10-small (random weights, test)", hidden_features=16)
    save_bundle(folder, desc, [randomise(describe_network(desc), seed) for seed in range(2)])
    return folder


@pytest.fixture(scope="module")
def analysed(tmp_path_factory, cnn_bundle):
    out = tmp_path_factory.mktemp("attention") / "ok"
    return out, analyze(SAMPLE, out, args=["--bundle", str(cnn_bundle)])


def test_attention_lands_beside_seg_and_sr_and_is_valid(analysed):
    out, result = analysed
    assert {"seg.dcm", "attention.dcm", "sr.dcm", "sc.dcm"} <= {p.name for p in out.iterdir()}
    assert result["attention"]["dicom_file"] == "attention.dcm"
    assert dciodvfy_errors(out / "attention.dcm") == []
    seg = hd.seg.segread(out / "attention.dcm")
    tumor_seg = pydicom.dcmread(out / "seg.dcm")
    assert seg.SegmentationType == "FRACTIONAL"
    assert seg.StudyInstanceUID == tumor_seg.StudyInstanceUID
    assert seg.SeriesInstanceUID != tumor_seg.SeriesInstanceUID and seg.SeriesNumber == 9904
    assert seg.SegmentSequence[0].SegmentLabel == "Model attention (Grad-CAM)"


def test_the_sr_references_the_attention_and_passes_pixelmed(analysed):
    out, result = analysed
    sr, attention = pydicom.dcmread(out / "sr.dcm"), pydicom.dcmread(out / "attention.dcm")
    evidence = {item.ReferencedSOPInstanceUID
                for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence
                for item in series.ReferencedSOPSequence}
    assert attention.SOPInstanceUID in evidence
    summary = next(item for item in sr.ContentSequence
                   if item.ConceptNameCodeSequence[0].CodeValue == "121111")
    composite = [item for item in summary.ContentSequence if item.ValueType == "COMPOSITE"]
    assert [c.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for c in composite] == [
        attention.SOPInstanceUID]
    share = result["attention"]["inside_tumor_share"]
    texts = [item.TextValue for item in summary.ContentSequence if item.ValueType == "TEXT"]
    assert any(f"{100 * share:.0f} % of it lies inside the tumor" in t for t in texts)
    assert pixelmed_errors(out / "sr.dcm") == []


def test_the_seg_holds_the_map_of_result_json_on_the_source_ct(analysed):
    out, result = analysed
    nifti = sitk.ReadImage(str(out / result["attention"]["file"]))
    values = sitk.GetArrayFromImage(nifti)
    mask = sitk.ReadImage(str(out / "tumor_mask.nii.gz"))
    assert values.shape == sitk.GetArrayFromImage(mask).shape
    assert nifti.GetOrigin() == mask.GetOrigin() and nifti.GetSpacing() == mask.GetSpacing()
    assert 0 < values.max() <= 1.0
    seg = hd.seg.segread(out / "attention.dcm")
    uids = list(load_volume(series_files(SAMPLE)).source_instance_uids)   # the NIfTI's order
    frames = np.asarray(seg.get_pixels_by_source_instance(
        uids, segment_numbers=[1], combine_segments=False, rescale_fractional=True,
        skip_overlap_checks=True))[..., 0]
    assert np.abs(frames - values).max() <= 1 / 255 + 1e-6
    assert len(seg.PerFrameFunctionalGroupsSequence) == int((values.max(axis=(1, 2)) > 0).sum())


def test_attention_map_false_in_outputs_switches_it_off(tmp_path, cnn_bundle):
    result = analyze(SAMPLE, tmp_path / "out", env={"CDSS_OUTPUTS_ATTENTION_MAP": "false"},
                     args=["--bundle", str(cnn_bundle)])
    assert result["attention"] is None and result["status"] == "ok"
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert "attention.dcm" not in names and "attention_map.nii.gz" not in names
