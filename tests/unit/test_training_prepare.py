"""``cdss-train prepare``: the node's own pipeline per case into a resumable feature store."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk

from cdss_node.analysis import series_files
from cdss_node.jobs import AnalysisSettings
from cdss_node.pipeline.crop import tumor_crop
from cdss_node.pipeline.load import load_volume
from cdss_node.pipeline.preprocess import cnn_input
from cdss_node.pipeline.radiomics import extract_radiomics
from cdss_node.pipeline.records import HeaderFacts
from training.cohort import read_manifest, write_manifest
from cdss_node.model.network import network_image
from training.prepare import case_tumor, load_store, merged_header, prepare
from training.synth_cohort import write_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort")
    write_cohort(folder, {"A": 2, "B": 0, "C": 1}, seed=11)
    return folder


def test_the_store_holds_what_the_node_pipeline_computes(cohort, tmp_path):
    cases = read_manifest(cohort / "manifest.csv")
    counts = prepare(cases, tmp_path / "store", workers=2)
    assert counts == {"reused": 0, "computed": 3, "not_evaluable": 0}
    prepared = load_store(tmp_path / "store", [c.case_id for c in cases])
    case, stored = cases[2], prepared[2]
    volume = load_volume(series_files(case.image))
    tumor = case_tumor(case, volume, AnalysisSettings())
    assert np.array_equal(stored.radiomics, extract_radiomics(volume, tumor).values)
    assert np.array_equal(stored.crop, tumor_crop(cnn_input(volume), tumor).image)
    assert stored.header == case.header and stored.supplied == case.supplied
    assert (stored.site, stored.egfr_mutant) == (case.site, case.egfr_mutant)
    # loaded for a model: no crop for a tabular one, the window of a small CNN
    ids = [c.case_id for c in cases]
    assert all(c.crop is None for c in load_store(tmp_path / "store", ids, "radiomics-clinical"))
    small = load_store(tmp_path / "store", ids, "resnet10-small")[2]
    assert np.array_equal(small.crop, network_image("resnet10-small", stored.crop))
    assert np.array_equal(small.radiomics, stored.radiomics)


def test_a_second_run_reuses_and_a_changed_input_is_computed_again(cohort, tmp_path):
    folder = tmp_path / "cohort"
    shutil.copytree(cohort, folder)
    cases = read_manifest(folder / "manifest.csv")
    prepare(cases, tmp_path / "store")
    assert prepare(cases, tmp_path / "store")["reused"] == 3
    shutil.copy(folder / "cases" / cases[1].case_id / "mask.nii.gz", cases[0].mask)
    assert prepare(read_manifest(folder / "manifest.csv"), tmp_path / "store") == {
        "reused": 2, "computed": 1, "not_evaluable": 0}


def test_a_case_without_a_tumor_is_stored_as_not_evaluable(cohort, tmp_path):
    rows = [{"case_id": "EMPTY", "site": "A", "egfr": "0",
             "image": str(cohort / "cases" / "SYN-A-0000" / "ct")}]
    write_manifest(tmp_path / "m.csv", rows)
    other = read_manifest(cohort / "manifest.csv")[1]
    (case,) = read_manifest(tmp_path / "m.csv")
    empty = tmp_path / "empty.nii.gz"
    shutil.copy(other.mask, empty)
    image = sitk.ReadImage(str(empty))
    sitk.WriteImage(image * 0, str(empty))
    counts = prepare([replace(case, mask=empty)], tmp_path / "store")
    assert counts["not_evaluable"] == 1
    record = json.loads((tmp_path / "store" / "EMPTY.json").read_text())
    assert record["state"] == "not_evaluable" and record["reason"] == "NO_TUMOR_FOUND"
    assert load_store(tmp_path / "store", ["EMPTY"]) == []


def test_manifest_facts_win_and_the_header_fills_the_gaps():
    manifest = HeaderFacts(sex="F", age_years=None, size_m=1.6)
    header = HeaderFacts(sex="M", age_years=70.0, size_m=1.8, weight_kg=80.0,
                         smoking_status="YES")
    assert merged_header(manifest, header) == HeaderFacts(
        sex="F", age_years=70.0, size_m=1.6, weight_kg=80.0, smoking_status="YES")
