"""The default segmenter on real chest CT (``cdss-train real-ct``): hybrid lesions of known
mask, the PyRadiomics lung tumors with their masks, and the lesion-free TotalSegmentator thorax.
The full table by lesion kind is ``bench/segmentation.py``; these are the Done-when numbers on a
smaller set."""

from __future__ import annotations

import os
from dataclasses import replace
import statistics

import numpy as np
import pytest

from cdss_node.pipeline.lungs import within
from cdss_node.pipeline.segment import DefaultSegmenter
from training import real_ct
from training.hybrid_lesions import SOLID_HU, host_from_image, insert
from training.segmentation_eval import dice, evaluate, hybrid_cases, volume_of

pytestmark = pytest.mark.integration


def load(name: str):
    try:
        return real_ct.load(name)
    except FileNotFoundError as missing:
        if os.environ.get("CDSS_REQUIRE_TOOLS") == "1":
            pytest.fail(str(missing))
        pytest.skip(str(missing))


@pytest.fixture(scope="module")
def hosts():
    image, _ = load("ts-thorax")
    return {slice_mm: host_from_image(image, slice_mm) for slice_mm in (1.0, 5.0)}


def test_an_inserted_lesion_has_the_size_and_density_asked_for(hosts):
    host = hosts[1.0]
    hu, lesion = insert(host, "solid", 20.0, seed=5)
    ml = lesion.mask.sum() * np.prod(host.spacing_mm) / 1000
    assert ml == pytest.approx(np.pi / 6 * 20 ** 3 / 1000, rel=0.1)
    assert abs(np.median(hu[lesion.mask]) - SOLID_HU) < 30
    away = ~within(lesion.mask, 3.0, host.spacing_mm)
    assert np.array_equal(hu[away], host.hu[away])
    again, same = insert(host, "solid", 20.0, seed=5)
    assert np.array_equal(again, hu) and np.array_equal(same.mask, lesion.mask)


def test_no_tumor_on_the_lesion_free_thorax(hosts):
    for host in hosts.values():
        found = DefaultSegmenter().segment(volume_of(host.hu, host.spacing_mm))
        assert not found.found, f"false tumor at {host.spacing_mm[0]} mm slices"


def test_solid_and_part_solid_lesions_of_10_mm_and_more(hosts):
    results = [evaluate(DefaultSegmenter(), *case) for case in hybrid_cases(
        hosts, ("solid", "part-solid"), (10.0, 20.0, 45.0))]
    detected = sum(r.detected for r in results) / len(results)
    assert detected >= 0.9, [(r.kind, r.diameter_mm, r.slice_mm, r.dice) for r in results]
    assert statistics.median(r.dice for r in results) >= 0.8


@pytest.mark.parametrize("name", ["pyrad-lung1", "pyrad-lung2"])
def test_real_tumors_with_their_masks(name):
    image, truth = load(name)
    found = DefaultSegmenter().segment(volume_of(*real_ct.arrays(image)))
    assert dice(found.mask, truth) >= 0.7


def test_of_two_lesions_the_larger_is_the_primary(hosts):
    host = hosts[1.0]
    hu, small = insert(host, "solid", 14.0, seed=21)
    second = replace(host, hu=hu, air=host.air & ~within(small.mask, 20.0, host.spacing_mm))
    hu, large = insert(second, "part-solid", 26.0, seed=22)
    found = DefaultSegmenter().segment(volume_of(hu, host.spacing_mm))
    assert found.candidates >= 2
    assert dice(found.mask, large.mask) >= 0.8 and not (found.mask & small.mask).any()
