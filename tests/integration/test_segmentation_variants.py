"""The default segmenter on acquisition variants of real chest CT (``training.ct_variants``): the
same tumor whatever the slice spacing or field of view, nothing on lesion-free variants and scan
edges, and its own reason when the lungs are not in the scan. The full table is
``bench/segmentation.py``; these are a few of its rows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from cdss_node.pipeline.reasons import QualityFlag
from cdss_node.pipeline.segment import DefaultSegmenter
from tests.conftest import require_tool
from training import ct_variants, real_ct
from training.ct_variants import Case, cropped, lungs_of, variants
from training.real_ct import arrays
from training.segmentation_eval import score_variant, volume_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cases() -> dict[str, Case]:
    try:
        return {case.name: case for case in ct_variants.real_cases()}
    except FileNotFoundError as missing:
        _missing(str(missing))


def _missing(why: str) -> None:
    if os.environ.get("CDSS_REQUIRE_TOOLS") == "1":
        pytest.fail(why)
    pytest.skip(why)


def segment(case: Case):
    return DefaultSegmenter().segment(volume_of(*arrays(case.image)))


def test_thin_slices_find_the_same_tumor(cases):
    thin = variants()["slices-1.25"](cases["pyrad-lung2"])
    result = score_variant(DefaultSegmenter(), thin, "slices-1.25")
    assert result.outcome == "found" and result.dice >= 0.75, result


def test_a_one_lung_field_of_view_finds_the_tumor_and_says_the_lungs_are_cut(cases):
    targeted = variants()["one-lung-fov"](cases["pyrad-lung1"])
    assert targeted.image.GetSize()[0] < 512 / 1.5
    result = score_variant(DefaultSegmenter(), targeted, "one-lung-fov")
    assert result.outcome == "found" and result.dice >= 0.7, result
    assert QualityFlag.LUNGS_INCOMPLETE.code in result.flags


@pytest.mark.parametrize("variant", ["one-lung-fov", "slices-2.5", "noise", "contrast"])
def test_no_tumor_on_lesion_free_variants(cases, variant):
    result = score_variant(DefaultSegmenter(), variants()[variant](cases["ts-thorax"]), variant)
    assert result.outcome == "no tumor", result


def test_vessels_cut_by_the_scan_edge_are_no_tumor(cases):
    """The lesion-free thorax with its scan ending at each level through the hila (every
    15 mm from the lungs' lower third to their upper third): the vessels the last slice cuts
    are no round lesion."""
    thorax = cases["ts-thorax"]
    z = np.flatnonzero(lungs_of(thorax.image).any(axis=(1, 2)))
    step = int(15 / thorax.image.GetSpacing()[2])
    levels = range(z.min() + (z.max() - z.min()) // 3, z.max() - (z.max() - z.min()) // 3, step)
    false = []
    for top in levels:
        found = segment(cropped(thorax, slice(None), slice(None), slice(0, top + 1)))
        if found.found:
            false.append((top, found.volume_mm3 / 1000))
    assert len(levels) >= 3 and not false, false


def test_a_tumor_cut_by_the_scan_is_found_and_flagged_truncated(cases):
    lung2 = cases["pyrad-lung2"]
    truth = sitk.GetArrayFromImage(lung2.label) > 0
    z = np.flatnonzero(truth.any(axis=(1, 2)))
    middle = int((z.min() + z.max()) // 2)
    cut = cropped(lung2, slice(None), slice(None), slice(middle, None))
    result = score_variant(DefaultSegmenter(), cut, "cut through the tumor")
    assert result.outcome == "found", result
    assert QualityFlag.TUMOR_TRUNCATED.code in result.flags


def test_a_scan_without_lungs_says_so_not_no_tumor(cases):
    lung1 = cases["pyrad-lung1"]
    z = np.flatnonzero(lungs_of(lung1.image).any(axis=(1, 2)))
    below = cropped(lung1, slice(None), slice(None), slice(0, int(z.min()) + 2))
    found = segment(below)
    assert not found.found
    assert QualityFlag.LUNGS_NOT_COVERED in found.flags
    assert found.lung_volume_ml < 250


def test_the_juxta_mediastinal_mass_of_lung_dx_a0001(cases):
    result = score_variant(DefaultSegmenter(), cases["lungdx-a0001"], "original")
    assert result.outcome == "found" and result.found_ml >= 50, result


def test_flags_and_other_candidates_reach_result_json_the_seg_and_the_sr(tmp_path):
    """Lung_Dx-A0001 as a scan that stops above the lung bases (its upper 40 slices, the mass
    within them): the lungs-cut flag in result.json and the SR (coded, and in the impression),
    and the other candidate the segmenter weighed as a second SEG segment."""
    source = real_ct.cache_dir() / "lungdx-a0001" / "image"
    if not source.is_dir():
        _missing(f"{source}: run `cdss-train real-ct` first")
    files = sorted(source.glob("*"), key=lambda p: float(
        pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))
    series = tmp_path / "series"
    series.mkdir()
    for path in files[-40:]:
        shutil.copy(path, series / path.name)
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "cdss_node", "analyze", str(series), "--out",
                          str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "ok" and result["tumor"]["volume_mm3"] > 50_000
    assert [f["code"] for f in result["quality_flags"]] == ["QF002"]
    seg = hd.seg.segread(out / "seg.dcm")
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels[0] == "Primary lung tumor (AI)"
    assert len(labels) == 1 + result["tumor"]["other_candidates"] >= 2
    assert labels[1] == "Other lesion candidate 1 (AI)"
    assert seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "52988006"
    dump = subprocess.run([require_tool("dsrdump"), "+Pc", str(out / "sr.dcm")],
                          capture_output=True, text=True).stdout
    assert '(QF002,99CDSS,"Lungs cut by the scan")' in dump
    texts = [item.TextValue for item in _items(pydicom.dcmread(out / "sr.dcm"))
             if "TextValue" in item]
    assert any(t.startswith("AI prediction") and "Quality: The lungs run off" in t
               for t in texts), texts


def _items(dataset):
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from _items(item)
