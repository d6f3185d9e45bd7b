import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cdss_node.model.bundle import ModelBundle, describe_network, load_bundle, save_bundle
from cdss_node.model.device import choose_device, inference_precision
from cdss_node.model.ensemble import FoldEnsemble, choose_batching
from cdss_node.model.manifest import Manifest, RadiomicsScaling
from cdss_node.model.network import MultimodalNetwork
from cdss_node.model.predict import predict_egfr, scale_radiomics
from cdss_node.pipeline.records import EGFR_MUTANT, EGFR_WILD_TYPE, EgfrPrediction
from tests.unit.model_fixtures import (
    RADIOMICS_NAMES,
    clinical,
    crop,
    description,
    radiomics,
    randomise,
)

torch.set_num_threads(min(2, torch.get_num_threads()))
SHA = "ab" * 32


def _in_memory(networks, batching="loop", **changes) -> ModelBundle:
    return ModelBundle(Path("."), _manifest(len(networks), **changes), SHA,
                       torch.device("cpu"), FoldEnsemble(networks, batching))


def _manifest(folds: int, **changes) -> Manifest:
    from cdss_node.model.manifest import FoldFile

    return Manifest(description(**changes), tuple(FoldFile(f"fold_{k}.safetensors", SHA)
                                                  for k in range(1, folds + 1)))


def _tiny_cnn_networks(folds: int = 5) -> list[MultimodalNetwork]:
    """Multimodal networks with a small MONAI DenseNet as CNN: conv, BatchNorm3d, pooling."""
    from monai.networks.nets import DenseNet

    def cnn():
        return DenseNet(spatial_dims=3, in_channels=1, out_channels=512, init_features=4,
                        growth_rate=4, block_config=(2, 2))
    return [randomise(MultimodalNetwork(cnn(), 117, 16, 0.3), seed) for seed in range(folds)]


def _one_by_one(networks, image, r, c) -> list[float]:
    with torch.inference_mode():
        return [float(torch.sigmoid(net(image, r, c))[0]) for net in networks]


@pytest.mark.parametrize("batching", ["vmap", "loop"])
def test_batched_fivefold_inference_equals_the_mean_of_the_folds_one_by_one(batching):
    networks = _tiny_cnn_networks()
    bundle = _in_memory(networks, batching, architecture="resnet34")
    tumor, features, vector = crop(1), radiomics(1), clinical(1)
    prediction = predict_egfr(bundle, tumor, features, vector)
    scaled = torch.from_numpy(scale_radiomics(features, bundle.description.radiomics))[None]
    expected = _one_by_one(networks, torch.from_numpy(tumor.image)[None], scaled,
                           torch.from_numpy(vector.values)[None])
    assert len(set(expected)) == 5  # the folds really differ
    np.testing.assert_allclose(prediction.fold_probabilities, expected, rtol=0, atol=1e-6)
    assert prediction.probability == pytest.approx(np.mean(expected), abs=1e-6)


def test_vmap_and_loop_give_the_same_logits_for_a_batch():
    networks = _tiny_cnn_networks(3)
    image, r, c = torch.rand(2, 1, 16, 16, 16), torch.rand(2, 107), torch.rand(2, 10)
    with torch.inference_mode():
        vmap = FoldEnsemble(networks, "vmap").fold_logits(image, r, c)
        loop = FoldEnsemble(networks, "loop").fold_logits(image, r, c)
    assert vmap.shape == (3, 2)
    torch.testing.assert_close(vmap, loop, rtol=1e-5, atol=1e-5)


def test_vmap_rebuilds_each_fold_model_for_grad_cam_as_the_loop_keeps_it():
    networks = _tiny_cnn_networks(3)
    image, r, c = torch.rand(1, 1, 16, 16, 16), torch.rand(1, 107), torch.rand(1, 10)
    kept = FoldEnsemble(networks, "loop").fold_networks()
    rebuilt = FoldEnsemble(networks, "vmap").fold_networks()
    assert kept == tuple(networks) and len(rebuilt) == 3
    with torch.inference_mode():
        for a, b in zip(kept, rebuilt):
            torch.testing.assert_close(a(image, r, c), b(image, r, c), rtol=1e-6, atol=1e-6)
            assert b is not a and not b.training


def test_label_follows_the_threshold():
    networks = [randomise(describe_network(description()), seed) for seed in range(5)]
    probability = predict_egfr(_in_memory(networks), None, radiomics(), clinical()).probability
    for threshold, label in ((probability, EGFR_MUTANT), (probability + 1e-4, EGFR_WILD_TYPE),
                             (max(probability - 0.1, 0.01), EGFR_MUTANT)):
        bundle = _in_memory(networks, decision_threshold=threshold)
        prediction = predict_egfr(bundle, None, radiomics(), clinical())
        assert prediction.label == label and prediction.threshold == threshold


def test_prediction_record_checks_itself():
    ok = EgfrPrediction.from_folds((0.2, 0.4, 0.9), 0.5, "m", SHA)
    assert ok.probability == pytest.approx(0.5) and ok.label == EGFR_MUTANT
    with pytest.raises(ValueError, match="label: expected 'EGFR mutant'"):
        replace(ok, label=EGFR_WILD_TYPE)
    with pytest.raises(ValueError, match="probability: expected the mean"):
        replace(ok, probability=0.7, label=EGFR_MUTANT)
    with pytest.raises(ValueError, match="fold_probabilities"):
        EgfrPrediction.from_folds((0.2, 1.2), 0.5, "m", SHA)
    with pytest.raises(ValueError, match="fold_probabilities"):
        EgfrPrediction.from_folds((), 0.5, "m", SHA)
    with pytest.raises(ValueError, match="threshold"):
        EgfrPrediction.from_folds((0.2,), 1.0, "m", SHA)
    with pytest.raises(ValueError, match="model_sha256"):
        EgfrPrediction.from_folds((0.2,), 0.5, "m", "XYZ")


def test_radiomics_out_of_order_or_missing_are_refused():
    networks = [randomise(describe_network(description()), 0)]
    bundle = _in_memory(networks)
    swapped = (RADIOMICS_NAMES[1], RADIOMICS_NAMES[0], *RADIOMICS_NAMES[2:])
    with pytest.raises(ValueError, match=r"radiomics.names: expected "
                                         r"'original_firstorder_Feature000' at position 0"):
        predict_egfr(bundle, None, radiomics(names=swapped), clinical())
    with pytest.raises(ValueError, match=r"radiomics.names: expected 107 features"):
        predict_egfr(bundle, None, radiomics(names=RADIOMICS_NAMES[:-1]), clinical())


def test_image_network_needs_a_crop():
    bundle = _in_memory(_tiny_cnn_networks(1), architecture="densenet264")
    with pytest.raises(ValueError, match="crop: expected a TumorCrop"):
        predict_egfr(bundle, None, radiomics(), clinical())


def test_radiomics_scaling_is_min_max_clipped_to_the_unit_interval():
    scaling = RadiomicsScaling(("a", "b", "c", "d"), (0.0, -10.0, 5.0, 1.0),
                               (10.0, 10.0, 5.0, 2.0))
    features = radiomics(names=("a", "b", "c", "d"))
    features = replace(features, values=np.array([2.5, 30.0, 7.0, -4.0]))
    scaled = scale_radiomics(features, scaling)
    assert scaled.dtype == np.float32
    np.testing.assert_array_equal(scaled, [0.25, 1.0, 0.0, 0.0])


def test_device_choice():
    assert choose_device("cpu").type == "cpu"
    assert choose_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device: expected one of"):
        choose_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device: expected a CUDA GPU"):
            choose_device("cuda")
    with inference_precision(torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
    assert choose_batching("auto", torch.device("cpu")) == "loop"
    assert choose_batching("auto", torch.device("cuda")) == "vmap"


@pytest.mark.slow
def test_densenet264_bundle_round_trip_gives_identical_fold_logits(tmp_path: Path):
    desc = description("densenet264", hidden_features=8)
    networks = [randomise(describe_network(desc), seed) for seed in range(2)]
    save_bundle(tmp_path / "b", desc, networks)
    loaded = load_bundle(tmp_path / "b", device="cpu", batching="loop")
    image, r, c = torch.rand(1, 1, 32, 32, 32), torch.rand(1, 107), torch.rand(1, 10)
    with torch.inference_mode():
        assert torch.equal(loaded.ensemble.fold_logits(image, r, c),
                           FoldEnsemble(networks, "loop").fold_logits(image, r, c))


def test_model_package_imports_no_dicom_networking_and_no_training():
    code = ("import sys, cdss_node.model.predict, cdss_node.model.bundle; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('pynetdicom', 'highdicom', 'training', 'radiomics')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"
