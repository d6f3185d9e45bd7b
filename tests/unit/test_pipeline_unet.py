"""LungTumorMask's U-Net: published weight layout, loading, preprocessing, and segment()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import DivisiblePad, Spacing

from cdss_node.pipeline.records import CTVolume, HeaderFacts, TumorMask
from cdss_node.pipeline.unet_segment import (
    LungTumorMaskSegmenter,
    build_unet,
    close_axial,
    divisible_padding,
    largest_component,
    lesion_components,
    lung_boxes,
    normalise,
    published_state_dict_keys,
    resample,
    resampled_shape,
    resize,
    unet_state_dict_keys,
    zscore_parameters,
)

torch.set_num_threads(2)

SPACING = (3.0, 2.0, 2.0)  # z, y, x mm
RIGHT_LUNG = (slice(6, 34), slice(16, 48), slice(10, 28))
LEFT_LUNG = (slice(6, 34), slice(16, 48), slice(36, 54))
TUMOR_CENTRE, TUMOR_RADIUS_MM = (20, 30, 19), 9.0


def chest(tumor: bool = True) -> tuple[CTVolume, np.ndarray]:
    """40 x 64 x 64 voxels: air, a soft-tissue body, two box lungs, a sphere in the right."""
    hu = np.full((40, 64, 64), -1000.0, dtype=np.float32)
    hu[:, 6:58, 4:60] = 40.0
    truth = np.zeros(hu.shape, dtype=bool)
    for lung in (RIGHT_LUNG, LEFT_LUNG):
        hu[lung] = -850.0
    if tumor:
        axes = np.ogrid[:40, :64, :64]
        truth = sum(((a - c) * s) ** 2 for a, c, s in zip(axes, TUMOR_CENTRE, SPACING)) \
            <= TUMOR_RADIUS_MM ** 2
        hu[truth] = 30.0
    hu += np.random.default_rng(0).normal(0, 5, hu.shape).astype(np.float32)
    volume = CTVolume(hu=hu, spacing_mm=SPACING, origin_mm=(0.0, 0.0, 0.0),
                      direction=((1, 0, 0), (0, 1, 0), (0, 0, 1)),
                      source_instance_uids=tuple(f"1.2.3.{i}" for i in range(40)),
                      source_frame_numbers=(0,) * 40, study_uid="1.2.3", series_uid="1.2.4",
                      window=None, header=HeaderFacts())
    return volume, truth


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def published_file(tmp_path_factory) -> Path:
    """Random weights saved as LungTumorMask's dc_student.pth is laid out (model2 differs)."""
    state = {}
    for seed, decoder in enumerate(("model1", "model2")):
        torch.manual_seed(seed)
        state |= {f"{decoder}.{key.removeprefix('model.')}": value
                  for key, value in build_unet().state_dict().items()}
    path = tmp_path_factory.mktemp("weights") / "dc_student.pth"
    torch.save(state, path)
    return path


# (a) the network and the published key layout -------------------------------------------------

def test_unet_has_lungtumormask_keys_shapes_and_parameter_count():
    keys = unet_state_dict_keys()
    assert len(keys) == 26  # 9 convolutions x (weight, bias) + 8 PReLUs; instance norm: none
    assert keys["model.0.conv.weight"] == (64, 1, 3, 3, 3)       # 1 -> 64, stride 2
    assert keys["model.0.adn.A.weight"] == (1,)                   # PReLU, one slope
    bottom = "model.1.submodule.1.submodule.1.submodule.1.submodule"
    assert keys[f"{bottom}.conv.weight"] == (1024, 512, 3, 3, 3)  # bottom, stride 1
    assert keys["model.1.submodule.1.submodule.1.submodule.2.conv.weight"] == \
        (1536, 256, 3, 3, 3)                                     # up: 512 + 1024 -> 256
    assert keys["model.2.conv.weight"] == (128, 1, 3, 3, 3)       # last transposed conv
    assert "model.2.adn.A.weight" not in keys                     # conv only at the top
    # down 18 804 357 + up 12 832 580, counted by hand from the channel list
    assert sum(p.numel() for p in build_unet().parameters()) == 31_636_937


def test_published_layout_is_two_decoders_over_the_unet_keys():
    published = published_state_dict_keys()
    assert len(published) == 52
    assert published["model1.0.conv.weight"] == (64, 1, 3, 3, 3)
    assert published["model2.2.conv.weight"] == (128, 1, 3, 3, 3)
    assert "model.0.conv.weight" not in published


def test_a_block_shared_by_two_paths_is_saved_under_both_prefixes():
    """Why dc_student.pth holds the shared encoder under model1.* and model2.*."""
    shared = torch.nn.Linear(2, 2)
    parent = torch.nn.Module()
    parent.model1 = torch.nn.Sequential(shared, torch.nn.Linear(2, 1))
    parent.model2 = torch.nn.Sequential(shared, torch.nn.Linear(2, 1))
    assert {"model1.0.weight", "model2.0.weight"} <= set(parent.state_dict())


# (b) a file in the published layout loads and segment() runs -----------------------------------

def test_published_file_loads_and_segments_a_small_ct(published_file):
    volume, _ = chest()
    # each lung crop is 64 x 64 x 48 voxels (z, y, x) once padded: two windows per lung
    segmenter = LungTumorMaskSegmenter(published_file, device="cpu", roi_size=(32, 64, 48),
                                       overlap=0.0)
    expected = torch.load(published_file, weights_only=True)["model1.2.conv.weight"]
    assert torch.equal(segmenter.network.state_dict()["model.2.conv.weight"], expected)
    result = segmenter.segment(volume)
    assert isinstance(result, TumorMask)
    assert result.mask.shape == volume.hu.shape and result.spacing_mm == SPACING
    assert result.segmenter.startswith("LungTumorMask 3D U-Net weights sha256:")
    inside = np.zeros(volume.hu.shape, dtype=bool)
    for box in (RIGHT_LUNG, LEFT_LUNG):
        inside[box] = True
    assert not (result.mask & ~inside).any()  # only lung crops are segmented


class ThresholdNetwork(torch.nn.Module):
    """Stands in for trained weights: tumor logit wherever the z-scored CT is above ``level``."""

    def __init__(self, level: float):
        super().__init__()
        self.level = level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > self.level, 10.0, -10.0)


@pytest.mark.parametrize("roi_size", [None, (32, 32, 32)])
def test_tumor_comes_back_on_the_ct_grid(published_file, roi_size):
    volume, truth = chest()
    segmenter = LungTumorMaskSegmenter(published_file, device="cpu", roi_size=roi_size)
    mean, std = zscore_parameters(volume.hu)
    segmenter.network = ThresholdNetwork(float(normalise(np.float32(-300.0), mean, std)))
    result = segmenter.segment(volume)
    assert result.found and result.candidates == 1
    assert dice(result.mask, truth) >= 0.85
    assert np.abs(np.array(result.centre_voxel) - TUMOR_CENTRE).max() <= 1


def test_no_tumor_found_in_clear_lungs(published_file):
    volume, _ = chest(tumor=False)
    segmenter = LungTumorMaskSegmenter(published_file, device="cpu")
    mean, std = zscore_parameters(volume.hu)
    segmenter.network = ThresholdNetwork(float(normalise(np.float32(-300.0), mean, std)))
    result = segmenter.segment(volume)
    assert not result.found and result.candidates == 0


# (c) files that are not LungTumorMask weights are refused ----------------------------------------

def test_wrong_keys_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({f"module.{k}": v for k, v in build_unet().state_dict().items()}, path)
    with pytest.raises(ValueError, match=r"other\.pth: keys do not match .* 26 missing"):
        LungTumorMaskSegmenter(path, device="cpu")


def test_wrong_shape_is_refused_naming_the_key(tmp_path, published_file):
    state = torch.load(published_file, weights_only=True)
    state["model2.0.conv.weight"] = torch.zeros(32, 1, 3, 3, 3)
    path = tmp_path / "narrow.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"narrow\.pth: model2\.0\.conv\.weight: expected shape "
                                         r"\(64, 1, 3, 3, 3\), found \(32, 1, 3, 3, 3\)"):
        LungTumorMaskSegmenter(path, device="cpu")


def test_a_plain_monai_unet_state_dict_is_accepted(tmp_path):
    path = tmp_path / "unet.pth"
    torch.save(build_unet().state_dict(), path)
    assert LungTumorMaskSegmenter(path, device="cpu").network is not None


def test_missing_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file not found: .*absent.pth"):
        LungTumorMaskSegmenter(tmp_path / "absent.pth")
    text = tmp_path / "notes.pth"
    text.write_text("not weights")
    with pytest.raises(ValueError, match=r"notes\.pth: not a PyTorch weights file"):
        LungTumorMaskSegmenter(text)


def test_roi_size_must_be_multiples_of_16(published_file):
    with pytest.raises(ValueError, match="roi_size"):
        LungTumorMaskSegmenter(published_file, roi_size=(40, 32, 32))


# (d) preprocessing and the way back ----------------------------------------------------------------

def test_hu_clip_and_zscore_over_the_whole_ct():
    hu = np.array([-2000.0, -1024.0, 0.0, 1000.0, 3000.0], dtype=np.float32)
    mean, std = zscore_parameters(hu)  # clipped: -1024, -1024, 0, 1000, 1000
    assert mean == pytest.approx(-9.6)
    assert std == pytest.approx(np.sqrt(819338.24))  # population standard deviation
    expected = (np.array([-1024, -1024, 0, 1000, 1000]) + 9.6) / np.sqrt(819338.24)
    np.testing.assert_allclose(normalise(hu, mean, std), expected, rtol=1e-6)
    assert zscore_parameters(np.full(4, 50.0)) == (50.0, 1.0)  # a flat image is not divided by 0


def test_resampling_to_1_1_1p5_mm_and_back_keeps_the_shape():
    image = np.random.default_rng(1).normal(size=(20, 30, 25)).astype(np.float32)
    spacing = (2.5, 0.7, 0.7)  # z, y, x
    network_grid = resample(image, spacing)
    assert network_grid.shape == (33, 21, 18) == resampled_shape(image.shape, spacing,
                                                                (1.5, 1.0, 1.0))
    assert resize(torch.from_numpy(network_grid), image.shape).shape == image.shape


def test_resampling_equals_monai_spacing_on_the_nifti_axes():
    image = np.random.default_rng(2).normal(size=(17, 23, 29)).astype(np.float32)  # x, y, z
    spacing = (0.8, 0.8, 2.0)
    affine = torch.diag(torch.tensor([*spacing, 1.0], dtype=torch.float64))
    theirs = Spacing(pixdim=(1, 1, 1.5), mode="bilinear", padding_mode="border")(
        MetaTensor(torch.from_numpy(image)[None], affine=affine))[0].numpy()
    np.testing.assert_allclose(resample(image, spacing, (1.0, 1.0, 1.5)), theirs, atol=1e-5)


def test_padding_to_16_is_placed_as_monai_divisible_pad():
    shape = (35, 63, 55)
    padding = divisible_padding(shape)
    assert padding == [(6, 7), (0, 1), (4, 5)]
    padded = DivisiblePad(k=16, mode="constant")(torch.ones((1, *shape)))[0].numpy()
    inner = tuple(slice(b, n - a) for (b, a), n in zip(padding, padded.shape))
    assert padded[inner].all() and padded.sum() == np.prod(shape)


def test_axial_closing_fills_a_hole_in_a_slice_but_not_between_slices():
    mask = np.zeros((3, 9, 9), dtype=bool)
    mask[1, 3:6, 2:7] = True
    mask[1, 4, 4] = False     # a one-voxel hole in the slice: closed
    mask[0, 0, 0:3] = True    # at the image border: kept, not eroded
    closed = close_axial(mask)
    assert closed[1, 4, 4] and closed[0, 0, 0:3].all()
    assert np.count_nonzero(closed) == np.count_nonzero(mask) + 1  # nothing else, no slice 2


def test_largest_component_is_the_primary():
    mask = np.zeros((5, 10, 10), dtype=bool)
    mask[1:3, 1:3, 1:3] = True
    mask[1:4, 5:9, 5:9] = True
    primary, count = largest_component(mask)
    assert count == 2 and primary[2, 6, 6] and not primary[1, 1, 1]


def test_the_lung_filter_drops_specks_and_what_lies_outside_the_lungs():
    fields = np.zeros((20, 40, 40), dtype=bool)
    fields[:, :, :20] = True                          # the lungs: the left half
    found = np.zeros_like(fields)
    found[2:7, 2:7, 2:7] = True                       # 5 mm cube in the lungs: a lesion
    found[10, 30, 30] = True                          # 1 voxel: a speck
    found[2:7, 30:35, 30:35] = True                   # 5 mm cube outside the lungs
    found[10:15, 20:25, 18:23] = True                 # 3 of 5 columns outside: dropped
    found[14:19, 10:15, 17:22] = True                 # 3 of 5 columns inside: kept whole
    kept = lesion_components(found, fields, (1.0, 1.0, 1.0))
    assert kept[2:7, 2:7, 2:7].all() and kept[14:19, 10:15, 17:22].all()
    assert np.count_nonzero(kept) == 2 * 125


def test_each_lung_is_cropped_on_its_own():
    volume, _ = chest()
    boxes = sorted(lung_boxes(volume.hu, volume.spacing_mm), key=lambda b: b[2].start)
    assert boxes == [RIGHT_LUNG, LEFT_LUNG]
