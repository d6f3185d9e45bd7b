import numpy as np
import pytest
import torch

from cdss_node.model.network import (
    ARCHITECTURES,
    IMAGE_FEATURES,
    MultimodalNetwork,
    TabularNetwork,
    build_network,
    image_window,
    network_image,
    uses_image,
)

torch.set_num_threads(min(2, torch.get_num_threads()))
SMALL = (2, 1, 32, 32, 32)  # the smallest input EfficientNet-b7's 5x5x5 kernels accept


def _run(architecture: str, image_shape: tuple[int, ...] = SMALL) -> tuple[dict, torch.Tensor]:
    """One forward pass; returns the network's parts and shapes seen, and the logits."""
    torch.manual_seed(0)
    network = build_network(architecture, n_radiomics=107, n_clinical=10).eval()
    seen = {"network": network}
    if uses_image(architecture):
        network.cnn.register_forward_hook(lambda m, i, out: seen.update(cnn=out.shape))
    image = torch.rand(image_shape) if uses_image(architecture) else None
    with torch.inference_mode():
        logits = network(image, torch.rand(image_shape[0], 107), torch.rand(image_shape[0], 10))
    return seen, logits


def _check_multimodal(architecture: str, image_shape: tuple[int, ...] = SMALL) -> None:
    seen, logits = _run(architecture, image_shape)
    network = seen["network"]
    assert isinstance(network, MultimodalNetwork)
    assert seen["cnn"] == (image_shape[0], IMAGE_FEATURES)
    assert logits.shape == (image_shape[0],) and torch.isfinite(logits).all()
    assert network.head[0].in_features == 1024  # image 512 + tabular 512, concatenated
    assert isinstance(network.head[1], torch.nn.Tanh)


def test_resnet34_gives_512_image_features_and_one_logit():
    _check_multimodal("resnet34", (2, 1, 16, 16, 16))


@pytest.mark.slow
def test_efficientnet_b7_gives_512_image_features_and_one_logit():
    _check_multimodal("efficientnet-b7")


@pytest.mark.slow
def test_densenet264_gives_512_image_features_and_one_logit():
    _check_multimodal("densenet264", (2, 1, 32, 32, 32))


def test_tabular_branch_is_linear_batchnorm_dropout_and_needs_no_image():
    seen, logits = _run("radiomics-clinical")
    network = seen["network"]
    assert isinstance(network, TabularNetwork) and not uses_image("radiomics-clinical")
    linear, norm, dropout = network.tabular
    assert (linear.in_features, linear.out_features) == (117, 512)
    assert isinstance(norm, torch.nn.BatchNorm1d) and isinstance(dropout, torch.nn.Dropout)
    with torch.inference_mode():
        assert network(None, torch.rand(3, 107), torch.rand(3, 10)).shape == (3,)
    assert logits.shape == (2,)


def test_the_clinical_model_reads_the_clinical_facts_only():
    network = build_network("clinical", 107, 10).eval()
    assert network.tabular[0].in_features == 10 and not uses_image("clinical")
    clinical = torch.rand(3, 10)
    with torch.inference_mode():
        first = network(None, torch.rand(3, 107), clinical)
        assert torch.equal(first, network(None, torch.rand(3, 107), clinical))
        assert not torch.equal(first, network(None, torch.rand(3, 107), torch.rand(3, 10)))


def test_dropout_is_off_in_eval_mode():
    network = build_network("radiomics-clinical", 5, 10, dropout=0.9).eval()
    r, c = torch.rand(4, 5), torch.rand(4, 10)
    with torch.inference_mode():
        assert torch.equal(network(None, r, c), network(None, r, c))


def test_unknown_architecture_and_bad_sizes_are_refused():
    with pytest.raises(ValueError, match=r"architecture: expected one of .*'vgg16'"):
        build_network("vgg16", 107, 10)
    with pytest.raises(ValueError, match="n_radiomics"):
        build_network("radiomics-clinical", 0, 10)
    with pytest.raises(ValueError, match="dropout"):
        build_network("radiomics-clinical", 107, 10, dropout=1.0)
    assert set(ARCHITECTURES) == {"efficientnet-b7", "resnet34", "densenet264",
                                  "resnet10-small", "radiomics-clinical", "clinical"}


def test_resnet10_small_reads_the_centre_of_the_crop_and_gives_512_features():
    _check_multimodal("resnet10-small", (2, 1, 24, 32, 32))
    crop = np.zeros((1, 64, 112, 112), dtype=np.float32)
    crop[0, 32, 56, 56] = 1.0                       # the crop's centre voxel
    crop[0, 0, 0, 0] = crop[0, 63, 111, 111] = 2.0  # its corners, outside the window
    image = network_image("resnet10-small", crop)
    assert image.shape == (1, 24, 32, 32) and image.flags["C_CONTIGUOUS"]
    assert image.max() == 1.0 and image[0, 12, 16, 16] == 1.0   # centred, corners left out
    assert image_window("resnet10-small", crop.shape)[1:] == (slice(20, 44), slice(40, 72),
                                                              slice(40, 72))
    stack = network_image("resnet10-small", np.stack([crop, 3 * crop]))
    assert stack.shape == (2, 1, 24, 32, 32) and stack[1].max() == 3.0


def test_the_paper_networks_read_the_whole_crop():
    crop = np.random.default_rng(0).random((1, 64, 112, 112), dtype=np.float32)
    for architecture in ("efficientnet-b7", "resnet34", "densenet264"):
        assert np.array_equal(network_image(architecture, crop), crop)
