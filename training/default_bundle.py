"""The node's built-in default bundle: the paper's radiomics + clinical network (the tabular
variant, no CNN), fivefold, trained on the synthetic cohort. It is small enough to ship in the
package (``cdss_node/model/default_bundle``) and says everywhere that it was trained on
synthetic data and is not for clinical use.

``cdss-train default-bundle OUT`` makes it again; the same arguments give the same weights.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from scipy.stats import mannwhitneyu
from torch import nn

from cdss_node.model.bundle import save_bundle
from cdss_node.model.manifest import ClinicalInputs, ModelDescription, RadiomicsScaling, TrainingData
from cdss_node.model.network import TABULAR, build_network
from cdss_node.model.predict import scale_radiomics
from cdss_node.pipeline.clinical import FEATURES, ClinicalScaling, clinical_vector
from training.synthetic_cohort import CaseFeatures, case_features, clinical_matrix, draw_case

MODEL_ID = "cdss-egfr-synthetic-tabular"
HIDDEN, DROPOUT = 64, 0.2
EPOCHS, LEARNING_RATE, WEIGHT_DECAY = 400, 3e-3, 1e-2
INTENDED_USE = ("Demonstration and testing of the CDSS EGFR node only. Trained on synthetic "
                "phantoms with invented labels: its output says nothing about a real tumor's "
                "EGFR status. Not for clinical use.")


def build_default_bundle(out: Path, cases: int = 240, seed: int = 2024, folds: int = 5,
                         progress: Callable[[str], None] = print) -> ModelDescription:
    started = time.monotonic()
    torch.set_num_threads(1)  # a small network: threads only wait on each other (50x slower)
    features = []
    for i in range(cases):
        features.append(case_features(draw_case(i, seed)))
        if (i + 1) % 20 == 0 or i + 1 == cases:
            progress(f"features of case {i + 1}/{cases} ({time.monotonic() - started:.0f} s)")
    radiomics, clinical, labels = _matrices(features)
    r, c = scaled_inputs(features, radiomics_scaling(features, radiomics),
                         clinical_scaling(clinical))
    networks, oof = fit_folds(r, c, labels, folds, seed, progress)
    description = _description(features, radiomics, clinical, labels, oof, cases, seed, folds)
    save_bundle(out, description, networks)
    progress(f"bundle {out}: out-of-fold AUC {description.validation_metrics['auc']:.3f} "
             f"({time.monotonic() - started:.0f} s)")
    return description


def _matrices(features: list[CaseFeatures]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    radiomics = np.stack([f.radiomics.values for f in features])
    labels = np.array([f.case.egfr_mutant for f in features], dtype=np.float32)
    return radiomics, clinical_matrix(features), labels


def clinical_scaling(clinical: np.ndarray) -> ClinicalScaling:
    """Training medians (imputation) and ranges (min-max), ignoring missing values."""
    def per_feature(stat) -> dict[str, float]:
        return {name: float(stat(clinical[:, k])) for k, name in enumerate(FEATURES)}
    return ClinicalScaling(medians=per_feature(np.nanmedian), minimums=per_feature(np.nanmin),
                           maximums=per_feature(np.nanmax))


def scaled_inputs(features: list[CaseFeatures], radiomics: RadiomicsScaling,
                  clinical: ClinicalScaling) -> tuple[np.ndarray, np.ndarray]:
    """The network's inputs, scaled by the node's own functions (as serving scales them)."""
    r = np.stack([scale_radiomics(f.radiomics, radiomics) for f in features])
    c = np.stack([clinical_vector(f.case.header, clinical, f.case.supplied).values
                  for f in features])
    return r, c


def radiomics_scaling(features: list[CaseFeatures], radiomics: np.ndarray) -> RadiomicsScaling:
    return RadiomicsScaling(names=features[0].radiomics.names,
                            minimums=tuple(float(v) for v in radiomics.min(axis=0)),
                            maximums=tuple(float(v) for v in radiomics.max(axis=0)))


def fold_of_case(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Stratified assignment of cases to folds, deterministic."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=int)
    for value in (0, 1):
        members = rng.permutation(np.flatnonzero(labels == value))
        fold[members] = np.arange(len(members)) % folds
    return fold


def fit_folds(r: np.ndarray, c: np.ndarray, labels: np.ndarray, folds: int,
              seed: int, progress: Callable[[str], None]) -> tuple[list[nn.Module], np.ndarray]:
    """One network per fold, trained on the other folds (scaled inputs); out-of-fold
    probabilities."""
    fold = fold_of_case(labels, folds, seed)
    networks, oof = [], np.zeros(len(labels))
    for k in range(folds):
        train = fold != k
        net = train_network(r[train], c[train], labels[train], seed + k)
        oof[~train] = predict(net, r[~train], c[~train])
        progress(f"fold {k + 1}/{folds}: AUC {auc(labels[~train], oof[~train]):.3f}")
        networks.append(net)
    return networks, oof


def train_network(r: np.ndarray, c: np.ndarray, y: np.ndarray, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = build_network(TABULAR, r.shape[1], c.shape[1], hidden=HIDDEN, dropout=DROPOUT)
    optimiser = torch.optim.AdamW(net.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=EPOCHS)
    inputs = (torch.from_numpy(r), torch.from_numpy(c))
    target = torch.from_numpy(y)
    net.train()
    for _ in range(EPOCHS):
        optimiser.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(net(None, *inputs), target)
        loss.backward()
        optimiser.step()
        schedule.step()
    return net.eval()


def predict(net: nn.Module, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return torch.sigmoid(net(None, torch.from_numpy(r), torch.from_numpy(c))).numpy()


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


def _description(features, radiomics, clinical, labels, oof, cases, seed, folds
                 ) -> ModelDescription:
    threshold = youden_threshold(labels, oof)
    return ModelDescription(
        model_id=MODEL_ID, name="CDSS EGFR default (synthetic, radiomics + clinical)",
        version="0.1", architecture=TABULAR, hidden_features=HIDDEN, dropout=DROPOUT,
        radiomics=radiomics_scaling(features, radiomics),
        clinical=ClinicalInputs(names=FEATURES, scaling=clinical_scaling(clinical)),
        decision_threshold=threshold, intended_use=INTENDED_USE,
        training_data=TrainingData(
            description=(f"SYNTHETIC: {cases} chest CT phantoms with invented patients and "
                         f"EGFR labels from a written rule (training/synthetic_cohort.py, seed "
                         f"{seed}); {folds}-fold cross-validation; tumor masks from the "
                         "phantoms. No real patient data."), synthetic=True),
        validation_metrics={**metrics(labels, oof, threshold), "cases": float(cases)})
