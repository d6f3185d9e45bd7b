"""``cdss-train fit``: stratified folds on the training site, resumable training with the same
result, predictions for every role, and CNN weights from a 3D or an inflated 2D state dict."""

from __future__ import annotations

import csv
from dataclasses import replace

import numpy as np
import pytest
import torch

from cdss_node.model.network import build_network
from cdss_node.pipeline.clinical import SuppliedFacts
from cdss_node.pipeline.records import HeaderFacts
from training import fit as fit_module
from training.cohort import SiteRoles
from training.metrics import auc
from training.fit import FitSettings, fit, scaled_inputs, train_fold, training_scalings
from training.init_weights import fit_tensor, load_cnn_weights
from training.prepare import PreparedCase

NAMES = tuple(f"original_firstorder_F{k}" for k in range(6))


def cases(n: int, site: str, seed: int) -> list[PreparedCase]:
    """Tabular cases whose first radiomics value carries the label."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        mutant = bool(k % 3 == 0)
        radiomics = rng.normal(size=len(NAMES)) + np.eye(len(NAMES))[0] * (3.0 if mutant else 0)
        out.append(PreparedCase(f"{site}{k}", site, mutant,
                                HeaderFacts(sex="F" if k % 2 else "M", age_years=60.0 + k % 7),
                                SuppliedFacts(stage="I"), NAMES, radiomics,
                                np.zeros((1, 64, 112, 112), np.float32)))
    return out


SETTINGS = FitSettings(folds=3, epochs=4, batch_size=8, learning_rate=1e-2, device="cpu")


def test_fit_predicts_every_role_and_learns_the_planted_signal(tmp_path):
    prepared = cases(30, "A", 1) + cases(12, "B", 2) + cases(30, "C", 3)
    summary = fit(prepared, SiteRoles("A", "B", "C"), tmp_path, replace(SETTINGS, epochs=40),
                  progress=str)
    assert summary["cases"] == {"cross-validation": 30, "internal": 12, "external": 30}
    rows = list(csv.DictReader((tmp_path / "predictions.csv").open()))
    cv = [r for r in rows if r["role"] == "cross-validation"]
    for k in (1, 2, 3):   # stratified: 10 mutants and 20 wild type over three folds
        held_out = [r["egfr_mutant"] for r in cv if r["held_out_fold"] == str(k)]
        assert 3 <= held_out.count("1") <= 4 and 6 <= held_out.count("0") <= 7
    external = [r for r in rows if r["role"] == "external"]
    labels = np.array([int(r["egfr_mutant"]) for r in external])
    ensemble = np.array([float(r["ensemble"]) for r in external])
    assert auc(labels, ensemble) > 0.85  # a 3 sd signal (Bayes AUC 0.98) on unseen cases
    for r in external:
        folds = [float(r[f"fold_{k}"]) for k in (1, 2, 3)]
        assert float(r["ensemble"]) == pytest.approx(np.mean(folds), abs=1e-12)


def test_a_resumed_fold_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    prepared = cases(20, "A", 4)
    radiomics, clinical = training_scalings(prepared)
    data = scaled_inputs(prepared, radiomics, clinical, with_crops=False)
    whole = train_fold(1, data, SETTINGS, tmp_path / "whole")
    real_epoch = fit_module._train_epoch

    def stop_at_third_epoch(network, optimiser, data, settings, fold_epoch, device):
        if fold_epoch[1] == 2:
            raise KeyboardInterrupt
        return real_epoch(network, optimiser, data, settings, fold_epoch, device)

    monkeypatch.setattr(fit_module, "_train_epoch", stop_at_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_fold(1, data, SETTINGS, tmp_path / "stopped")
    assert torch.load(tmp_path / "stopped" / "last.pt", weights_only=True)["epoch"] == 2
    monkeypatch.setattr(fit_module, "_train_epoch", real_epoch)
    resumed = train_fold(1, data, SETTINGS, tmp_path / "stopped")
    for (key, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), key


def test_a_3d_state_dict_is_copied_and_a_2d_one_is_inflated(tmp_path):
    network = build_network("resnet34", 6, 10)
    conv = network.cnn.conv1.weight                          # (64, 1, 7, 7, 7)
    rgb = torch.randn(64, 3, 7, 7)
    inflated = fit_tensor(rgb, conv)
    assert inflated.shape == conv.shape
    assert torch.allclose(inflated.sum(dim=2), rgb.sum(dim=1, keepdim=True), atol=1e-5)
    assert fit_tensor(torch.zeros(5), conv) is None
    torch.save({"conv1.weight": rgb, "fc.weight": torch.zeros(3, 3)}, tmp_path / "2d.pt")
    assert load_cnn_weights(network, tmp_path / "2d.pt") == 1
    assert torch.allclose(network.cnn.conv1.weight, inflated)
    torch.save({f"cnn.{k}": v for k, v in network.cnn.state_dict().items()}, tmp_path / "3d.pt")
    other = build_network("resnet34", 6, 10)
    assert load_cnn_weights(other, tmp_path / "3d.pt") == len(other.cnn.state_dict())
    with pytest.raises(ValueError, match="no tensor fits"):
        torch.save({"x": torch.zeros(2)}, tmp_path / "bad.pt")
        load_cnn_weights(other, tmp_path / "bad.pt")
