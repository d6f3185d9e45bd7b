"""The tumor a radiologist marks (``pipeline.seeded``), on cases where the automatic choice
is wrong: the decoy phantom (``tests/decoy.py``) and its acquisition variants (slice
thickness, field of view, noise, contrast, scan range), marks of every kind and a little off
the centre, and real chest CT with two inserted lesions, the mark on the smaller. The same
answer is required on each: the marked lesion, Dice >= 0.8."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest

from cdss_node.pipeline.lungs import within
from cdss_node.pipeline.mark import Seed
from cdss_node.pipeline.reasons import NotEvaluableReason
from cdss_node.pipeline.records import NotEvaluable
from cdss_node.pipeline.seeded import tumor_at_mark
from cdss_node.pipeline.segment import DefaultSegmenter
from tests.decoy import SPEC, phantom_with_decoy
from training.segmentation_eval import dice, volume_of

pytestmark = pytest.mark.integration

VARIANTS = {
    "as made": {},
    "1.25 mm slices": dict(slices=160, slice_spacing_mm=1.25),
    "5 mm slices": dict(slices=40, slice_spacing_mm=5.0),
    "small field of view": dict(pixel_spacing_mm=1.2),
    "large field of view": dict(pixel_spacing_mm=1.8),
    "noisy": dict(noise_hu=30.0),
    "part-solid tumor": dict(tumor_hu=-250.0),
    "short scan range": dict(slices=56),
}


def case(**change):
    phantom, decoy = phantom_with_decoy(replace(SPEC, **change))
    # the CT volume's slices run up the normal, the phantom's down
    ct = volume_of(phantom.hu[::-1].astype(np.float32), phantom.spacing_mm)
    truth, decoy = phantom.tumor_mask[::-1], decoy[::-1]
    z, y, x = phantom.tumor_centre_voxel
    return ct, truth, decoy, (phantom.spec.slices - 1 - z, y, x)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_marked_tumor_on_every_variant(variant):
    ct, truth, decoy, centre = case(**VARIANTS[variant])
    across = 0.5 * 28.0                                   # a length line across the tumor
    found = tumor_at_mark(DefaultSegmenter(), ct, Seed(tuple(map(float, centre)), across))
    assert dice(found.mask, truth) >= 0.8, variant
    assert not (found.mask & decoy).any()


def test_the_automatic_choice_is_the_decoy():
    ct, truth, decoy, _ = case()
    found = DefaultSegmenter().segment(ct)
    assert dice(found.mask, decoy) >= 0.8 and dice(found.mask, truth) < 0.1


@pytest.mark.parametrize("offset_mm,reach_mm", [
    ((0, 0, 0), 0.0),           # a probe on the centre
    ((0, 8, 8), 0.0),           # a probe off the centre, inside the tumor
    ((2.5, -16, 4), 0.0),       # an arrow's head just outside its edge
    ((0, 0, 0), 16.0),          # an ellipse drawn around it
])
def test_marks_off_the_centre_still_choose_the_tumor(offset_mm, reach_mm):
    ct, truth, _, centre = case()
    voxel = np.asarray(centre) + np.asarray(offset_mm) / np.asarray(ct.spacing_mm)
    found = tumor_at_mark(DefaultSegmenter(), ct, Seed(tuple(voxel), reach_mm))
    assert dice(found.mask, truth) >= 0.8


def test_outside_the_lungs_and_nowhere_near_a_lesion():
    ct, _, _, _ = case()
    with pytest.raises(NotEvaluable) as spine:
        tumor_at_mark(DefaultSegmenter(), ct, Seed((40.0, 200.0, 128.0), 3.0))
    assert spine.value.reason is NotEvaluableReason.MARK_OUTSIDE_LUNGS
    with pytest.raises(NotEvaluable) as empty:
        tumor_at_mark(DefaultSegmenter(), ct, Seed((50.0, 128.0, 60.0), 2.0))
    assert empty.value.reason is NotEvaluableReason.NO_LESION_AT_MARK


@pytest.fixture(scope="module")
def hosts():
    from training import real_ct
    from training.hybrid_lesions import host_from_image

    try:
        image, _ = real_ct.load("ts-thorax")
    except FileNotFoundError as missing:
        if os.environ.get("CDSS_REQUIRE_TOOLS") == "1":
            pytest.fail(str(missing))
        pytest.skip(str(missing))
    return {slice_mm: host_from_image(image, slice_mm) for slice_mm in (1.0, 5.0)}


@pytest.mark.parametrize("slice_mm", [1.0, 5.0])
def test_real_ct_the_mark_on_the_smaller_of_two_lesions(hosts, slice_mm):
    """Real lungs with a 14 mm solid lesion and a 26 mm part-solid one: the automatic path
    takes the larger (``test_segmentation_real_ct``); a mark on the smaller gets the
    smaller."""
    from training.hybrid_lesions import insert

    host = hosts[slice_mm]
    hu, small = insert(host, "solid", 14.0, seed=21)
    second = replace(host, hu=hu, air=host.air & ~within(small.mask, 20.0, host.spacing_mm))
    hu, large = insert(second, "part-solid", 26.0, seed=22)
    ct = volume_of(hu, host.spacing_mm)
    found = tumor_at_mark(DefaultSegmenter(), ct, Seed(tuple(map(float, small.centre_voxel)),
                                                       7.0))
    assert dice(found.mask, small.mask) >= 0.8 and not (found.mask & large.mask).any()
