"""``cdss-node analyze`` as a user runs it: the committed sample, defects, a damaged bundle."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from cdss_node.jobs import DEFAULT_BUNDLE
from tests.conftest import REPO

SAMPLE = REPO / "sample_dicom"


def analyze(folder: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cdss_node", "analyze", str(folder), "--out",
                           str(out), *extra], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def sample_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("analyze") / "out"
    run = analyze(SAMPLE / "series", out)
    assert run.returncode == 0, run.stderr
    return run, out, json.loads((out / "result.json").read_text())


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def test_sample_is_analysed_with_the_synthetic_default_model(sample_result):
    run, _, result = sample_result
    assert result["status"] == "ok" and run.stdout.startswith("ok: EGFR ")
    assert len(result["radiomics"]) == 107
    p = result["prediction"]
    assert len(p["fold_probabilities"]) == 5
    assert p["probability"] == pytest.approx(np.mean(p["fold_probabilities"]))
    assert p["label"] == ("EGFR mutant" if p["probability"] >= p["threshold"]
                          else "EGFR wild type")
    model = result["model"]
    assert model["trained_on_synthetic_data"] is True and "SYNTHETIC" in model["training_data"]
    assert len(model["sha256"]) == 64
    # the default model has no image network: no CNN input is made (no "crop" stage)
    assert set(result["stage_seconds"]) == {"load", "segment", "radiomics", "clinical",
                                            "predict"}


def test_clinical_inputs_come_from_the_header_and_the_rest_is_imputed(sample_result):
    truth = json.loads((SAMPLE / "truth" / "truth.json").read_text())["patient"]
    clinical = sample_result[2]["clinical"]
    assert clinical["inputs"]["age_years"] == truth["age_years"]
    assert clinical["inputs"]["sex_male"] == (1.0 if truth["sex"] == "M" else 0.0)
    assert "family_history" in clinical["imputed"] and "age_years" not in clinical["imputed"]


def test_mask_lies_on_the_ct_grid_and_matches_the_known_tumor(sample_result):
    _, out, result = sample_result
    mask_image = sitk.ReadImage(str(out / "tumor_mask.nii.gz"))
    mask = sitk.GetArrayFromImage(mask_image).astype(bool)
    truth = np.load(SAMPLE / "truth" / "tumor_mask.npz")["tumor_mask"][::-1]  # ascending z
    assert mask.shape == truth.shape and dice(mask, truth) >= 0.8
    first, last = (pydicom.dcmread(p, stop_before_pixels=True)
                   for p in sorted((SAMPLE / "series").glob("*.dcm"))[::79])
    lowest = min(first, last, key=lambda ds: float(ds.ImagePositionPatient[2]))
    assert np.allclose(mask_image.GetOrigin(), [float(v) for v in lowest.ImagePositionPatient])
    assert np.allclose(mask_image.GetSpacing()[:2], [float(v) for v in lowest.PixelSpacing])
    assert result["tumor"]["volume_mm3"] == pytest.approx(
        np.count_nonzero(mask) * np.prod(mask_image.GetSpacing()))


def test_a_series_with_a_gap_is_not_evaluable_with_its_coded_reason(tmp_path):
    folder = tmp_path / "gap"
    shutil.copytree(SAMPLE / "series", folder)
    (folder / "CT000040.dcm").unlink()
    run = analyze(folder, tmp_path / "out")
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert run.returncode == 0 and run.stdout.startswith("not evaluable: NE004")
    assert result["status"] == "not_evaluable" and result["prediction"] is None
    assert result["reason"]["code"] == "NE004" and result["reason"]["scheme"] == "99CDSS"
    assert result["model"]["id"]  # the report still names the model that would have run


def test_a_damaged_bundle_is_refused_in_one_line(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, bundle)
    with open(bundle / "fold_3.safetensors", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x00" * 8)
    run = analyze(SAMPLE / "series", tmp_path / "out", "--bundle", str(bundle))
    assert run.returncode == 1 and not (tmp_path / "out").exists()
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "fold_3.safetensors" in lines[0] and "sha256" in lines[0]


def test_an_empty_folder_is_refused_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    run = analyze(tmp_path / "empty", tmp_path / "out")
    assert run.returncode == 1 and "no files to analyse" in run.stderr
