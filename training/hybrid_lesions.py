"""Hybrid cases: real lungs (``training.real_ct``) with inserted lesions of known mask.

A lesion is an occupancy field in 0..1 drawn on the host's own grid with partial volume (each
voxel is sampled at several depths along z, so a 5 mm slice blurs a lesion as a scanner does).
Its voxels take ``host * (1 - a) + lesion_hu * a`` plus smoothed noise; ground glass keeps the
vessels that run through it. The truth mask is ``a >= 0.5``.

Kinds: solid, part-solid (ground-glass rim, solid core of half the diameter), ground-glass,
spiculated (a solid core with 8 to 12 tapering spicules), lobulated (four overlapping balls),
juxta-pleural (touching the chest wall), juxta-mediastinal (touching the mediastinum) and
vessel-touching (beside a vessel inside the lung). The first five are placed wholly inside the
lung, at least 3 mm from its edge. Placement and shape come from a seed: a case is the same
every time it is made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from cdss_node.pipeline.lungs import (
    AIRWAY_MARGIN_MM, LUNG_AIR_HU, airway, enclosed_air, midline_column, within)
from training.real_ct import arrays

KINDS = ("solid", "part-solid", "ground-glass", "spiculated", "lobulated", "juxta-pleural",
         "juxta-mediastinal", "vessel-touching")
SOLID_HU, GROUND_GLASS_HU = 30.0, -560.0
NOISE_HU = 25.0
Z_SAMPLES_PER_MM = 1.0


@dataclass(frozen=True)
class Host:
    """A real CT on the grid the lesions are drawn on (z, y, x; HU)."""

    hu: np.ndarray
    spacing_mm: tuple[float, float, float]
    lungs: np.ndarray            # the lungs with their vessels (``lung_mask``)
    air: np.ndarray              # lung parenchyma (air inside the lung fields)
    depth: np.ndarray            # mm from each lung voxel to the nearest voxel outside


@dataclass(frozen=True)
class Lesion:
    kind: str
    diameter_mm: float
    centre_voxel: tuple[int, int, int]
    mask: np.ndarray             # bool, on the host's grid


def host_from_image(image: sitk.Image, slice_mm: float | None = None) -> Host:
    """The CT resampled to ``slice_mm`` along z (in-plane kept; thick slices are averaged)."""
    if slice_mm is not None:
        image = _resample_z(image, slice_mm)
    hu, spacing = arrays(image)
    lungs = lung_mask(hu, spacing)
    return Host(hu, spacing, lungs, lungs & (hu < -500),
                ndimage.distance_transform_edt(lungs, sampling=spacing))


def lung_mask(hu: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Where lesions may go: air enclosed by the body without the trachea, each axial slice's
    holes (vessels, bronchi) filled. Independent of the segmenters' own lung fields, so that
    tuning a segmenter does not move the lesions it is measured on."""
    air = enclosed_air(hu < LUNG_AIR_HU)
    air &= ~within(airway(air, spacing_mm), AIRWAY_MARGIN_MM, spacing_mm)
    return np.stack([ndimage.binary_fill_holes(plane) for plane in air])


def _resample_z(image: sitk.Image, slice_mm: float) -> sitk.Image:
    sx, sy, sz = image.GetSpacing()
    if slice_mm > sz:  # a thick slice integrates over its thickness
        image = sitk.SmoothingRecursiveGaussian(image, [1e-3, 1e-3, slice_mm / 2.355])
    size = list(image.GetSize())
    size[2] = int(round((size[2] - 1) * sz / slice_mm)) + 1
    return sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(),
                         (sx, sy, slice_mm), image.GetDirection(), -1024.0, sitk.sitkFloat32)


def insert(host: Host, kind: str, diameter_mm: float, seed: int) -> tuple[np.ndarray, Lesion]:
    """The host's HU with one lesion inserted, and the lesion."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, found {kind!r}")
    rng = np.random.default_rng(seed)
    centre = _place(host, kind, diameter_mm / 2, rng)
    occupancy, box = _occupancy(host, kind, diameter_mm / 2, centre, rng)
    hu = host.hu.copy()
    local = hu[box]
    lesion_hu = _lesion_hu(kind, occupancy, diameter_mm / 2, centre, box, host.spacing_mm)
    noise = ndimage.gaussian_filter(rng.normal(0, NOISE_HU * 2, occupancy.shape), 1.0)
    blended = local * (1 - occupancy) + (lesion_hu + noise) * occupancy
    hu[box] = np.maximum(local, blended) if kind == "ground-glass" else blended
    mask = np.zeros(hu.shape, dtype=bool)
    mask[box] = occupancy >= 0.5
    if kind not in ("juxta-pleural", "juxta-mediastinal"):
        mask &= host.lungs
    return hu.astype(np.float32), Lesion(kind, diameter_mm, centre, mask)


def _lesion_hu(kind: str, occupancy: np.ndarray, radius: float, centre, box, spacing
               ) -> np.ndarray:
    if kind == "ground-glass":
        return np.full(occupancy.shape, GROUND_GLASS_HU)
    if kind != "part-solid":
        return np.full(occupancy.shape, SOLID_HU)
    distance = np.linalg.norm(_points_mm(centre, box, spacing), axis=-1)
    core = np.clip(0.5 - (distance - radius / 2) / 1.0, 0, 1)
    return GROUND_GLASS_HU * (1 - core) + SOLID_HU * core


def _place(host: Host, kind: str, radius: float, rng: np.random.Generator
           ) -> tuple[int, int, int]:
    depth = host.depth
    if kind in ("juxta-pleural", "juxta-mediastinal"):
        allowed = (np.abs(depth - radius * 0.85) < 1.5) & _side(host, kind)
    elif kind == "vessel-touching":
        allowed = _beside_vessel(host, depth, radius)
    else:
        allowed = (depth >= radius + 3.0) & host.air
    options = np.argwhere(allowed)
    if len(options) == 0:
        raise ValueError(f"no room for a {2 * radius:.0f} mm {kind} lesion in this CT")
    return tuple(int(v) for v in options[rng.integers(len(options))])


def _side(host: Host, kind: str) -> np.ndarray:
    """Lung voxels whose nearest non-lung voxel lies towards the midline (mediastinal) or away
    from it (pleural)."""
    _, nearest = ndimage.distance_transform_edt(host.lungs, sampling=host.spacing_mm,
                                                return_indices=True)
    x = np.arange(host.lungs.shape[2])[None, None, :]
    midline = midline_column(host.lungs)
    towards_midline = np.abs(nearest[2] - midline) < np.abs(x - midline) - 1
    return host.air & (towards_midline if kind == "juxta-mediastinal" else ~towards_midline)


def _beside_vessel(host: Host, depth: np.ndarray, radius: float) -> np.ndarray:
    vessels = host.lungs & (host.hu > -100) & (depth > 5.0)
    near = ndimage.distance_transform_edt(~vessels, sampling=host.spacing_mm)
    return host.air & (np.abs(near - radius) < 2.0) & (depth >= radius + 1.0)


def _occupancy(host: Host, kind: str, radius: float, centre, rng: np.random.Generator):
    half = [int(np.ceil(radius * 2.0 / s)) + 2 for s in host.spacing_mm]
    box = tuple(slice(max(c - h, 0), min(c + h + 1, n))
                for c, h, n in zip(centre, half, host.hu.shape))
    samples = max(1, int(round(host.spacing_mm[0] * Z_SAMPLES_PER_MM)))
    offsets = (np.arange(samples) + 0.5) / samples - 0.5
    shape = _shape_function(kind, radius, rng)
    occupancy = np.zeros(tuple(b.stop - b.start for b in box), dtype=np.float32)
    for dz in offsets:
        points = _points_mm(centre, box, host.spacing_mm, dz)
        occupancy += shape(points) / samples
    return occupancy, box


def _points_mm(centre, box, spacing, dz: float = 0.0) -> np.ndarray:
    """The position in mm of each voxel of ``box`` from ``centre`` (z shifted by ``dz``
    voxels)."""
    axes = [(np.arange(b.start, b.stop) - c + (dz if k == 0 else 0.0)) * s
            for k, (b, c, s) in enumerate(zip(box, centre, spacing))]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def _shape_function(kind: str, radius: float, rng: np.random.Generator):
    """Occupancy (0..1, a 1 mm soft edge) of points given in mm from the centre."""
    axes = rng.uniform(0.85, 1.15, 3)
    axes /= np.prod(axes) ** (1 / 3)

    def ball(points, r=radius, at=(0.0, 0.0, 0.0)):
        distance = np.linalg.norm((points - np.asarray(at)) / axes, axis=-1)
        return np.clip(0.5 - (distance - r), 0.0, 1.0)

    if kind == "lobulated":
        lobes = [rng.normal(0, 1, 3) for _ in range(4)]
        lobes = [radius * 0.45 * v / np.linalg.norm(v) for v in lobes]
        return lambda p: np.max([ball(p, radius * 0.62, at) for at in lobes], axis=0)
    if kind == "spiculated":
        spikes = [v / np.linalg.norm(v) for v in rng.normal(0, 1, (int(rng.integers(8, 13)), 3))]
        lengths = rng.uniform(1.3, 1.8, len(spikes)) * radius
        return lambda p: np.maximum(ball(p, radius * 0.8), np.max(
            [_spike(p, d, length) for d, length in zip(spikes, lengths)], axis=0))
    return ball


def _spike(points: np.ndarray, direction: np.ndarray, length: float) -> np.ndarray:
    """A cone along ``direction``: 1.2 mm thick at the core, thinning to nothing at its tip."""
    along = points @ direction
    across = np.linalg.norm(points - along[..., None] * direction, axis=-1)
    thickness = 1.2 * np.clip(1 - along / length, 0, 1)
    inside = (along > 0) & (across <= thickness)
    return inside.astype(np.float32)
