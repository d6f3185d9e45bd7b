"""CT → what the CNN sees, as in the paper: Hounsfield units (the modality LUT, applied by
``load_volume``) → VOI LUT → histogram flattening → values in 0..1.
"""

from __future__ import annotations

import numpy as np

from cdss_node.pipeline.records import CnnInput, CTVolume, require

LUNG_WINDOW = (-600.0, 1500.0)  # (centre, width) when neither the bundle nor the header has one
HISTOGRAM_BINS = 1024


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
    position = np.multiply(values, np.float32(bins), dtype=np.float32)
    index = np.minimum(position.astype(np.int32), bins - 1)
    cdf = np.cumsum(np.bincount(index.ravel(), minlength=bins)).astype(np.float64)
    cdf = ((cdf - cdf[0]) / max(cdf[-1] - cdf[0], 1.0)).astype(np.float32)
    position -= np.float32(0.5)                       # in units of bins, from the 1st centre
    np.clip(position, 0, bins - 1, out=position)
    np.copyto(index, position, casting="unsafe")      # floor: position is >= 0
    position -= index                                  # the fraction towards the next centre
    rise = np.append(np.diff(cdf), np.float32(0))
    return cdf[index] + position * rise[index]


def cnn_input(volume: CTVolume, window: tuple[float, float] | None = None) -> CnnInput:
    """``window`` from the model bundle wins; else the header's first window; else lung."""
    centre, width = window or volume.window or LUNG_WINDOW
    return CnnInput(image=flatten_histogram(voi_linear(volume.hu, centre, width)))
