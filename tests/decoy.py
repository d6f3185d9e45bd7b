"""A synthetic chest CT on which the node's first answer is wrong: the phantom's tumor (the
true lesion, its mask known) and, in the other lung, a larger round decoy that the automatic
segmenter takes for the primary tumor (it outlines the largest plausible candidate)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from cdss_node.synthetic.phantom import (HU_TUMOR, ChestPhantom, PhantomSpec, grid_axes_mm,
                                         make_chest_phantom)

DECOY_CENTRE_MM = (-20.0, 10.0, 72.0)   # z, y, x: left lung, below the tumor's level
DECOY_DIAMETER_MM = 38.0
SPEC = PhantomSpec(rows=256, columns=256, slices=80, pixel_spacing_mm=1.5,
                   slice_spacing_mm=2.5, tumor_diameter_mm=28.0, noise_hu=12.0, seed=3)


def decoy_mask(spec: PhantomSpec) -> np.ndarray:
    z, y, x = grid_axes_mm(spec)
    cz, cy, cx = DECOY_CENTRE_MM
    zz, yy, xx = np.meshgrid(z - cz, y - cy, x - cx, indexing="ij")
    return zz ** 2 + yy ** 2 + xx ** 2 <= (DECOY_DIAMETER_MM / 2) ** 2


def phantom_with_decoy(spec: PhantomSpec = SPEC, seed: int = 7) -> tuple[ChestPhantom,
                                                                         np.ndarray]:
    """The phantom (its ``tumor_mask`` the true lesion) with the decoy painted in; and the
    decoy's mask."""
    phantom = make_chest_phantom(spec)
    decoy = decoy_mask(spec) & phantom.lung_mask
    hu = phantom.hu.copy()
    noise = np.random.default_rng(seed).standard_normal(int(decoy.sum())) * spec.noise_hu
    hu[decoy] = np.rint(HU_TUMOR + noise).astype(np.int16)
    return replace(phantom, hu=hu), decoy
