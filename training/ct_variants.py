"""Acquisition variants of a real CT: the same patient as other scanners and protocols make it.

Each variant is made from the CT as SimpleITK holds it, and the lesion label goes through the same
transform, so that the segmenter can be scored on it:

==================  ==========================================================================
variant             what changes
==================  ==========================================================================
``slices-1.0``      slice spacing resampled to 1.0 mm (likewise 1.25, 2.5 and 5 mm): a thinner
                    slice is interpolated, a thicker one integrates over its thickness
``pixels-0.5``      pixel spacing 0.5 mm (and ``pixels-0.98``), the in-plane counterpart
``one-lung-fov``    a targeted reconstruction: a 180 mm square around one lung (the lesion's),
                    so that lung runs off the edges of the image
``apex-cut``        the scan starts below the lung apices (the top quarter of the lungs is cut)
``base-cut``        the scan stops above the lung bases (the bottom quarter is cut)
``noise``           a sharp kernel: white noise of 40 HU standard deviation
``contrast``        contrast enhancement: heart, great vessels and lung vessels +100-250 HU
                    (blood denser than 0 HU outside the lesion, by distance from the hilum),
                    the lesion +30 HU
``off-centre``      the patient 60 mm off the centre of a wider field of view (air padded)
==================  ==========================================================================

The label is either a lesion mask (scored by Dice) or, for a CT without one, a *region*: a box
around a lesion that was looked up by eye (scored by whether the found tumor lies in it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from training import real_ct
from training.hybrid_lesions import host_from_image, insert, lung_mask

SLICE_VARIANTS_MM = (1.0, 1.25, 2.5, 5.0)
PIXEL_VARIANTS_MM = (0.5, 0.98)
FOV_MM = 180.0
CUT_FRACTION = 0.25
NOISE_HU = 40.0
OFF_CENTRE_MM = 60.0
AIR_HU = -1000.0


@dataclass(frozen=True)
class Case:
    """A CT with what is known of its lesion: ``label`` (a mask on the CT's grid, or a region
    box when ``region`` is set) or None (lesion-free)."""

    name: str
    image: sitk.Image
    label: sitk.Image | None
    region: bool = False


def variants() -> dict[str, Callable[[Case], Case]]:
    """Every variant by name; each maps a case to the varied case."""
    made: dict[str, Callable[[Case], Case]] = {"original": lambda case: case}
    for mm in SLICE_VARIANTS_MM:
        made[f"slices-{mm:g}"] = lambda case, mm=mm: _resampled(case, 2, mm)
    for mm in PIXEL_VARIANTS_MM:
        made[f"pixels-{mm:g}"] = lambda case, mm=mm: _resampled(case, (0, 1), mm)
    made.update({"one-lung-fov": one_lung_fov, "apex-cut": lambda c: cut(c, top=True),
                 "base-cut": lambda c: cut(c, top=False), "noise": noise,
                 "contrast": contrast, "off-centre": off_centre})
    return made


def _resampled(case: Case, axes, mm: float) -> Case:
    axes = (axes,) if isinstance(axes, int) else axes
    spacing = list(case.image.GetSpacing())
    for axis in axes:
        spacing[axis] = mm
    label = None if case.label is None else resample_label(case.label, spacing)
    return Case(case.name, resample(case.image, spacing), label, case.region)


def resample(image: sitk.Image, spacing: list[float]) -> sitk.Image:
    """The image on a grid of ``spacing`` over the same extent; where the new spacing is
    coarser the image is first smoothed over it (a thicker slice integrates, as a scanner's
    does), where finer it is interpolated linearly."""
    old = image.GetSpacing()
    sigma = [max(new * new - was * was, 0.0) ** 0.5 / 2.355 for new, was in zip(spacing, old)]
    if max(sigma) > 0:
        image = sitk.SmoothingRecursiveGaussian(image, [max(s, 1e-3) for s in sigma])
    return _on_grid(image, spacing, sitk.sitkLinear, AIR_HU)


def resample_label(label: sitk.Image, spacing: list[float]) -> sitk.Image:
    """The label on the new grid: its occupancy interpolated linearly, then half or more."""
    occupancy = _on_grid(sitk.Cast(label, sitk.sitkFloat32), spacing, sitk.sitkLinear, 0.0)
    return sitk.Cast(occupancy >= 0.5, sitk.sitkUInt8)


def _on_grid(image: sitk.Image, spacing: list[float], interpolator, fill: float) -> sitk.Image:
    size = [int(round((n - 1) * was / new)) + 1
            for n, was, new in zip(image.GetSize(), image.GetSpacing(), spacing)]
    return sitk.Resample(image, size, sitk.Transform(), interpolator, image.GetOrigin(),
                         spacing, image.GetDirection(), fill, image.GetPixelID())


def lungs_of(image: sitk.Image) -> np.ndarray:
    """The lungs (z, y, x), found independently of the segmenters (``hybrid_lesions``)."""
    return lung_mask(*real_ct.arrays(image))


def one_lung_fov(case: Case) -> Case:
    """A FOV_MM square around the lung that holds the lesion (or the larger lung)."""
    lungs = lungs_of(case.image)
    labels, count = ndimage.label(lungs)
    sizes = ndimage.sum_labels(lungs, labels, np.arange(1, count + 1))
    chosen = int(np.argmax(sizes)) + 1
    if case.label is not None:
        lesion = sitk.GetArrayFromImage(case.label) > 0
        near = ndimage.distance_transform_edt(~lesion) <= 20
        hits = np.bincount(labels[near & (labels > 0)], minlength=count + 1)[1:]
        chosen = int(np.argmax(hits)) + 1 if hits.any() else chosen
    _, y, x = np.nonzero(labels == chosen)
    sx, sy = case.image.GetSpacing()[:2]
    half = (FOV_MM / sx / 2, FOV_MM / sy / 2)
    cx, cy = (x.min() + x.max()) / 2, (y.min() + y.max()) / 2
    nx, ny = case.image.GetSize()[:2]
    xs = slice(max(int(cx - half[0]), 0), min(int(cx + half[0]), nx))
    ys = slice(max(int(cy - half[1]), 0), min(int(cy + half[1]), ny))
    return cropped(case, xs, ys, slice(None))


def cut(case: Case, top: bool) -> Case:
    """The scan without the top (apex) or bottom (base) CUT_FRACTION of the lungs' extent;
    z index grows towards the head (axial, identity direction)."""
    z = np.flatnonzero(lungs_of(case.image).any(axis=(1, 2)))
    extent = z.max() - z.min()
    if top:
        return cropped(case, slice(None), slice(None),
                        slice(0, int(z.max() - CUT_FRACTION * extent) + 1))
    return cropped(case, slice(None), slice(None), slice(int(z.min() + CUT_FRACTION * extent),
                                                         None))


def cropped(case: Case, xs: slice, ys: slice, zs: slice) -> Case:
    label = None if case.label is None else case.label[xs, ys, zs]
    return Case(case.name, case.image[xs, ys, zs], label, case.region)


def noise(case: Case, seed: int = 7) -> Case:
    hu = sitk.GetArrayFromImage(case.image)
    noisy = hu + np.random.default_rng(seed).normal(0.0, NOISE_HU, hu.shape).astype(hu.dtype)
    return Case(case.name, _like(noisy, case.image), case.label, case.region)


def contrast(case: Case) -> Case:
    """Blood (soft tissue of 0-100 HU inside the chest: heart, great vessels, lung vessels) made
    denser by 250 HU at the hilum falling to 100 HU at the lung edge; the lesion by 30 HU.
    Chest wall muscle is outside the lungs' hull and stays as it was."""
    hu = sitk.GetArrayFromImage(case.image)
    spacing = case.image.GetSpacing()[::-1]
    lungs = lungs_of(case.image)
    hull = _slice_hulls(lungs)
    lesion = np.zeros(hu.shape, bool) if case.label is None else \
        sitk.GetArrayFromImage(case.label) > 0
    if case.region:
        lesion = lesion & (hu > -300)   # the mass in its box, not the box
    away = ndimage.distance_transform_edt(~lesion, sampling=spacing) > 3.0
    blood = hull & (hu > 0) & (hu < 100) & away
    depth = ndimage.distance_transform_edt(hull, sampling=spacing)
    gain = 100.0 + 150.0 * np.clip(depth / max(depth.max(), 1.0) * 2, 0, 1)
    enhanced = hu + ndimage.gaussian_filter(np.where(blood, gain, 0.0).astype(np.float32), 0.7)
    enhanced[lesion] += 30.0
    return Case(case.name, _like(enhanced.astype(hu.dtype), case.image), case.label, case.region)


def _slice_hulls(lungs: np.ndarray) -> np.ndarray:
    """Each axial slice's lungs with what lies between them (the mediastinum): the filled
    region between each row's outermost lung voxels."""
    hull = np.zeros_like(lungs)
    for z in np.flatnonzero(lungs.any(axis=(1, 2))):
        for y in np.flatnonzero(lungs[z].any(axis=1)):
            x = np.flatnonzero(lungs[z, y])
            hull[z, y, x[0]:x[-1] + 1] = True
    return hull


def off_centre(case: Case) -> Case:
    """The patient OFF_CENTRE_MM right of and below the centre of a wider field of view."""
    sx, sy = case.image.GetSpacing()[:2]
    pad = [int(round(2 * OFF_CENTRE_MM / sx)), int(round(2 * OFF_CENTRE_MM / sy)), 0]
    image = sitk.ConstantPad(case.image, pad, [0, 0, 0], AIR_HU)
    label = None if case.label is None else sitk.ConstantPad(case.label, pad, [0, 0, 0], 0)
    return Case(case.name, image, label, case.region)


def _like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


LUNGDX_MASS_BOX = (slice(40, 55), slice(230, 390), slice(270, 390))  # z, y, x: looked up by eye
HYBRID_LESIONS = (("solid", 25.0, 3), ("juxta-mediastinal", 30.0, 5))


def real_cases() -> list[Case]:
    """Every real CT the project has (``training.real_ct``): lung1 and lung2 with their
    masks, Lung_Dx-A0001 with its mass's region, the lesion-free thorax, and that thorax with
    each of HYBRID_LESIONS inserted."""
    cases = []
    for name in ("pyrad-lung1", "pyrad-lung2"):
        image, truth = real_ct.load(name)
        cases.append(Case(name, image, _like(truth.astype(np.uint8), image)))
    image, _ = real_ct.load("lungdx-a0001")
    box = np.zeros(sitk.GetArrayFromImage(image).shape, np.uint8)
    box[LUNGDX_MASS_BOX] = 1
    cases.append(Case("lungdx-a0001", image, _like(box, image), region=True))
    thorax, _ = real_ct.load("ts-thorax")
    cases.append(Case("ts-thorax", thorax, None))
    cases += [hybrid_case(thorax, *lesion) for lesion in HYBRID_LESIONS]
    return cases


def hybrid_case(thorax: sitk.Image, kind: str, diameter_mm: float, seed: int) -> Case:
    hu, lesion = insert(host_from_image(thorax), kind, diameter_mm, seed)
    return Case(f"ts+{kind}-{diameter_mm:g}", _like(hu.astype(np.float32), thorax),
                _like(lesion.mask.astype(np.uint8), thorax))
