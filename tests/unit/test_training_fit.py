"""``cdss-train fit``: stratified folds on the training site, resumable training with the same
result, predictions for every role, and CNN weights from a 3D or an inflated 2D state dict."""

from __future__ import annotations

import csv
import json
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
from training.init_weights import fit_tensor, load_cnn_weights, load_tabular_weights
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
    said: list[str] = []
    prepared = cases(20, "A", 4)
    radiomics, clinical = training_scalings(prepared)
    data = scaled_inputs(prepared, radiomics, clinical, "radiomics-clinical")
    whole = train_fold(1, data, SETTINGS, tmp_path / "whole")
    real_epoch = fit_module._train_epoch

    def stop_at_third_epoch(network, optimiser, data, settings, fold_epoch, *rest):
        if fold_epoch[1] == 2:
            raise KeyboardInterrupt
        return real_epoch(network, optimiser, data, settings, fold_epoch, *rest)

    monkeypatch.setattr(fit_module, "_train_epoch", stop_at_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_fold(1, data, SETTINGS, tmp_path / "stopped")
    assert torch.load(tmp_path / "stopped" / "last.pt", weights_only=True)["epoch"] == 2
    monkeypatch.setattr(fit_module, "_train_epoch", real_epoch)
    resumed = train_fold(1, data, SETTINGS, tmp_path / "stopped", say=said.append)
    assert said == [f"fold 1: resumed after epoch 2 of 4 ({tmp_path / 'stopped' / 'last.pt'})"]
    train_fold(1, data, SETTINGS, tmp_path / "stopped", say=said.append)
    assert said[1].startswith("fold 1: reused, already trained")
    for (key, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), key
    history = json.loads((tmp_path / "stopped" / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]      # the resumed run goes on
    assert all(r["seconds"] > 0 and r["loss"] > 0 for r in history)


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


def test_a_multimodal_network_started_from_a_tabular_fold_answers_as_it(tmp_path):
    torch.manual_seed(0)
    tabular = build_network("radiomics-clinical", 6, 10).eval()
    torch.save(tabular.state_dict(), tmp_path / "final.pt")
    multimodal = build_network("resnet10-small", 6, 10)
    load_tabular_weights(multimodal, tmp_path / "final.pt")
    multimodal.eval()
    radiomics, clinical = torch.rand(3, 6), torch.rand(3, 10)
    with torch.inference_mode():
        expected = tabular(None, radiomics, clinical)
        for image in (torch.zeros(3, 1, 24, 32, 32), torch.rand(3, 1, 24, 32, 32)):
            assert torch.allclose(multimodal(image, radiomics, clinical), expected, atol=1e-6)
    # a gradient reaches the head's image weights, so training can add the image
    loss = multimodal.train()(torch.rand(3, 1, 24, 32, 32), radiomics, clinical).sum()
    loss.backward()
    assert multimodal.head[0].weight.grad[:, :512].abs().sum() > 0
    with pytest.raises(ValueError, match="not a radiomics-clinical fold model of this size"):
        load_tabular_weights(build_network("resnet10-small", 6, 10, hidden=8),
                             tmp_path / "final.pt")
    with pytest.raises(ValueError, match="only a network with a CNN"):
        load_tabular_weights(build_network("clinical", 6, 10), tmp_path / "final.pt")
    with pytest.raises(ValueError, match="not a radiomics-clinical fold model of this size"):
        load_tabular_weights(build_network("resnet10-small", 7, 10), tmp_path / "final.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a saved fold model"):
        load_tabular_weights(build_network("resnet10-small", 6, 10), tmp_path / "broken.pt")


def test_a_tabular_start_must_have_held_out_the_same_cases(tmp_path):
    prepared = cases(30, "A", 4)
    settings = replace(SETTINGS, epochs=2)
    fit(prepared, SiteRoles("A"), tmp_path / "rc", settings, progress=str)
    multimodal = replace(settings, architecture="resnet10-small", epochs=1, augment=False,
                         init_tabular=str(tmp_path / "rc"))
    with pytest.raises(ValueError, match="held out other cases per fold"):
        fit(prepared, SiteRoles("A"), tmp_path / "other-seed", replace(multimodal, seed=1),
            progress=str)
    with pytest.raises(ValueError, match="held out other cases per fold"):
        fit(prepared[:27], SiteRoles("A"), tmp_path / "fewer", multimodal, progress=str)
    with pytest.raises(ValueError, match="give --init-tabular too"):
        fit(prepared, SiteRoles("A"), tmp_path / "frozen", replace(
            multimodal, init_tabular="", freeze_tabular=True), progress=str)
    summary = fit(prepared, SiteRoles("A"), tmp_path / "same", multimodal, progress=str)
    assert summary["cases"]["cross-validation"] == 30


def test_a_frozen_tabular_branch_keeps_its_weights_and_statistics(tmp_path):
    prepared = cases(24, "A", 2)
    radiomics, clinical = training_scalings(prepared)
    data = scaled_inputs(prepared, radiomics, clinical, "resnet10-small")
    settings = replace(SETTINGS, architecture="resnet10-small", epochs=1, augment=False)
    train_fold(1, data, replace(settings, architecture="radiomics-clinical"), tmp_path / "rc" /
               "fold_1")
    frozen = replace(settings, init_tabular=str(tmp_path / "rc"), freeze_tabular=True)
    start = fit_module.new_network(frozen, data, 1).tabular.state_dict()
    trained = train_fold(1, data, frozen, tmp_path / "mm" / "fold_1")
    for key, value in trained.tabular.state_dict().items():
        assert torch.equal(value, start[key]), key
    assert not torch.equal(trained.head[0].weight[:, :512], torch.zeros_like(
        trained.head[0].weight[:, :512]))


def _distributed_worker(rank: int, world_size: int, port: int, out) -> None:
    """One of ``world_size`` processes, as torchrun would start it (gloo on CPU)."""
    import os

    from training.distributed import join

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    prepared = cases(30, "A", 1) + cases(30, "C", 3)
    radiomics, clinical = training_scalings(prepared[:30])
    data = scaled_inputs(prepared[:30], radiomics, clinical, "radiomics-clinical")
    network = train_fold(1, data, SETTINGS, out / "alone", join())
    torch.save(network.state_dict(), out / f"weights_of_rank_{rank}.pt")
    summary = fit(prepared, SiteRoles("A", external="C"), out / "fit",
                  replace(SETTINGS, epochs=40, batch_size=4), progress=str)
    (out / f"summary_of_rank_{rank}.txt").write_text(str(bool(summary)))


def test_two_processes_train_one_model_with_ddp_and_the_first_writes(tmp_path):
    from tests.conftest import free_port

    port = free_port()
    torch.multiprocessing.spawn(_distributed_worker, args=(2, port, tmp_path), nprocs=2)
    first, second = (torch.load(tmp_path / f"weights_of_rank_{r}.pt") for r in (0, 1))
    parameters = [k for k in first if not k.endswith(("running_mean", "running_var", "tracked"))]
    assert all(torch.equal(first[k], second[k]) for k in parameters)   # gradients shared
    assert [(tmp_path / f"summary_of_rank_{r}.txt").read_text() for r in (0, 1)] == [
        "True", "False"]                                                  # rank 0 writes
    rows = list(csv.DictReader((tmp_path / "fit" / "predictions.csv").open()))
    external = [r for r in rows if r["role"] == "external"]
    labels = np.array([int(r["egfr_mutant"]) for r in external])
    assert auc(labels, np.array([float(r["ensemble"]) for r in external])) > 0.85
    assert sorted(p.name for p in (tmp_path / "fit" / "fold_1").iterdir()) == [
        "final.pt", "history.json"]
