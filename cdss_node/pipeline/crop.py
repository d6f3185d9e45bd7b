"""The tumor image of the paper: a 224 x 224 in-plane crop around the tumor, resized to
112 x 112, and 64 slices centred on it, as one 1 x 64 x 112 x 112 volume.

Crop sizes are in source pixels and slices, as in the paper. Where the crop reaches beyond the
CT, it is padded with 0 (air after histogram flattening).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cdss_node.pipeline.records import CnnInput, TumorCrop, TumorMask

CROP_PIXELS = 224
OUTPUT_PIXELS = 112
CROP_SLICES = 64


def tumor_crop(image: CnnInput, tumor: TumorMask) -> TumorCrop:
    if not tumor.found:
        raise ValueError("tumor: expected a found tumor, found an empty mask")
    centre = tumor.centre_voxel
    sizes = (CROP_SLICES, CROP_PIXELS, CROP_PIXELS)
    starts = tuple(c - s // 2 for c, s in zip(centre, sizes))
    block = _padded_block(image.image, starts, sizes)
    zoom = (1.0, OUTPUT_PIXELS / CROP_PIXELS, OUTPUT_PIXELS / CROP_PIXELS)
    small = ndimage.zoom(block, zoom, order=1, grid_mode=True, mode="nearest")
    return TumorCrop(image=np.clip(small, 0, 1).astype(np.float32)[np.newaxis],
                     centre_voxel=centre, start_voxel=starts)


def _padded_block(volume: np.ndarray, starts: tuple[int, ...], sizes: tuple[int, ...]
                  ) -> np.ndarray:
    """volume[start:start+size] along each axis, zero where it lies outside the volume."""
    block = np.zeros(sizes, dtype=np.float32)
    source, target = [], []
    for start, size, length in zip(starts, sizes, volume.shape):
        lo, hi = max(start, 0), min(start + size, length)
        source.append(slice(lo, hi))
        target.append(slice(lo - start, hi - start))
    block[tuple(target)] = volume[tuple(source)]
    return block
