"""Installed models: a bundle is checked before it is copied in and again before it is used;
the analysis takes [analysis] bundle, else the active model, else the built-in default."""

from __future__ import annotations

import json
import shutil

import pytest

from cdss_node.cli import main
from cdss_node.jobs import DEFAULT_BUNDLE, AnalysisSettings
from cdss_node.model.bundle import load_bundle
from cdss_node.model.installed import (
    ModelStoreError, active_bundle, install, installed_models, models_dir, use)

NAME = "cdss-egfr-synthetic-radiomics-clinical-0.3"


def bundle_version(tmp_path, version: str):
    """The default bundle under another version (same weights: still a valid bundle)."""
    folder = tmp_path / f"bundle-{version}"
    shutil.copytree(DEFAULT_BUNDLE, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["version"] = version
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_install_use_and_the_bundle_the_analysis_takes(tmp_path):
    data = tmp_path / "var"
    assert AnalysisSettings(data_dir=str(data)).bundle_path == DEFAULT_BUNDLE
    assert install(DEFAULT_BUNDLE, data) == NAME
    assert active_bundle(data) is None              # installed is not yet in use
    other = install(bundle_version(tmp_path, "0.4"), data)
    use(other, data)
    assert active_bundle(data) == models_dir(data) / other
    assert AnalysisSettings(data_dir=str(data)).bundle_path == models_dir(data) / other
    assert AnalysisSettings(bundle="/x", data_dir=str(data)).bundle_path.as_posix() == "/x"
    assert [(m.name, m.active, m.synthetic) for m in installed_models(data)] == [
        (NAME, False, True), (other, True, True)]


def test_a_damaged_bundle_is_refused_in_one_line_and_leaves_nothing(tmp_path):
    damaged = bundle_version(tmp_path, "9")
    (damaged / "fold_4.safetensors").write_bytes(b"not weights")
    with pytest.raises(ModelStoreError, match=r"fold_4\.safetensors: expected sha256"):
        install(damaged, tmp_path / "var")
    assert not list((tmp_path / "var").glob("models/*"))
    install(DEFAULT_BUNDLE, tmp_path / "var")
    with pytest.raises(ModelStoreError, match="already installed"):
        install(DEFAULT_BUNDLE, tmp_path / "var")
    (models_dir(tmp_path / "var") / NAME / "fold_1.safetensors").write_bytes(b"x")
    with pytest.raises(ModelStoreError, match=r"fold_1\.safetensors"):
        use(NAME, tmp_path / "var")                 # checked again before use
    with pytest.raises(ModelStoreError, match=r"'\.\./x': no such installed model"):
        use("../x", tmp_path / "var")


def test_the_model_commands(tmp_path, capsys):
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ndata_dir = "{tmp_path / "var"}"\n')
    assert main(["--config", str(config), "model", "install", str(DEFAULT_BUNDLE), "--use"]) == 0
    assert main(["--config", str(config), "model", "list"]) == 0
    shown = capsys.readouterr().out
    sha256 = load_bundle(DEFAULT_BUNDLE, device="cpu").sha256
    assert (f"* {NAME}  (cdss-egfr-synthetic-radiomics-clinical 0.3, SYNTHETIC; model hash "
            f"{sha256[:12]})") in shown
    assert main(["--config", str(config), "model", "use", "missing"]) == 1
    assert "no such installed model" in capsys.readouterr().err
