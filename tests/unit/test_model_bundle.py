import json
from dataclasses import replace
from pathlib import Path

import pytest

from cdss_node.model.bundle import (
    MANIFEST,
    BundleError,
    ModelBundle,
    bundle_sha256,
    describe_network,
    load_bundle,
    read_manifest,
    save_bundle,
)
from cdss_node.model.manifest import FIELDS, ManifestError, TrainingData
from cdss_node.model.network import build_network
from cdss_node.model.predict import predict_egfr
from tests.unit.model_fixtures import clinical, description, radiomics, randomise


def _save(folder: Path, folds: int = 5, **changes):
    desc = description(**changes)
    networks = [randomise(describe_network(desc), seed) for seed in range(folds)]
    return save_bundle(folder, desc, networks)


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    _save(tmp_path / "bundle")
    return tmp_path / "bundle"


def _edit_manifest(folder: Path, edit) -> None:
    path = folder / MANIFEST
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_save_then_load_gives_identical_predictions(tmp_path: Path):
    desc = description()
    networks = [randomise(describe_network(desc), seed) for seed in range(5)]
    manifest = save_bundle(tmp_path / "b", desc, networks)
    loaded = load_bundle(tmp_path / "b", device="cpu")
    assert loaded.manifest == manifest and loaded.sha256 == bundle_sha256(manifest)
    in_memory = ModelBundle(tmp_path, manifest, loaded.sha256, loaded.device,
                            _ensemble(networks))
    for seed in range(3):
        inputs = (None, radiomics(seed), clinical(seed))
        assert predict_egfr(loaded, *inputs) == predict_egfr(in_memory, *inputs)


def _ensemble(networks):
    from cdss_node.model.ensemble import FoldEnsemble

    return FoldEnsemble(networks, "loop")


def test_manifest_lists_every_field_and_fold_hashes(bundle_dir: Path):
    data = json.loads((bundle_dir / MANIFEST).read_text())
    assert tuple(data) == FIELDS
    assert data["fold_count"] == 5 and [f["file"] for f in data["folds"]] == [
        f"fold_{k}.safetensors" for k in range(1, 6)]
    assert data["training_data"] == {"description": "Random weights for tests; no training "
                                     "data.", "synthetic": True}
    assert sorted(p.name for p in bundle_dir.iterdir()) == sorted(
        [MANIFEST] + [f"fold_{k}.safetensors" for k in range(1, 6)])


def test_corrupted_fold_file_is_refused(bundle_dir: Path):
    path = bundle_dir / "fold_3.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"fold_3\.safetensors: expected sha256 .* found"):
        load_bundle(bundle_dir, device="cpu")


def test_missing_fold_file_is_refused(bundle_dir: Path):
    (bundle_dir / "fold_5.safetensors").unlink()
    with pytest.raises(BundleError, match=r"fold_5\.safetensors: expected the fold's weights"):
        load_bundle(bundle_dir, device="cpu")


@pytest.mark.parametrize("field", ["decision_threshold", "intended_use", "folds", "created"])
def test_manifest_with_a_missing_field_names_it(bundle_dir: Path, field: str):
    _edit_manifest(bundle_dir, lambda data: data.pop(field))
    with pytest.raises(ManifestError, match=rf"^manifest\.json: {field}: missing$"):
        read_manifest(bundle_dir)


def test_manifest_with_a_missing_nested_field_names_it(bundle_dir: Path):
    _edit_manifest(bundle_dir, lambda data: data["training_data"].pop("synthetic"))
    with pytest.raises(ManifestError, match=r"training_data\.synthetic: missing"):
        read_manifest(bundle_dir)


@pytest.mark.parametrize("field, value, message", [
    ("decision_threshold", 1.5, r"decision_threshold: expected a number in \(0, 1\)"),
    ("architecture", "vgg16", r"architecture: expected one of"),
    ("fold_count", 4, r"fold_count: expected 5"),
    ("created", "yesterday", r"created: expected an ISO date"),
    ("format_version", 2, r"format_version: expected 1"),
    ("model_id", "../x", r"model_id: expected"),
    ("validation_metrics", {"auc": "high"}, r"validation_metrics: expected"),
])
def test_manifest_with_a_wrong_value_names_the_field(bundle_dir, field, value, message):
    _edit_manifest(bundle_dir, lambda data: data.update({field: value}))
    with pytest.raises(ManifestError, match=message):
        read_manifest(bundle_dir)


def test_manifest_with_unknown_field_or_bad_json_is_refused(bundle_dir: Path):
    _edit_manifest(bundle_dir, lambda data: data.update(threshhold=0.4))
    with pytest.raises(ManifestError, match=r"manifest: expected only the fields"):
        read_manifest(bundle_dir)
    (bundle_dir / MANIFEST).write_text("{")
    with pytest.raises(ManifestError, match="expected JSON"):
        read_manifest(bundle_dir)


def test_radiomics_ranges_and_clinical_scaling_are_checked(bundle_dir: Path):
    _edit_manifest(bundle_dir, lambda data: data["radiomics"]["minimums"].pop())
    with pytest.raises(ManifestError, match=r"radiomics\.minimums: expected 107 finite"):
        read_manifest(bundle_dir)
    _edit_manifest(bundle_dir, lambda data: data["radiomics"]["minimums"].append(0.0))
    _edit_manifest(bundle_dir, lambda data: data["clinical"]["medians"].pop("smoker"))
    with pytest.raises(ManifestError, match=r"clinical\.medians"):
        read_manifest(bundle_dir)


def test_weights_that_do_not_fit_the_named_network_are_refused(bundle_dir: Path):
    _edit_manifest(bundle_dir, lambda data: data.update(hidden_features=32))
    with pytest.raises(BundleError, match=r"fold_1\.safetensors: expected the weights of a "
                                          r"radiomics-clinical network"):
        load_bundle(bundle_dir, device="cpu")


def test_changed_manifest_changes_the_model_hash(bundle_dir: Path):
    before = load_bundle(bundle_dir, device="cpu").sha256
    _edit_manifest(bundle_dir, lambda data: data.update(decision_threshold=0.4))
    after = load_bundle(bundle_dir, device="cpu")
    assert len(before) == 64 and after.sha256 != before
    assert after.sha256 == bundle_sha256(read_manifest(bundle_dir))


def test_save_refuses_an_existing_folder_and_foreign_weights(tmp_path: Path, bundle_dir):
    with pytest.raises(FileExistsError):
        _save(bundle_dir)
    desc = description()
    with pytest.raises(BundleError, match=r"networks\[1\]: expected a radiomics-clinical network"):
        save_bundle(tmp_path / "other", desc, [describe_network(desc),
                                               build_network("radiomics-clinical", 107, 10, hidden=8)])
    assert not (tmp_path / "other").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no partial folder left


def test_description_checks_itself():
    with pytest.raises(ManifestError, match="training_data.synthetic: expected true or false"):
        TrainingData("synthetic phantoms", synthetic="yes")
    with pytest.raises(ManifestError, match="intended_use"):
        description(intended_use=" ")
    with pytest.raises(ManifestError, match="radiomics.names"):
        description(radiomics=replace(description().radiomics, names=("a", "a")))
