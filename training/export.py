"""``cdss-train export``: a ``cdss-train fit`` folder as a model bundle the node loads unchanged.

The bundle (``cdss_node.model.bundle``) holds the five fold networks and a manifest with the
architecture, the training scalings (radiomics ranges, clinical medians and ranges), the
decision threshold, validation metrics (out-of-fold on the training site, ensemble on the
internal and external sites), the intended use and the description of the training data. A
cohort made by ``cdss-train synth-cohort`` (a ``generator.json`` beside its manifest) is
marked synthetic, and its intended use and description say so.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from cdss_node.model.bundle import describe_network, save_bundle
from cdss_node.model.manifest import (
    ClinicalInputs, Manifest, ModelDescription, RadiomicsScaling, TrainingData)
from cdss_node.pipeline.clinical import FEATURES, ClinicalScaling
from training.metrics import metrics
from training.evaluate import load_model

SYNTHETIC_USE = ("Demonstration and testing of the CDSS EGFR node only. Trained on a "
                 "SYNTHETIC cohort (cdss-train synth-cohort): invented patients, phantom CTs and "
                 "EGFR labels from a written rule; its output says nothing about a real tumor's "
                 "EGFR status. Not for clinical use.")


def export(fit_dir: Path, bundle: Path, model_id: str, name: str, version: str,
           intended_use: str | None = None, data_description: str | None = None) -> Manifest:
    summary = json.loads((fit_dir / "fit.json").read_text())
    synthetic = _synthetic(summary)
    if not synthetic and not (intended_use and data_description):
        raise ValueError("a model trained on real data needs --intended-use and "
                         "--data-description (what it is for, what it was trained on)")
    description = ModelDescription(
        model_id=model_id, name=name, version=version,
        architecture=summary["settings"]["architecture"],
        hidden_features=summary["settings"]["hidden"], dropout=summary["settings"]["dropout"],
        radiomics=RadiomicsScaling(**{k: tuple(v) for k, v in
                                      summary["radiomics_scaling"].items()}),
        clinical=ClinicalInputs(names=FEATURES,
                                scaling=ClinicalScaling(**summary["clinical_scaling"])),
        decision_threshold=float(summary["decision_threshold"]),
        intended_use=intended_use or SYNTHETIC_USE,
        training_data=TrainingData(description=data_description or _synthetic_text(summary),
                                   synthetic=synthetic),
        validation_metrics=validation_metrics(fit_dir, float(summary["decision_threshold"])))
    networks = [_fold_network(description, fit_dir / f"fold_{k}" / "final.pt")
                for k in range(1, summary["settings"]["folds"] + 1)]
    return save_bundle(bundle, description, networks)


def _synthetic(summary: dict) -> bool:
    manifest = summary.get("manifest")
    return bool(manifest) and (Path(manifest).parent / "generator.json").is_file()


def _synthetic_text(summary: dict) -> str:
    cases = summary["cases"]
    generator = json.loads((Path(summary["manifest"]).parent / "generator.json").read_text())
    return (f"SYNTHETIC cohort of cdss-train synth-cohort (training/synth_cohort.py, seed "
            f"{generator['seed']}): "
            f"{cases['cross-validation']} cases of site {summary['roles']['cross_validation']} "
            f"in {summary['settings']['folds']}-fold cross-validation, {cases['internal']} "
            f"internal and {cases['external']} external validation cases. No real patient data.")


def validation_metrics(fit_dir: Path, threshold: float) -> dict[str, float]:
    """Out-of-fold metrics on the training site; ensemble AUC on the other sites."""
    model = load_model(fit_dir)
    cv = [r for r in model.rows if r["role"] == "cross-validation"]
    labels = np.array([int(r["egfr_mutant"]) for r in cv])
    oof = np.array([float(r["out_of_fold"]) for r in cv])
    found = {**metrics(labels, oof, threshold), "cases": float(len(cv))}
    for role in ("internal", "external"):
        labels, scores, _ = model.role(role)
        if len(set(labels.tolist())) == 2:
            found[f"{role}_auc"] = metrics(labels, scores, threshold)["auc"]
    return found


def _fold_network(description: ModelDescription, weights: Path) -> torch.nn.Module:
    network = describe_network(description)
    network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return network.eval()
