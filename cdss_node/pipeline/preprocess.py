"""CT → what the CNN sees, as in the paper: Hounsfield units (the modality LUT, applied by
``load_volume``) → VOI LUT → histogram flattening → values in 0..1.

The flattening's histogram is the whole volume's, but the CNN reads only the tumor crop: so the
node counts the histogram (``flattening_cdf``) and flattens only the voxels it crops
(``flatten_with``), which gives the values ``cnn_input`` gives for the whole volume. Where the HU
are whole numbers (a CT's stored integers under an integer rescale) the histogram is counted per
HU value, slab by slab, and each HU value's bin taken from the same float32 arithmetic.
"""

from __future__ import annotations

import numpy as np

from cdss_node.pipeline.records import CnnInput, CTVolume, require

LUNG_WINDOW = (-600.0, 1500.0)  # (centre, width) when neither the bundle nor the header has one
HISTOGRAM_BINS = 1024
SLAB_SLICES = 16          # slices per step of the histogram count (bounds its temporary memory)
INT16_OFFSET = 32768      # whole HU in -32768..32767 are counted as uint16


def voi_linear(hu: np.ndarray, centre: float, width: float) -> np.ndarray:
    """The DICOM linear VOI function (PS3.3 C.11.2.1.2.1) with output range 0..1, as
    ``((hu - (centre - 0.5)) / (width - 1) + 0.5)`` clipped, in float32 and in place."""
    require(width >= 1, "width", ">= 1", width)
    scale = 1.0 / max(width - 1.0, 1e-6)
    out = np.multiply(hu, np.float32(scale), dtype=np.float32)
    out += np.float32(0.5 - (centre - 0.5) * scale)
    return np.clip(out, 0.0, 1.0, out=out)


def flatten_histogram(values: np.ndarray, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Histogram equalisation over the whole volume: each value (in 0..1) → its cumulative
    share, interpolated linearly between the centres of ``bins`` equal bins."""
    return flatten_with(values, _cdf(_bin_counts(values, bins)))


def _bin_counts(values: np.ndarray, bins: int) -> np.ndarray:
    return np.bincount(_bin_index(values, bins).ravel(), minlength=bins)


def _bin_index(values: np.ndarray, bins: int) -> np.ndarray:
    position = np.multiply(values, np.float32(bins), dtype=np.float32)
    return np.minimum(position.astype(np.int32), bins - 1)


def _cdf(counts: np.ndarray) -> np.ndarray:
    """Cumulative share per bin, 0 at the first bin and 1 at the last."""
    cdf = np.cumsum(counts).astype(np.float64)
    return ((cdf - cdf[0]) / max(cdf[-1] - cdf[0], 1.0)).astype(np.float32)


def flattening_cdf(volume: CTVolume, window: tuple[float, float] | None = None) -> np.ndarray:
    """The cumulative histogram ``flatten_histogram`` builds from the whole windowed volume,
    without windowing the whole volume where its HU are whole numbers."""
    centre, width = cnn_window(volume, window)
    per_hu = _whole_hu_counts(volume.hu)
    if per_hu is None:
        return _cdf(_bin_counts(voi_linear(volume.hu, centre, width), HISTOGRAM_BINS))
    hu_values = np.arange(per_hu.size).astype(np.uint16).view(np.int16).astype(np.float32)
    index = _bin_index(voi_linear(hu_values, centre, width), HISTOGRAM_BINS)
    return _cdf(np.bincount(index, weights=per_hu, minlength=HISTOGRAM_BINS))


def _whole_hu_counts(hu: np.ndarray) -> np.ndarray | None:
    """Voxels per whole HU value (index: the HU's 16 bits read unsigned, so -1 → 65535), or
    None where some voxel is not a whole number in the int16 range."""
    counts = np.zeros(2 * INT16_OFFSET, dtype=np.int64)
    for start in range(0, hu.shape[0], SLAB_SLICES):
        slab = hu[start:start + SLAB_SLICES]
        if not (slab.min() >= -INT16_OFFSET and slab.max() < INT16_OFFSET):
            return None                               # out of range, or NaN
        whole = slab.astype(np.int16)
        if not np.array_equal(whole, slab):
            return None
        counts += np.bincount(whole.ravel().view(np.uint16), minlength=counts.size)
    return counts


def flatten_with(values: np.ndarray, cdf: np.ndarray) -> np.ndarray:
    """Each value (in 0..1) → its cumulative share by ``cdf``, interpolated linearly between
    the centres of the bins."""
    bins = cdf.size
    position = np.multiply(values, np.float32(bins), dtype=np.float32)
    index = np.empty(position.shape, dtype=np.int32)
    position -= np.float32(0.5)                       # in units of bins, from the 1st centre
    np.clip(position, 0, bins - 1, out=position)
    np.copyto(index, position, casting="unsafe")      # floor: position is >= 0
    position -= index                                  # the fraction towards the next centre
    rise = np.append(np.diff(cdf), np.float32(0))
    return cdf[index] + position * rise[index]


def cnn_input(volume: CTVolume, window: tuple[float, float] | None = None) -> CnnInput:
    """``window`` from the model bundle wins; else the header's first window; else lung."""
    centre, width = cnn_window(volume, window)
    return CnnInput(image=flatten_histogram(voi_linear(volume.hu, centre, width)))


def cnn_values(hu: np.ndarray, window: tuple[float, float], cdf: np.ndarray) -> np.ndarray:
    """Part ``hu`` of a CT as ``cnn_input`` gives it, from the VOI ``window`` (centre, width)
    and the whole CT's ``flattening_cdf``."""
    return flatten_with(voi_linear(hu, *window), cdf)


def cnn_window(volume: CTVolume, window: tuple[float, float] | None = None
               ) -> tuple[float, float]:
    """The VOI window of the CNN input: the bundle's, else the header's, else lung."""
    return window or volume.window or LUNG_WINDOW
