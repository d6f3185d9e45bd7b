"""The class activation map of the image network (cdss_node.model.attention, HiResCAM): a
network whose logit reads one region of a feature map has its attention there and nowhere else; the map goes back
onto the CT voxel it came from; the inference models keep no hook and no gradient."""

import numpy as np
import pytest
import torch
from torch import nn

from cdss_node.model.attention import (
    FLOOR, TARGET_LAYER, ensemble_grad_cam, fold_grad_cam, inside_share, on_crop, on_ct)
from cdss_node.model.network import build_network
from cdss_node.pipeline.records import TumorCrop

torch.set_num_threads(min(2, torch.get_num_threads()))


class TwoRegionStage(nn.Module):
    """Two feature maps: the image inside region A, and the image inside region B."""

    def __init__(self, shape: tuple[int, int, int], a: tuple[slice, ...], b: tuple[slice, ...]):
        super().__init__()
        masks = torch.zeros(2, *shape)
        masks[(0, *a)] = 1.0
        masks[(1, *b)] = 1.0
        self.register_buffer("masks", masks[None])

    def forward(self, image):
        return image * self.masks


class RegionNetwork(nn.Module):
    """The logit reads the mean of map A (and a tabular term); map B is computed and ignored."""

    def __init__(self, shape, a, b, weight_b: float = 0.0):
        super().__init__()
        self.stage = TwoRegionStage(shape, a, b)
        self.weight_b = weight_b
        self.tabular = nn.Linear(3, 1)

    def forward(self, image, radiomics, clinical):
        maps = self.stage(image).mean(dim=(2, 3, 4))
        return (maps[:, 0] + self.weight_b * maps[:, 1]
                + self.tabular(torch.cat([radiomics, clinical], 1))[:, 0])


SHAPE = (8, 10, 6)
A = (slice(2, 5), slice(3, 7), slice(1, 4))
B = (slice(5, 8), slice(0, 3), slice(3, 6))


def test_grad_cam_lies_where_the_map_the_logit_reads_is():
    network = RegionNetwork(SHAPE, A, B).eval()
    image = torch.rand(1, 1, *SHAPE) + 0.1
    cam = fold_grad_cam(network, "stage", image, torch.rand(1, 2), torch.rand(1, 1))
    assert cam.shape == SHAPE and cam.max() == pytest.approx(1.0)
    inside = np.zeros(SHAPE, dtype=bool)
    inside[A] = True
    # Known answer: map A's gradient is 1 / its size everywhere, map B's is 0, so the map is
    # the image inside A, scaled to a maximum of 1, and 0 elsewhere (B included).
    expected = np.where(inside, image[0, 0].numpy(), 0.0)
    assert np.allclose(cam, expected / expected.max(), atol=1e-6)
    assert inside_share(cam, inside) == pytest.approx(1.0)


class WindowNetwork(nn.Module):
    """One map, the image everywhere; the logit reads it inside region A only."""

    def __init__(self):
        super().__init__()
        self.stage = nn.Identity()
        self.tabular = nn.Linear(3, 1)

    def forward(self, image, radiomics, clinical):
        maps = self.stage(image)
        return (maps[(slice(None), 0, *A)].mean(dim=(1, 2, 3))
                + self.tabular(torch.cat([radiomics, clinical], 1))[:, 0])


def test_the_map_lies_where_the_logit_reads_the_feature_map_not_where_it_is_active():
    image = torch.rand(1, 1, *SHAPE) + 0.1
    cam = fold_grad_cam(WindowNetwork().eval(), "stage", image, torch.rand(1, 2),
                        torch.rand(1, 1))
    inside = np.zeros(SHAPE, dtype=bool)
    inside[A] = True
    # HiResCAM: gradient x map voxel by voxel, so 0 outside A though the map is active there
    # (Grad-CAM's spatial mean of the gradient would light up the whole image)
    assert cam[~inside].max() == 0.0 and cam[inside].min() > 0.0
    expected = np.where(inside, image[0, 0].numpy(), 0.0)
    assert np.allclose(cam, expected / expected.max(), atol=1e-6)


def test_a_map_that_lowers_the_logit_is_rectified_away():
    network = RegionNetwork(SHAPE, A, B, weight_b=-1.0).eval()
    image = torch.ones(1, 1, *SHAPE)
    cam = fold_grad_cam(network, "stage", image, torch.rand(1, 2), torch.rand(1, 1))
    region_b = np.zeros(SHAPE, dtype=bool)
    region_b[B] = True
    assert cam[region_b].max() == 0.0 and cam[A].min() == pytest.approx(1.0)


def test_grad_cam_leaves_no_hook_and_no_parameter_gradient():
    network = build_network("resnet10-small", 4, 3).eval()
    stage = dict(network.named_modules())[TARGET_LAYER["resnet10-small"]]
    cam = ensemble_grad_cam([network, network], "resnet10-small",
                            np.random.default_rng(0).random((1, 24, 32, 32), dtype=np.float32),
                            np.full(4, 0.5, np.float32), np.full(3, 0.5, np.float32),
                            torch.device("cpu"))
    assert cam.shape == (24, 32, 32) and 0.0 <= cam.min() and cam.max() <= 1.0 + 1e-6
    assert not stage._forward_hooks
    assert all(p.grad is None for p in network.parameters())


def test_an_image_the_logit_ignores_gives_an_empty_map():
    network = RegionNetwork(SHAPE, A, B).eval()
    image = torch.zeros(1, 1, *SHAPE)                  # nothing in either map
    cam = fold_grad_cam(network, "stage", image, torch.rand(1, 2), torch.rand(1, 1))
    assert not cam.any() and inside_share(cam, np.ones(cam.shape, bool)) == 0.0


def test_the_map_goes_back_to_the_ct_voxel_it_came_from():
    attention = np.zeros((24, 32, 32), dtype=np.float32)
    attention[12, 16, 16] = 1.0                            # the centre of the network's input
    crop_map = on_crop(attention, "resnet10-small", (1, 64, 112, 112))
    assert crop_map.shape == (64, 112, 112) and crop_map[32, 56, 56] == 1.0
    crop = TumorCrop(image=np.zeros((1, 64, 112, 112), np.float32), centre_voxel=(40, 150, 120),
                     start_voxel=(40 - 32, 150 - 112, 120 - 112))
    ct = on_ct(crop_map, crop, (80, 256, 256))
    peak = np.unravel_index(np.argmax(ct), ct.shape)
    assert peak[0] == 40 and abs(peak[1] - 150) <= 1 and abs(peak[2] - 120) <= 1
    assert ct.max() <= 1.0 and not ct[ct > 0].min() < FLOOR


def test_a_crop_beyond_the_ct_is_cut_to_it():
    crop_map = np.ones((64, 112, 112), dtype=np.float32)
    crop = TumorCrop(image=np.zeros((1, 64, 112, 112), np.float32), centre_voxel=(2, 5, 5),
                     start_voxel=(2 - 32, 5 - 112, 5 - 112))
    ct = on_ct(crop_map, crop, (20, 60, 60))
    assert ct.shape == (20, 60, 60)
    assert ct[:34, :117, :117].all()                 # the crop's part inside the CT
    off = on_ct(crop_map, TumorCrop(image=crop.image, centre_voxel=(0, 0, 0),
                                    start_voxel=(100, 100, 100)), (20, 60, 60))
    assert not off.any()                             # a crop wholly outside: nothing


def test_every_image_architecture_names_a_stage_it_has():
    for architecture, layer in TARGET_LAYER.items():
        if architecture in ("efficientnet-b7", "densenet264"):
            continue                                 # slow to build; named in the slow test
        assert layer in dict(build_network(architecture, 4, 3).named_modules())


@pytest.mark.slow
def test_the_paper_networks_name_a_stage_they_have():
    for architecture in ("efficientnet-b7", "densenet264"):
        assert TARGET_LAYER[architecture] in dict(
            build_network(architecture, 4, 3).named_modules())


def test_an_explanation_that_fails_is_left_out_and_the_prediction_kept(monkeypatch):
    from cdss_node.pipeline import analyze

    def broken(*args):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(analyze, "explain_egfr", broken)
    found = {"radiomics": None, "clinical": None}
    assert analyze._attention(None, None, found, None) is None


def test_an_attention_map_checks_itself():
    from cdss_node.model.attention import AttentionMap

    AttentionMap(np.zeros((2, 3, 4), np.float32), "cnn.layer2", 0.0)
    with pytest.raises(ValueError, match="values"):
        AttentionMap(np.full((2, 3, 4), 1.5, np.float32), "cnn.layer2", 0.0)
    with pytest.raises(ValueError, match="inside_tumor_share"):
        AttentionMap(np.zeros((2, 3, 4), np.float32), "cnn.layer2", 1.2)
