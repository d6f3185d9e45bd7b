"""The evaluation's numbers (``training.metrics``) and the shipped default bundle."""

from __future__ import annotations

import numpy as np

from cdss_node.jobs import DEFAULT_BUNDLE
from cdss_node.model.bundle import load_bundle
from training.metrics import auc, fold_of_case, metrics, youden_threshold


def test_folds_are_stratified_and_metrics_are_right_on_small_cases():
    labels = np.array([0] * 10 + [1] * 5)
    fold = fold_of_case(labels, 5, seed=0)
    assert all(np.sum((fold == k) & (labels == 1)) == 1 for k in range(5))
    assert auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert youden_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.7, 0.9])) == 0.7
    found = metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9]), 0.5)
    assert found == {"auc": 0.75, "accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5}


def test_the_shipped_default_bundle_is_synthetic_and_validated():
    description = load_bundle(DEFAULT_BUNDLE, device="cpu").description
    assert description.training_data.synthetic
    assert "SYNTHETIC" in description.training_data.description
    assert "Not for clinical use" in description.intended_use
    assert description.validation_metrics["auc"] > 0.6  # out-of-fold, on the synthetic cohort
