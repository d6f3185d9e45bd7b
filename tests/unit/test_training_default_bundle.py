"""The synthetic cohort and the default bundle trained on it."""

from __future__ import annotations

import json

import numpy as np

from cdss_node.jobs import DEFAULT_BUNDLE
from cdss_node.model.bundle import load_bundle
from training.default_bundle import auc, build_default_bundle, fold_of_case, youden_threshold
from training.synthetic_cohort import draw_case


def test_cases_are_reproducible_and_follow_the_written_rule():
    assert draw_case(7, seed=1) == draw_case(7, seed=1)
    cases = [draw_case(i, seed=1) for i in range(300)]
    mutant = np.array([c.egfr_mutant for c in cases])
    assert 0.3 < mutant.mean() < 0.5
    density = np.array([c.spec.tumor_hu for c in cases])
    female = np.array([c.header.sex == "F" for c in cases])
    assert density[mutant].mean() < density[~mutant].mean() - 100
    assert female[mutant].mean() > female[~mutant].mean()


def test_a_small_bundle_is_rebuilt_identically_and_says_it_is_synthetic(tmp_path):
    first = build_default_bundle(tmp_path / "a", cases=12, seed=5, folds=2, progress=str)
    build_default_bundle(tmp_path / "b", cases=12, seed=5, folds=2, progress=str)
    manifests = [json.loads((tmp_path / n / "manifest.json").read_text()) for n in "ab"]
    assert manifests[0]["folds"] == manifests[1]["folds"]
    assert first.training_data.synthetic and "SYNTHETIC" in first.training_data.description
    bundle = load_bundle(tmp_path / "a", device="cpu")
    assert bundle.manifest.fold_count == 2 and len(bundle.description.radiomics.names) == 107


def test_the_shipped_default_bundle_is_synthetic_and_validated():
    description = load_bundle(DEFAULT_BUNDLE, device="cpu").description
    assert description.training_data.synthetic
    assert "Not for clinical use" in description.intended_use
    assert description.validation_metrics["auc"] > 0.7  # out-of-fold, on the synthetic cohort


def test_folds_are_stratified_and_metrics_are_right_on_small_cases():
    labels = np.array([0] * 10 + [1] * 5)
    fold = fold_of_case(labels, 5, seed=0)
    assert all(np.sum((fold == k) & (labels == 1)) == 1 for k in range(5))
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert youden_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.7, 0.9])) == 0.7
