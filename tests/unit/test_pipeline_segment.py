"""The default segmenter on the committed sample and on the same anatomy without a tumor."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from cdss_node.pipeline.load import load_volume
from cdss_node.pipeline.records import TumorMask
from cdss_node.pipeline.lungs import ellipsoid, lung_fields
from cdss_node.pipeline.segment import DefaultSegmenter
from tests.conftest import REPO

SAMPLE = REPO / "sample_dicom"


@pytest.fixture(scope="module")
def sample():
    volume = load_volume(sorted((SAMPLE / "series").glob("*.dcm")))
    truth = np.load(SAMPLE / "truth" / "tumor_mask.npz")
    # the truth is in the phantom's order (head first); the volume ascends along +z
    return volume, truth["tumor_mask"][::-1], truth["lung_mask"][::-1]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def test_finds_and_outlines_the_sample_tumor(sample):
    volume, tumor, _ = sample
    result = DefaultSegmenter().segment(volume)
    assert result.found and result.candidates >= 1
    assert dice(result.mask, tumor) >= 0.8
    assert result.segmenter == "CDSS default lesion segmenter 0.5"
    centre = np.argwhere(tumor).mean(axis=0)
    assert np.abs(np.array(result.centre_voxel) - centre).max() <= 2


def test_lung_fields_match_the_phantom_lungs(sample):
    volume, _, lungs = sample
    assert dice(lung_fields(volume.hu, volume.spacing_mm), lungs) >= 0.95


def test_no_tumor_found_when_the_tumor_is_replaced_by_lung(sample):
    volume, tumor, _ = sample
    hu = volume.hu.copy()
    hu[tumor] = -850.0
    result = DefaultSegmenter().segment(replace(volume, hu=hu))
    assert not result.found
    assert result.volume_mm3 == 0 and result.centre_voxel is None


def test_ellipsoid_respects_anisotropic_spacing():
    ball = ellipsoid(3.0, (3.0, 1.0, 1.0))
    assert ball.shape == (3, 7, 7)
    assert ball[1, 3, 3] and ball[0, 3, 3] and not ball[0, 0, 0]


def test_tumor_mask_checks_itself():
    with pytest.raises(ValueError, match="mask: expected a 3-D bool array"):
        TumorMask(mask=np.zeros((2, 2, 2), np.uint8), spacing_mm=(1, 1, 1), segmenter="x",
                  candidates=0)
    with pytest.raises(ValueError, match="candidates"):
        TumorMask(mask=np.ones((2, 2, 2), bool), spacing_mm=(1, 1, 1), segmenter="x",
                  candidates=0)
    mask = np.zeros((4, 4, 4), bool)
    mask[1:3, 1:3, 1:3] = True
    found = TumorMask(mask=mask, spacing_mm=(2.0, 1.0, 1.0), segmenter="x", candidates=1)
    assert found.volume_mm3 == 16.0 and found.centre_voxel == (2, 2, 2)


@pytest.mark.parametrize("spacing", [(2.5, 1.5, 1.5), (1.25, 0.75, 0.75), (3.0, 1.0, 1.0)])
def test_opening_by_distance_equals_opening_with_the_ball(spacing):
    from scipy import ndimage

    from cdss_node.pipeline.segment import opening

    rng = np.random.default_rng(1)
    mask = ndimage.binary_dilation(rng.random((20, 40, 40)) > 0.97, iterations=3)
    expected = ndimage.binary_opening(mask, ellipsoid(3.5, spacing))
    assert np.array_equal(opening(mask, 3.5, spacing), expected)


@pytest.mark.parametrize("case", ["lung-like", "sparse", "a slab without background",
                                  "in-plane only", "anisotropic", "small"])
def test_distance_thresholds_in_two_slabs_equal_the_whole_transform(case, monkeypatch):
    """The slabs' answer is the whole array's to the voxel, at radii that cross the cut."""
    from scipy import ndimage

    from cdss_node.pipeline import lungs

    monkeypatch.setattr(lungs, "_slab_workers", 2)      # slabs even on a one-core machine

    rng = np.random.default_rng(3)
    shape, spacing = (64, 200, 200), (1.5, 1.5, 1.5)
    mask = ndimage.gaussian_filter(rng.standard_normal(shape), 3) > -0.2
    if case == "sparse":
        mask = ndimage.binary_dilation(rng.random(shape) > 0.9995, iterations=2)
    elif case == "a slab without background":
        mask[:40] = True                    # the first slab (and its overlap) all foreground
    elif case == "in-plane only":
        spacing = (1.5 * 1e3, 0.7, 0.7)     # the vessel opening's stretch
    elif case == "anisotropic":
        spacing = (1.25, 0.63, 0.7)
    elif case == "small":
        mask = mask[:10]
    assert mask.size >= lungs.SLAB_MIN_VOXELS or case == "small"
    distance = ndimage.distance_transform_edt(mask, sampling=spacing)
    for radius in (1.4, 3.0, 6.0, 10.0):
        assert np.array_equal(lungs.distance_above(mask, radius, spacing), distance > radius)
        assert np.array_equal(lungs.distance_at_most(mask, radius, spacing),
                              distance <= radius)


def test_lung_flags_from_the_lung_fields_volume_and_edges():
    from cdss_node.pipeline.lungs import LungFields
    from cdss_node.pipeline.reasons import QualityFlag as Q
    from cdss_node.pipeline.segment import lung_flags

    def fields(ml: float, touching_mm2: float = 0.0) -> LungFields:
        mask = np.zeros((40, 60, 60), bool)          # 3 mm voxels: 27 mm3 each
        count = int(round(ml * 1000 / 27))
        mask[2:38, 2:58, 2:58].flat[:count] = True
        mask[0, :, :].flat[:int(touching_mm2 / 9)] = True   # on the first slice
        return LungFields(mask, (3.0, 3.0, 3.0))

    assert lung_flags(fields(100)) == [Q.LUNGS_NOT_COVERED]
    assert lung_flags(fields(900)) == [Q.LUNG_VOLUME_IMPLAUSIBLE]
    assert lung_flags(fields(3000)) == []
    assert lung_flags(fields(3000, touching_mm2=300)) == []        # grazing the apex
    assert lung_flags(fields(3000, touching_mm2=2000)) == [Q.LUNGS_INCOMPLETE]


def test_the_primary_cut_by_the_edge_is_truncated_and_a_second_of_similar_size_is_said():
    from cdss_node.pipeline.reasons import QualityFlag as Q
    from cdss_node.pipeline.segment import Candidate, candidate_flags

    def candidate(ml: float) -> Candidate:
        return Candidate(1, ml * 1000, 0.8, 0.9, 3.0, 20.0)

    inside = np.zeros((10, 10, 10), bool)
    inside[3:6, 3:6, 3:6] = True
    edge = inside.copy()
    edge[:, 0, 4] = True
    assert candidate_flags([candidate(10)], inside) == []
    assert candidate_flags([candidate(10)], edge) == [Q.TUMOR_TRUNCATED]
    assert candidate_flags([candidate(10), candidate(4)], inside) == []
    assert candidate_flags([candidate(10), candidate(6)], inside) == [Q.SIMILAR_CANDIDATES]


def _ball(shape, centre, radius_mm, spacing):
    axes = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((a - c) * s) ** 2 for a, c, s in zip(axes, centre, spacing)) <= radius_mm ** 2


def test_the_vessel_opening_is_as_thick_along_z_as_the_slices_resolve():
    """A 10 mm nodule that partial volume of 5 mm slices leaves dense on two slices of the
    1.5 mm grid: the 3 mm opening keeps it at 5 mm slices (in the plane) but not as if the
    slices were 1 mm thin (a ball nearly 6 mm high); a 4.5 mm vessel along x is cut away
    either way."""
    from cdss_node.pipeline.segment import vessel_opening

    grid = (1.5, 1.5, 1.5)
    nodule = _ball((20, 30, 40), (10, 15, 10), 5.0, grid)
    nodule[:10], nodule[12:] = False, False
    vessel = np.zeros_like(nodule)
    vessel[9:12, 14:17, 20:] = True
    mask = nodule | vessel
    thick, thin = (vessel_opening(mask, 3.0, grid, s) for s in (5.0, 1.0))
    assert (thick & nodule).sum() >= 0.8 * nodule.sum() and not (thick & vessel & ~nodule).any()
    assert not thin.any()


def test_a_nodule_touching_an_enhanced_vessel_is_parted_from_it():
    """Blood pool (contrast-filled, denser than BLOOD_POOL_HU) is no lesion tissue: a 10 mm
    nodule against a thick enhanced vessel is a candidate of its own, the vessel none."""
    from cdss_node.pipeline.segment import find_candidates

    grid = (1.5, 1.5, 1.5)
    hu = np.full((30, 40, 60), -850.0, dtype=np.float32)
    nodule = _ball(hu.shape, (15, 20, 20), 5.0, grid)
    vessel = np.zeros(hu.shape, dtype=bool)
    vessel[11:20, 16:25, 23:] = True      # 13 mm thick, from the nodule's edge to the hilum
    hu[vessel], hu[nodule] = 250.0, 30.0
    found = find_candidates(hu, np.ones(hu.shape, dtype=bool), grid, 1.0)
    primary = found.on_grid(found.plausible[0])
    assert len(found.plausible) == 1
    assert (primary & nodule).sum() >= 0.8 * nodule.sum()
    assert not (primary & vessel & ~nodule).any()
