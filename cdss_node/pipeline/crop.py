"""The tumor image of the paper: a 224 x 224 in-plane crop around the tumor, resized to
112 x 112, and 64 slices centred on it, as one 1 x 64 x 112 x 112 volume.

Crop sizes are in source pixels and slices, as in the paper. Where the crop reaches beyond the
CT, it is padded with 0 (air after histogram flattening).

``tumor_crop`` cuts it from the whole CNN input; ``ct_tumor_crop`` cuts the same crop from the CT
and flattens only the voxels it takes (see ``cdss_node.pipeline.preprocess``): the node's way.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cdss_node.pipeline.preprocess import cnn_values, cnn_window, flattening_cdf
from cdss_node.pipeline.records import CnnInput, CTVolume, TumorCrop, TumorMask

CROP_PIXELS = 224
OUTPUT_PIXELS = 112
CROP_SLICES = 64


def tumor_crop(image: CnnInput, tumor: TumorMask) -> TumorCrop:
    centre, starts, sizes = _placement(tumor)
    return _resized(_padded_block(image.image, starts, sizes), centre, starts)


def ct_tumor_crop(volume: CTVolume, tumor: TumorMask,
                  window: tuple[float, float] | None = None) -> TumorCrop:
    """``tumor_crop(cnn_input(volume, window), tumor)``, flattening only the crop's voxels."""
    centre, starts, sizes = _placement(tumor)
    source, target = _overlap(starts, sizes, volume.shape)
    block = np.zeros(sizes, dtype=np.float32)
    block[target] = cnn_values(volume.hu[source], cnn_window(volume, window),
                               flattening_cdf(volume, window))
    return _resized(block, centre, starts)


def _placement(tumor: TumorMask) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """The tumor's centre voxel, and the first voxel and size of the crop around it."""
    if not tumor.found:
        raise ValueError("tumor: expected a found tumor, found an empty mask")
    centre = tumor.centre_voxel
    sizes = (CROP_SLICES, CROP_PIXELS, CROP_PIXELS)
    return centre, tuple(c - s // 2 for c, s in zip(centre, sizes)), sizes


def _resized(block: np.ndarray, centre: tuple[int, ...], starts: tuple[int, ...]
             ) -> TumorCrop:
    zoom = (1.0, OUTPUT_PIXELS / CROP_PIXELS, OUTPUT_PIXELS / CROP_PIXELS)
    small = ndimage.zoom(block, zoom, order=1, grid_mode=True, mode="nearest")
    return TumorCrop(image=np.clip(small, 0, 1).astype(np.float32)[np.newaxis],
                     centre_voxel=centre, start_voxel=starts)


def _padded_block(volume: np.ndarray, starts: tuple[int, ...], sizes: tuple[int, ...]
                  ) -> np.ndarray:
    """volume[start:start+size] along each axis, zero where it lies outside the volume."""
    block = np.zeros(sizes, dtype=np.float32)
    source, target = _overlap(starts, sizes, volume.shape)
    block[target] = volume[source]
    return block


def _overlap(starts: tuple[int, ...], sizes: tuple[int, ...], shape: tuple[int, ...]
             ) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Where the block meets the volume: its part in the volume's and in the block's indices."""
    source, target = [], []
    for start, size, length in zip(starts, sizes, shape):
        lo, hi = max(start, 0), min(start + size, length)
        source.append(slice(lo, hi))
        target.append(slice(lo - start, hi - start))
    return tuple(source), tuple(target)
