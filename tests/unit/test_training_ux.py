"""cdss-train as a data scientist meets it: defaults in --help, one line for an unfinished fit,
a report that says what was evaluated on what, and the model hash a user can check."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cdss_node.jobs import DEFAULT_BUNDLE
from cdss_node.model.bundle import load_bundle
from cdss_node.model.installed import install, installed_models
from training.cli import _parser, main
from training.evaluate import ModelPredictions, _markdown, _preamble, ensemble_row, fold_row


def test_fit_help_shows_every_default():
    fit = _parser()._subparsers._group_actions[0].choices["fit"]
    text = " ".join(fit.format_help().split())
    for shown in ("--epochs EPOCHS epochs per fold", "(default: 30)", "(default: 16)",
                  "(default: 1e-05)", "(default: radiomics-clinical)"):
        assert shown in text, shown


def test_evaluate_of_an_unfinished_fit_says_so_in_one_line(tmp_path, capsys):
    (tmp_path / "fit-running").mkdir()
    assert main(["evaluate", str(tmp_path / "fit-running"), "--out", str(tmp_path / "e")]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1
    assert "no fit.json: not a finished cdss-train fit folder" in error
    assert "FileNotFoundError" not in error


def test_the_report_names_models_sites_synthetic_and_links_figures():
    model = ModelPredictions("resnet34 (fit-r34)", 0.5, 5, [], None,
                             {"cross_validation": "A", "internal": "B", "external": "C"},
                             "resnet34")
    text = _markdown({"table3_external": [{"model": model.name, "auc": 0.712345678}]},
                     _preamble([model], synthetic=True), ["external"])
    assert "Models: resnet34 (fit-r34)." in text
    assert "Sites: cross-validation = A, internal = B, external = C." in text
    assert "**SYNTHETIC cohort**" in text
    assert "](figures_external.png)" in text
    assert "| resnet34 (fit-r34) | 0.7123 |" in text and "0.712345678" not in text


def test_model_list_shows_the_hash_the_sr_names(tmp_path, capsys):
    install(DEFAULT_BUNDLE, tmp_path / "var")
    [model] = installed_models(tmp_path / "var")
    assert model.sha256 == load_bundle(Path(DEFAULT_BUNDLE), device="cpu").sha256


def _predictions(architecture: str) -> ModelPredictions:
    rng = np.random.default_rng(0)
    rows = [{"role": "external", "case_id": f"C{i:03d}", "egfr_mutant": "1" if i % 3 == 0 else "0",
             "ensemble": str(rng.random()),
             **{f"fold_{k}": str(rng.random()) for k in range(1, 6)}}
            for i in range(30)]
    return ModelPredictions(f"{architecture} (fit)", 0.5, 5, rows, None, None, architecture)


def test_tables_2_to_4_show_the_papers_numbers_beside_ours():
    """PAPER.md: ResNet34 external, Table 3 0.7413 / 0.5592 / 0.6538 / 0.7055 / 0.7679 and
    Table 4 AUC 0.7446 ± 0.0268; radiomics + clinical external, Table 2 AUC 0.7038; the
    clinical family has no paper counterpart."""
    resnet = _predictions("resnet34")
    assert ensemble_row(resnet, "external")["paper_acc_prec_rec_f1_auc"] == \
        "0.7413 / 0.5592 / 0.6538 / 0.7055 / 0.7679"
    assert fold_row(resnet, "external")["paper_auc"] == "0.7446 ± 0.0268"
    assert ensemble_row(_predictions("radiomics-clinical"), "external")[
        "paper_acc_prec_rec_f1_auc"].endswith("/ 0.7038")
    assert ensemble_row(_predictions("clinical"), "external")["paper_acc_prec_rec_f1_auc"] == ""
