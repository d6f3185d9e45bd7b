"""The lung fields of a chest CT, and the morphology the segmenters share.

Lung fields: air (below ``LUNG_AIR_HU``) enclosed by the body, without the trachea and carina
(air that is small and central in each axial slice), split at the midline (the lungs touch at
the anterior junction line, which a coarse grid does not resolve), each lung closed with a ball
and hole-filled on its own, so that the heart between them is never inside. Worked out on a
grid of about ``WORK_SPACING_MM``. Openings, closings and dilations are distance transforms:
their time does not grow with the radius.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

LUNG_AIR_HU = -400.0
LUNG_CLOSING_MM = 30.0      # lesions against the pleura up to about twice this wide stay in
MIN_LUNG_ML = 50.0
AIRWAY_MARGIN_MM = 3.0      # the airway wall: this far around the trachea's air
AIRWAY_MAX_AREA_MM2 = 600.0
AIRWAY_MAX_OFFSET_MM = 30.0
AIRWAY_MIN_LENGTH_MM = 30.0
WORK_SPACING_MM = 3.0


def ellipsoid(radius_mm: float, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """A structuring element: the voxels within ``radius_mm`` of the centre."""
    half = [max(1, int(radius_mm // s)) for s in spacing_mm]
    axes = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    return sum((a * s / radius_mm) ** 2 for a, s in zip(axes, spacing_mm)) <= 1.0


def lung_fields(hu: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Air enclosed by the body without the trachea, each lung closed and hole-filled on its
    own (split at the body's midline), at full resolution."""
    step = [max(1, round(WORK_SPACING_MM / s)) for s in spacing_mm]
    coarse = hu[::step[0], ::step[1], ::step[2]]
    coarse_spacing = tuple(s * k for s, k in zip(spacing_mm, step))
    inside = enclosed_air(coarse < LUNG_AIR_HU)
    lungs = inside & ~within(airway(inside, coarse_spacing), AIRWAY_MARGIN_MM, coarse_spacing)
    closed = np.zeros_like(lungs)
    for half in _halves(lungs):
        for lung in _large_components(half, coarse_spacing):  # each lung alone: never the heart
            box = ndimage.find_objects(lung.astype(np.uint8))[0]
            closed[box] |= _closed_and_filled(lung[box], coarse_spacing)
    return upsample(closed, step, hu.shape)


def enclosed_air(air: np.ndarray) -> np.ndarray:
    """Air not connected to the edge of the axial field of view (outside the body)."""
    labels, _ = ndimage.label(air)
    outside = np.unique(np.concatenate([labels[:, [0, -1], :].ravel(),
                                        labels[:, :, [0, -1]].ravel()]))
    return air & ~np.isin(labels, outside)


def airway(air: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Trachea and carina: air that is small and central in each axial slice
    (AIRWAY_MAX_AREA_MM2, AIRWAY_MAX_OFFSET_MM from the midline), joined over at least
    AIRWAY_MIN_LENGTH_MM of slices."""
    midline = midline_column(air)
    if midline is None:
        return air.copy()
    central = np.zeros_like(air)
    for z in range(air.shape[0]):
        labels, count = ndimage.label(air[z])
        if count:
            index = np.arange(1, count + 1)
            area = ndimage.sum_labels(air[z], labels, index) * spacing_mm[1] * spacing_mm[2]
            x = np.array([c[1] for c in ndimage.center_of_mass(air[z], labels, index)])
            small = (area <= AIRWAY_MAX_AREA_MM2) & (
                np.abs(x - midline) * spacing_mm[2] <= AIRWAY_MAX_OFFSET_MM)
            central[z] = np.isin(labels, index[small])
    labels, _ = ndimage.label(central)
    tall = [k for k, box in enumerate(ndimage.find_objects(labels), start=1)
            if box and (box[0].stop - box[0].start) * spacing_mm[0] >= AIRWAY_MIN_LENGTH_MM]
    return np.isin(labels, tall)


def midline_column(mask: np.ndarray) -> float | None:
    """The column (x) halfway between the mask's leftmost and rightmost voxels; None if empty."""
    columns = np.flatnonzero(mask.any(axis=(0, 1)))
    return (columns[0] + columns[-1]) / 2 if len(columns) else None


def _halves(mask: np.ndarray) -> list[np.ndarray]:
    """The mask left and right of the midline of its columns (the lungs touch at the anterior
    junction line, which a coarse grid does not resolve)."""
    centre = midline_column(mask)
    if centre is None:
        return []
    midline = int(round(centre))
    left, right = mask.copy(), mask.copy()
    left[:, :, midline:] = False
    right[:, :, :midline] = False
    return [left, right]


def _closed_and_filled(lung: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    closed = closing(lung, LUNG_CLOSING_MM, spacing_mm) | lung
    return ndimage.binary_fill_holes(closed)  # in 3-D: the diaphragm dome is no hole


def _large_components(mask: np.ndarray, spacing_mm: tuple[float, float, float]
                      ) -> list[np.ndarray]:
    """Each connected air region of at least MIN_LUNG_ML (the lungs), one mask each."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return []
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    keep = np.flatnonzero(sizes * np.prod(spacing_mm) / 1000.0 >= MIN_LUNG_ML) + 1
    return [labels == label for label in keep]


def upsample(mask: np.ndarray, step: list[int], shape: tuple[int, ...]) -> np.ndarray:
    full = mask.repeat(step[0], 0).repeat(step[1], 1).repeat(step[2], 2)
    return full[: shape[0], : shape[1], : shape[2]]


def opening(mask: np.ndarray, radius_mm: float, spacing_mm: tuple[float, float, float]
            ) -> np.ndarray:
    """Binary opening with a ball of ``radius_mm`` (outside the array counts as background),
    through distance transforms: the same result as ``ellipsoid``, in time independent of
    the radius."""
    padded, inner = _padded(mask, radius_mm, spacing_mm)
    eroded = ndimage.distance_transform_edt(padded, sampling=spacing_mm) > radius_mm
    return within(eroded, radius_mm, spacing_mm)[inner]


def closing(mask: np.ndarray, radius_mm: float, spacing_mm: tuple[float, float, float]
            ) -> np.ndarray:
    """Binary closing with a ball of ``radius_mm``, through distance transforms."""
    padded, inner = _padded(mask, radius_mm, spacing_mm)
    dilated = within(padded, radius_mm, spacing_mm)
    return (ndimage.distance_transform_edt(dilated, sampling=spacing_mm) > radius_mm)[inner]


def _padded(mask: np.ndarray, radius_mm: float, spacing_mm: tuple[float, float, float]
            ) -> tuple[np.ndarray, tuple[slice, ...]]:
    """The mask padded by more than ``radius_mm``, and the slices that take the padding off."""
    pad = [int(np.ceil(radius_mm / s)) + 1 for s in spacing_mm]
    return np.pad(mask, [(p, p) for p in pad]), tuple(slice(p, -p) for p in pad)


def within(mask: np.ndarray, radius_mm: float, spacing_mm: tuple[float, float, float]
           ) -> np.ndarray:
    """Voxels at most ``radius_mm`` from a voxel of ``mask`` (a dilation with a ball)."""
    if not mask.any():
        return mask.copy()
    return ndimage.distance_transform_edt(~mask, sampling=spacing_mm) <= radius_mm


def bounding_box(mask: np.ndarray, margin: list[int] | None = None
                 ) -> tuple[slice, ...] | None:
    """The box around a mask's voxels, widened by ``margin`` voxels per axis; None if empty."""
    boxes = ndimage.find_objects(mask.astype(np.uint8))
    if not boxes:
        return None
    return widen(boxes[0], margin or [0] * mask.ndim, mask.shape)


def widen(box: tuple[slice, ...], margin: list[int], shape: tuple[int, ...]
          ) -> tuple[slice, ...]:
    """``box`` widened by ``margin`` voxels per axis, kept inside ``shape``."""
    return tuple(slice(max(b.start - m, 0), min(b.stop + m, n))
                 for b, m, n in zip(box, margin, shape))
