"""The lung fields of a chest CT, the working grids the segmenters share, and their morphology.

Everything is worked out in millimetres on fixed grids (``to_grid``): the CT is smoothed over
and resampled to ``WORK_SPACING_MM`` whatever its slice thickness and pixel spacing, so that no
step of the method changes with the series.

Lung fields: air (below ``LUNG_AIR_HU``) inside the body. Air that reaches the edge of the
axial field of view is outside the body only if it is as dark as air (median below
``OUTSIDE_AIR_HU``): in a targeted reconstruction the lung itself runs off the image, and its
parenchyma is brighter than air. Without the trachea and carina (air that is small and central
in each axial slice), split into the two lungs where they touch (at the junction lines, by the
nearest of their cores), each lung closed with a ball and hole-filled on its own, so that the
heart and mediastinum between them are never inside. Openings, closings and dilations are
distance transforms: their time does not grow with the radius. A large one is worked out in two
slabs at once (``distance_above``, ``distance_at_most``): only the voxels within the radius
decide each answer, so slabs that overlap by the radius give the whole array's answer exactly,
and scipy's transform lets go of the GIL, so the slabs run on two cores.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

LUNG_AIR_HU = -400.0
OUTSIDE_AIR_HU = -950.0     # air outside the body: median -975 to -1000 HU on the real CTs;
                            # lung parenchyma -796 to -870 (bench/segmentation.py's cases)
LUNG_CLOSING_MM = 30.0      # lesions against the pleura up to about twice this wide stay in
MIN_LUNG_ML = 50.0
AIRWAY_MARGIN_MM = 3.0      # the airway wall: this far around the trachea's air
AIRWAY_MAX_AREA_MM2 = 600.0
AIRWAY_MAX_OFFSET_MM = 30.0
AIRWAY_MIN_LENGTH_MM = 30.0
SPLIT_CORES_MM = (3.0, 6.0, 9.0, 12.0, 15.0)  # erosions tried to part lungs that touch
WORK_SPACING_MM = 3.0
CUT_AREA_MM2 = 1000.0       # lungs cut by the scan: this much of them on an edge (10 cm2)
SLAB_MIN_VOXELS = 2_000_000  # a distance transform this large is worked out in two slabs
Spacing = tuple[float, float, float]
_slab_pool: ThreadPoolExecutor | None = None
_slab_pool_lock = threading.Lock()
_slab_workers = min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                    else os.cpu_count() or 1)


def use_one_core() -> None:
    """Distance transforms in one thread (a process among several on the same cores)."""
    global _slab_workers
    _slab_workers = 1


def ellipsoid(radius_mm: float, spacing_mm: Spacing) -> np.ndarray:
    """A structuring element: the voxels within ``radius_mm`` of the centre."""
    half = [max(1, int(radius_mm // s)) for s in spacing_mm]
    axes = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    return sum((a * s / radius_mm) ** 2 for a, s in zip(axes, spacing_mm)) <= 1.0


def to_grid(hu: np.ndarray, spacing_mm: Spacing, grid_mm: float) -> tuple[np.ndarray, Spacing]:
    """The CT on an isotropic grid of ``grid_mm`` with the same first voxel: averaged first
    over whole voxels along axes that get coarser (as a thicker slice integrates; a box filter
    is fast), then interpolated linearly."""
    image = sitk.GetImageFromArray(np.asarray(hu, dtype=np.float32))
    image.SetSpacing(tuple(float(s) for s in spacing_mm[::-1]))
    factors = [max(1, int(grid_mm / s + 1e-6)) for s in spacing_mm[::-1]]
    if max(factors) > 1:
        image = _averaged(image, factors)
    size = [int(np.floor((n - 1) * s / grid_mm + 1e-6)) + 1
            for n, s in zip(image.GetSize(), image.GetSpacing())]
    grid = sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(),
                         (grid_mm,) * 3, image.GetDirection(), -1024.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(grid), (grid_mm,) * 3


def _averaged(image: sitk.Image, factors: list[int]) -> sitk.Image:
    """The mean of each block of ``factors`` voxels, placed at the block's centre (so that
    physical positions are kept); BinShrink drops a partial last block."""
    shrunk = sitk.BinShrink(image, factors)
    spacing = image.GetSpacing()
    shrunk.SetOrigin([o + (f - 1) * s / 2 for o, f, s in zip(image.GetOrigin(), factors, spacing)])
    return shrunk


def to_shape(mask: np.ndarray, from_mm: Spacing, to_mm: Spacing, shape: tuple[int, ...],
             box: tuple[slice, ...] | None = None) -> np.ndarray:
    """A mask on one grid taken to another with the same first voxel (nearest voxel);
    only the part ``box`` of the target grid when given."""
    box = box or tuple(slice(0, n) for n in shape)
    index = [np.clip(np.rint(np.arange(b.start, b.stop) * t / f).astype(int), 0, n - 1)
             for b, t, f, n in zip(box, to_mm, from_mm, mask.shape)]
    return mask[np.ix_(*index)]


@dataclass(frozen=True)
class LungFields:
    """The lung fields on a working grid, and how much of them the scan covers."""

    mask: np.ndarray
    spacing_mm: Spacing

    @property
    def volume_ml(self) -> float:
        return float(np.count_nonzero(self.mask) * np.prod(self.spacing_mm) / 1000.0)

    @property
    def cut_by_scan(self) -> bool:
        """The lungs run off the first or last slice or off the axial field of view: at least
        CUT_AREA_MM2 of them lies on one of the grid's faces (a scan that starts at the very
        apex only grazes it)."""
        sz, sy, sx = self.spacing_mm
        faces = [(self.mask[0], sy * sx), (self.mask[-1], sy * sx), (self.mask[:, 0], sz * sx),
                 (self.mask[:, -1], sz * sx), (self.mask[:, :, 0], sz * sy),
                 (self.mask[:, :, -1], sz * sy)]
        return any(np.count_nonzero(face) * area >= CUT_AREA_MM2 for face, area in faces)


def find_lungs(grid: np.ndarray, spacing_mm: Spacing) -> LungFields:
    """The lung fields of a CT on a working grid (``to_grid``)."""
    inside = body_air(grid)
    lungs = inside & ~within(airway(inside, spacing_mm), AIRWAY_MARGIN_MM, spacing_mm)
    closed = np.zeros_like(lungs)
    for lung in _each_lung(lungs, spacing_mm):  # each lung alone: never the heart
        box = ndimage.find_objects(lung.astype(np.uint8))[0]
        closed[box] |= _closed_and_filled(lung[box], spacing_mm)
    return LungFields(closed, spacing_mm)


def lung_fields(hu: np.ndarray, spacing_mm: Spacing) -> np.ndarray:
    """The lung fields of a CT at its own resolution."""
    grid, grid_mm = to_grid(hu, spacing_mm, WORK_SPACING_MM)
    return to_shape(find_lungs(grid, grid_mm).mask, grid_mm, spacing_mm, hu.shape)


def body_air(hu: np.ndarray) -> np.ndarray:
    """Air inside the body: air not connected to the axial edge of the image, and air that is
    connected to it but brighter than air outside the body (lung cut by a targeted field of
    view)."""
    air = hu < LUNG_AIR_HU
    labels, edge = _edge_components(air)
    if len(edge) == 0:
        return air
    outside = edge[np.asarray(ndimage.median(hu, labels, edge)) < OUTSIDE_AIR_HU]
    return air & ~np.isin(labels, outside)


def enclosed_air(air: np.ndarray) -> np.ndarray:
    """Air not connected to the edge of the axial field of view (outside the body)."""
    labels, edge = _edge_components(air)
    return air & ~np.isin(labels, edge)


def _edge_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mask's connected components, and the labels of those that reach the axial edge of
    the image."""
    labels, _ = ndimage.label(mask)
    edge = np.unique(np.concatenate([labels[:, [0, -1], :].ravel(),
                                     labels[:, :, [0, -1]].ravel()]))
    return labels, edge[edge > 0]


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


def _each_lung(mask: np.ndarray, spacing_mm: Spacing) -> list[np.ndarray]:
    """Each lung (connected air of at least MIN_LUNG_ML), one mask each; two lungs that touch
    (at the anterior or posterior junction line, which a coarse grid does not resolve) are
    parted by eroding them until two cores appear and giving every voxel to the nearest."""
    lungs = []
    for region in _large_components(mask, spacing_mm):
        lungs += _parted(region, spacing_mm)
    return lungs


def _parted(region: np.ndarray, spacing_mm: Spacing) -> list[np.ndarray]:
    depth = ndimage.distance_transform_edt(region, sampling=spacing_mm)
    for radius in SPLIT_CORES_MM:
        cores = _large_components(depth > radius, spacing_mm)
        if len(cores) >= 2:
            seeds = np.zeros(region.shape, np.int32)
            for number, core in enumerate(cores, start=1):
                seeds[core] = number
            nearest = ndimage.distance_transform_edt(
                seeds == 0, sampling=spacing_mm, return_distances=False, return_indices=True)
            owner = seeds[tuple(nearest)]
            return [region & (owner == number) for number in range(1, len(cores) + 1)]
        if len(cores) == 0:
            break
    return [region]


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


def opening(mask: np.ndarray, radius_mm: float, spacing_mm: tuple[float, float, float]
            ) -> np.ndarray:
    """Binary opening with a ball of ``radius_mm`` (outside the array counts as background),
    through distance transforms: the same result as ``ellipsoid``, in time independent of
    the radius; worked out in the mask's box."""
    box = bounding_box(mask)
    opened = np.zeros_like(mask)
    if box is not None:
        padded, inner = _padded(mask[box], radius_mm, spacing_mm)
        eroded = distance_above(padded, radius_mm, spacing_mm)
        opened[box] = within(eroded, radius_mm, spacing_mm)[inner]
    return opened


def closing(mask: np.ndarray, radius_mm: float, spacing_mm: tuple[float, float, float]
            ) -> np.ndarray:
    """Binary closing with a ball of ``radius_mm``, through distance transforms."""
    padded, inner = _padded(mask, radius_mm, spacing_mm)
    dilated = within(padded, radius_mm, spacing_mm)
    return distance_above(dilated, radius_mm, spacing_mm)[inner]


def _padded(mask: np.ndarray, radius_mm: float, spacing_mm: tuple[float, float, float]
            ) -> tuple[np.ndarray, tuple[slice, ...]]:
    """The mask padded by more than ``radius_mm``, and the slices that take the padding off."""
    pad = [int(np.ceil(radius_mm / s)) + 1 for s in spacing_mm]
    return np.pad(mask, [(p, p) for p in pad]), tuple(slice(p, -p) for p in pad)


def within(mask: np.ndarray, radius_mm: float, spacing_mm: tuple[float, float, float]
           ) -> np.ndarray:
    """Voxels at most ``radius_mm`` from a voxel of ``mask`` (a dilation with a ball), worked
    out in the box that can hold them (a sparse mask costs little)."""
    box = bounding_box(mask, [int(np.ceil(radius_mm / s)) + 1 for s in spacing_mm])
    grown = np.zeros_like(mask)
    if box is not None:
        grown[box] = distance_at_most(~mask[box], radius_mm, spacing_mm)
    return grown


def distance_above(mask: np.ndarray, radius_mm: float, spacing_mm: Spacing) -> np.ndarray:
    """``ndimage.distance_transform_edt(mask, sampling=spacing_mm) > radius_mm``."""
    return _thresholded(mask, radius_mm, spacing_mm, above=True)


def distance_at_most(mask: np.ndarray, radius_mm: float, spacing_mm: Spacing) -> np.ndarray:
    """``ndimage.distance_transform_edt(mask, sampling=spacing_mm) <= radius_mm``."""
    return _thresholded(mask, radius_mm, spacing_mm, above=False)


def _thresholded(mask: np.ndarray, radius_mm: float, spacing_mm: Spacing, above: bool
                 ) -> np.ndarray:
    """The distance transform compared with ``radius_mm``; in two slabs along the first axis
    that overlap by more than the radius, at once, where the array is large. A voxel's answer
    depends only on the background within ``radius_mm`` of it, which its slab holds: a nearer
    background voxel gives the same distance, and none leaves the distance above the radius
    (an all-foreground slab is all above)."""
    half, overlap = mask.shape[0] // 2, math.ceil(radius_mm / spacing_mm[0]) + 1
    if mask.size < SLAB_MIN_VOXELS or _slab_workers < 2 or half <= overlap or mask.all():
        return _compared(mask, radius_mm, spacing_mm, above)
    slabs = ((slice(0, half + overlap), slice(0, half)),
             (slice(half - overlap, None), slice(overlap, None)))
    out = np.empty(mask.shape, dtype=bool)
    jobs = [_pool().submit(_slab, mask[part], keep, radius_mm, spacing_mm, above)
            for part, keep in slabs]
    out[:half], out[half:] = (job.result() for job in jobs)
    return out


def _slab(mask: np.ndarray, keep: slice, radius_mm: float, spacing_mm: Spacing, above: bool
          ) -> np.ndarray:
    if mask.all():
        return np.full(mask[keep].shape, above)
    return _compared(mask, radius_mm, spacing_mm, above)[keep]


def _compared(mask: np.ndarray, radius_mm: float, spacing_mm: Spacing, above: bool
              ) -> np.ndarray:
    distance = ndimage.distance_transform_edt(mask, sampling=spacing_mm)
    return distance > radius_mm if above else distance <= radius_mm


def _pool() -> ThreadPoolExecutor:
    global _slab_pool
    with _slab_pool_lock:
        if _slab_pool is None:
            _slab_pool = ThreadPoolExecutor(2, thread_name_prefix="distance-slab")
        return _slab_pool


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
