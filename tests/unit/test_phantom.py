"""The synthetic chest phantom: deterministic, anatomically placed, validated."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest

from cdss_node.synthetic.phantom import ChestPhantom, PhantomSpec, make_chest_phantom

SMALL = PhantomSpec(rows=96, columns=96, slices=24, pixel_spacing_mm=4.0, slice_spacing_mm=2.5)


@pytest.fixture(scope="module")
def phantom() -> ChestPhantom:
    return make_chest_phantom()


def test_same_spec_gives_identical_arrays():
    first, second = make_chest_phantom(SMALL), make_chest_phantom(SMALL)
    assert np.array_equal(first.hu, second.hu)
    assert np.array_equal(first.tumor_mask, second.tumor_mask)
    assert np.array_equal(first.lung_mask, second.lung_mask)
    assert first.tumor_centre_voxel == second.tumor_centre_voxel
    assert first.tumor_volume_mm3 == second.tumor_volume_mm3


def test_another_seed_changes_the_noise_but_not_the_tumor():
    first = make_chest_phantom(SMALL)
    other = make_chest_phantom(dataclasses.replace(SMALL, seed=1))
    assert not np.array_equal(first.hu, other.hu)
    assert np.array_equal(first.tumor_mask, other.tumor_mask)


def test_arrays_have_the_spec_shape_and_dtypes(phantom):
    assert phantom.hu.shape == (80, 256, 256) and phantom.hu.dtype == np.int16
    assert phantom.tumor_mask.dtype == bool and phantom.lung_mask.dtype == bool
    assert phantom.spacing_mm == (2.5, 1.5, 1.5)
    assert phantom.hu.min() >= -1024 and phantom.hu.max() <= 3071


def test_tumor_lies_inside_the_right_lung_with_lung_around_it(phantom):
    tumor, lung = phantom.tumor_mask, phantom.lung_mask
    assert tumor.any()
    assert not np.any(tumor & ~lung)
    grown = tumor.copy()
    for axis in range(3):
        grown |= np.roll(tumor, 1, axis) | np.roll(tumor, -1, axis)
    assert not np.any(grown & ~lung), "the tumor touches the lung border"
    z, y, x = phantom.tumor_centre_voxel
    assert tumor[z, y, x]
    assert x < phantom.spec.columns / 2, "right lung is on the image's left (patient's right)"
    assert abs(z - phantom.spec.slices / 2) <= 2, "tumor is at mid height"


def test_tumor_and_lung_have_their_hounsfield_units(phantom):
    tumor_hu = phantom.hu[phantom.tumor_mask]
    parenchyma = phantom.hu[phantom.lung_mask & ~phantom.tumor_mask]
    assert abs(tumor_hu.mean() - 30) < 5
    assert abs(np.median(parenchyma) - (-850)) < 20
    assert abs(parenchyma.mean() - (-850)) < 50
    assert abs(tumor_hu.std() - phantom.spec.noise_hu) < 3


@pytest.mark.parametrize("spec", [PhantomSpec(), SMALL, PhantomSpec(tumor_diameter_mm=60.0)])
def test_tumor_volume_is_near_a_sphere_of_the_nominal_diameter(spec):
    phantom = make_chest_phantom(spec)
    sphere = math.pi / 6 * spec.tumor_diameter_mm**3
    assert abs(phantom.tumor_volume_mm3 / sphere - 1) < 0.4
    voxel = math.prod(phantom.spacing_mm)
    assert phantom.tumor_volume_mm3 == pytest.approx(phantom.tumor_mask.sum() * voxel)


def test_tumor_extent_is_about_its_diameter(phantom):
    zs, ys, xs = np.nonzero(phantom.tumor_mask)
    extent_x = (xs.max() - xs.min() + 1) * phantom.spec.pixel_spacing_mm
    assert 0.8 * 30 <= extent_x <= 1.1 * 30


def test_same_body_on_another_grid():
    """Anatomy is in mm: a finer grid shows the lungs with the same volume."""
    coarse = make_chest_phantom(SMALL)
    fine = make_chest_phantom(dataclasses.replace(SMALL, rows=192, columns=192,
                                                  pixel_spacing_mm=2.0))
    volume = [p.lung_mask.sum() * math.prod(p.spacing_mm) for p in (coarse, fine)]
    assert volume[0] == pytest.approx(volume[1], rel=0.05)


@pytest.mark.parametrize(("field", "value"), [
    ("rows", 32), ("columns", 10_000), ("slices", 2), ("slices", 20.0),
    ("pixel_spacing_mm", 0.0), ("slice_spacing_mm", -1.0), ("pixel_spacing_mm", float("nan")),
    ("tumor_diameter_mm", 4.0), ("tumor_diameter_mm", 81.0), ("noise_hu", -1.0),
    ("seed", -1), ("rows", True),
])
def test_bad_spec_raises_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"^{field}: expected .*, found"):
        PhantomSpec(**{field: value})


def test_grid_too_small_for_the_tumor_is_refused():
    with pytest.raises(ValueError, match="field of view"):
        make_chest_phantom(PhantomSpec(rows=64, columns=64, pixel_spacing_mm=1.0))


def test_phantom_checks_its_arrays():
    good = make_chest_phantom(SMALL)
    with pytest.raises(ValueError, match=r"^hu\.dtype: expected int16"):
        dataclasses.replace(good, hu=good.hu.astype(np.float32))
    with pytest.raises(ValueError, match=r"^tumor_mask\.shape"):
        dataclasses.replace(good, tumor_mask=good.tumor_mask[1:])
    with pytest.raises(ValueError, match=r"^tumor_mask: expected a tumor inside lung_mask"):
        dataclasses.replace(good, lung_mask=np.zeros_like(good.lung_mask))
    with pytest.raises(ValueError, match=r"^tumor_volume_mm3"):
        dataclasses.replace(good, tumor_volume_mm3=good.tumor_volume_mm3 * 2)


@pytest.mark.slow
def test_full_size_phantom_generates_quickly():
    spec = PhantomSpec(rows=512, columns=512, slices=244, pixel_spacing_mm=0.75,
                       slice_spacing_mm=1.25)
    started = time.monotonic()
    phantom = make_chest_phantom(spec)
    elapsed = time.monotonic() - started
    assert phantom.hu.shape == (244, 512, 512)
    assert phantom.tumor_mask.any()
    assert elapsed < 30, f"{elapsed:.1f} s"
