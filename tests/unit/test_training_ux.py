"""cdss-train as a data scientist meets it: defaults in --help, one line for an unfinished fit,
a report that says what was evaluated on what, and the model hash a user can check."""

from __future__ import annotations

from pathlib import Path

from cdss_node.jobs import DEFAULT_BUNDLE
from cdss_node.model.bundle import load_bundle
from cdss_node.model.installed import install, installed_models
from training.cli import _parser, main
from training.evaluate import ModelPredictions, _markdown, _preamble


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
                             {"cross_validation": "A", "internal": "B", "external": "C"})
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
