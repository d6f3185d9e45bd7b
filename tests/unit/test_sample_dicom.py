"""The committed sample in sample_dicom/ is what ``write_sample`` produces today."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cdss_node.synthetic.sample import write_sample

SAMPLE = Path(__file__).resolve().parents[2] / "sample_dicom"
REGENERATE = "regenerate it: python -m cdss_node.synthetic.sample sample_dicom (see its README)"


def _fingerprint(path: Path) -> tuple[str, ...]:
    ds = pydicom.dcmread(path)
    pixels = hashlib.sha256(ds.PixelData).hexdigest()
    return (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID,
            ds.SOPInstanceUID, str(ds.InstanceNumber), str(ds.ImagePositionPatient), pixels)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    write_sample(out)
    return out


def test_committed_series_equals_a_fresh_one(fresh):
    committed = sorted((SAMPLE / "series").glob("*.dcm"))
    generated = sorted((fresh / "series").glob("*.dcm"))
    assert committed, f"sample_dicom/series is empty; {REGENERATE}"
    assert [p.name for p in committed] == [p.name for p in generated], REGENERATE
    for old, new in zip(committed, generated):
        assert _fingerprint(old) == _fingerprint(new), f"{old.name} differs; {REGENERATE}"


def test_committed_truth_equals_a_fresh_one(fresh):
    committed = json.loads((SAMPLE / "truth" / "truth.json").read_text())
    assert committed == json.loads((fresh / "truth" / "truth.json").read_text()), REGENERATE
    with np.load(SAMPLE / "truth" / "tumor_mask.npz") as old, \
            np.load(fresh / "truth" / "tumor_mask.npz") as new:
        assert set(old.files) == set(new.files)
        for key in old.files:
            assert np.array_equal(old[key], new[key]), f"{key} differs; {REGENERATE}"


def test_sample_stays_small():
    size = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert size < 12 * 1024 * 1024, f"sample_dicom is {size / 2**20:.1f} MiB"
