"""CT → what the CNN sees, as in the paper: Hounsfield units (the modality LUT, applied by
``load_volume``) → VOI LUT → histogram flattening → values in 0..1.
"""

from __future__ import annotations

import numpy as np

from cdss_node.pipeline.records import CnnInput, CTVolume, require

LUNG_WINDOW = (-600.0, 1500.0)  # (centre, width) when neither the bundle nor the header has one
HISTOGRAM_BINS = 1024


def voi_linear(hu: np.ndarray, centre: float, width: float) -> np.ndarray:
    """The DICOM linear VOI function (PS3.3 C.11.2.1.2.1) with output range 0..1."""
    require(width >= 1, "width", ">= 1", width)
    scaled = (hu - (centre - 0.5)) / max(width - 1.0, 1e-6) + 0.5
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def flatten_histogram(values: np.ndarray, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Histogram equalisation over the whole volume: each value → its cumulative share."""
    counts, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    cdf = np.cumsum(counts).astype(np.float64)
    cdf = (cdf - cdf[0]) / max(cdf[-1] - cdf[0], 1.0)
    centres = (edges[:-1] + edges[1:]) / 2
    return np.interp(values, centres, cdf).astype(np.float32)


def cnn_input(volume: CTVolume, window: tuple[float, float] | None = None) -> CnnInput:
    """``window`` from the model bundle wins; else the header's first window; else lung."""
    centre, width = window or volume.window or LUNG_WINDOW
    return CnnInput(image=flatten_histogram(voi_linear(volume.hu, centre, width)))
