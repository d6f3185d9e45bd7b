import numpy as np
import pytest

from cdss_node.pipeline.crop import tumor_crop
from cdss_node.pipeline.records import CnnInput, TumorMask
from tests.unit.test_pipeline_preprocess import volume as ct


def scene(shape, centre):
    image = np.zeros(shape, np.float32)
    mask = np.zeros(shape, bool)
    z, y, x = centre
    mask[z - 2:z + 3, y - 6:y + 7, x - 6:x + 7] = True
    image[mask] = 1.0
    return CnnInput(image=image), TumorMask(mask=mask, spacing_mm=(1, 1, 1), segmenter="t",
                                            candidates=1)


def test_crop_is_centred_on_the_tumor_and_half_size_in_plane():
    image, mask = scene((100, 300, 300), (50, 150, 140))
    crop = tumor_crop(image, mask)
    assert crop.image.shape == (1, 64, 112, 112)
    bright = np.argwhere(crop.image[0] > 0.5).mean(axis=0)
    np.testing.assert_allclose(bright, (32, 56, 56), atol=1.0)
    assert crop.start_voxel == (18, 38, 28)
    # the 13-pixel tumor becomes about 6.5 pixels wide
    width = np.count_nonzero(crop.image[0, 32, 56] > 0.5)
    assert 5 <= width <= 8


def test_crop_near_the_edge_is_padded_with_air():
    image, mask = scene((40, 128, 128), (5, 10, 120))  # few slices, tumor at a corner
    crop = tumor_crop(image, mask)
    assert crop.start_voxel == (5 - 32, 10 - 112, 120 - 112)
    assert crop.image[0, :10].max() == 0.0  # slices before the first CT slice
    assert crop.image.max() == 1.0


def test_no_tumor_no_crop():
    image, _ = scene((70, 64, 64), (30, 30, 30))
    empty = TumorMask(mask=np.zeros((70, 64, 64), bool), spacing_mm=(1, 1, 1), segmenter="t",
                      candidates=0)
    with pytest.raises(ValueError, match="tumor"):
        tumor_crop(image, empty)


# ---------------------------------------------------------------- the node's crop from the CT

def lung_like(shape, seed=0, whole=True):
    """Air, lung, soft tissue and bone in random proportions, whole HU or not."""
    rng = np.random.default_rng(seed)
    hu = rng.choice([-1000.0, -850.0, 40.0, 700.0], size=shape, p=[0.3, 0.4, 0.25, 0.05])
    hu = hu + rng.normal(0, 60, size=shape)
    return np.rint(hu) if whole else hu


@pytest.mark.parametrize("case", [
    "whole HU", "fractional HU (slope 0.5)", "beyond int16", "header window",
    "bundle window", "tumor at a corner", "one value everywhere", "crop inside the CT"])
def test_ct_crop_equals_the_crop_of_the_whole_cnn_input(case):
    """The node's crop (histogram counted per HU, only the crop flattened) is the crop of the
    whole flattened volume, to the bit, on every path through it."""
    from cdss_node.pipeline.crop import ct_tumor_crop
    from cdss_node.pipeline.preprocess import cnn_input

    shape, centre, window, bundle_window = (40, 150, 150), (20, 75, 70), None, None
    hu = lung_like(shape, whole=case != "fractional HU (slope 0.5)")
    if case == "fractional HU (slope 0.5)":
        hu = np.rint(hu * 2) / 2
    elif case == "beyond int16":
        hu[0, 0, 0] = 40000.0
    elif case == "header window":
        window = (40.0, 400.0)
    elif case == "bundle window":
        window, bundle_window = (40.0, 400.0), (-600.0, 1200.0)
    elif case == "tumor at a corner":
        centre = (3, 7, 142)
    elif case == "one value everywhere":
        hu[:] = -850.0
    elif case == "crop inside the CT":                 # no padding on any side
        shape, centre = (80, 260, 260), (40, 130, 128)
        hu = lung_like(shape)
    volume = ct(hu, window)           # test_pipeline_preprocess's CTVolume of 1 mm voxels
    _, tumor = scene(shape, centre)
    expected = tumor_crop(cnn_input(volume, bundle_window), tumor)
    found = ct_tumor_crop(volume, tumor, bundle_window)
    assert found.start_voxel == expected.start_voxel
    np.testing.assert_array_equal(found.image, expected.image)


def test_whole_hu_are_counted_per_value_and_anything_else_is_left_to_the_full_path():
    from cdss_node.pipeline.preprocess import INT16_OFFSET, _whole_hu_counts

    hu = np.array([[[-1024.0, 0.0], [0.0, 3071.0]]] * 20, dtype=np.float32)  # 20 > 1 slab
    counts = _whole_hu_counts(hu)
    assert counts.sum() == hu.size
    assert counts[2 * INT16_OFFSET - 1024] == 20 and counts[0] == 40 and counts[3071] == 20
    for spoiler in (0.5, 32768.0, -32769.0, np.nan):
        spoilt = hu.copy()
        spoilt[19, 1, 1] = spoiler                      # in the last slab only
        assert _whole_hu_counts(spoilt) is None
