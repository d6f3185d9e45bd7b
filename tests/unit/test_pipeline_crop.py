import numpy as np
import pytest

from cdss_node.pipeline.crop import tumor_crop
from cdss_node.pipeline.records import CnnInput, TumorMask


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
