"""The numbers of the paper's evaluation, shared by ``fit``, ``evaluate`` and ``export``:
stratified fold assignment, AUC, the Youden threshold, and accuracy / precision / recall / F1 /
AUC at a threshold."""

from __future__ import annotations

import numpy as np
from scipy.stats import mannwhitneyu


def fold_of_case(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Stratified assignment of cases to folds, deterministic."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=int)
    for value in (0, 1):
        members = rng.permutation(np.flatnonzero(labels == value))
        fold[members] = np.arange(len(members)) % folds
    return fold


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U over positives x negatives)."""
    positive, negative = scores[labels == 1], scores[labels == 0]
    return float(mannwhitneyu(positive, negative).statistic / (len(positive) * len(negative)))


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The probability cut-off that maximises sensitivity + specificity - 1."""
    candidates = np.unique(np.clip(scores, 0.01, 0.99))
    j = [np.mean(scores[labels == 1] >= t) + np.mean(scores[labels == 0] < t) for t in candidates]
    return float(candidates[int(np.argmax(j))])


def metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = scores >= threshold
    tp = float(np.sum(predicted & (labels == 1)))
    precision = tp / max(float(predicted.sum()), 1.0)
    recall = tp / max(float((labels == 1).sum()), 1.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"auc": round(auc(labels, scores), 4),
            "accuracy": round(float(np.mean(predicted == (labels == 1))), 4),
            "precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}
