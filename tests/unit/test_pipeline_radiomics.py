"""PyRadiomics on the sample tumor: 107 features, and the crop gives whole-volume values."""

from __future__ import annotations

import numpy as np
import pytest

from cdss_node.pipeline.load import load_volume
from cdss_node.pipeline.radiomics import FEATURE_COUNT, extract_radiomics
from cdss_node.pipeline.records import RadiomicsFeatures, TumorMask
from tests.conftest import REPO

SAMPLE = REPO / "sample_dicom"


@pytest.fixture(scope="module")
def sample():
    volume = load_volume(sorted((SAMPLE / "series").glob("*.dcm")))
    truth = np.load(SAMPLE / "truth" / "tumor_mask.npz")["tumor_mask"][::-1].copy()
    tumor = TumorMask(mask=truth, spacing_mm=volume.spacing_mm, segmenter="truth", candidates=1)
    return volume, tumor


def test_107_original_features_of_the_seven_classes(sample):
    features = extract_radiomics(*sample)
    assert len(features.names) == FEATURE_COUNT == 107
    classes = {name.split("_")[1] for name in features.names}
    assert classes == {"shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm"}
    values = features.as_dict()
    volume, tumor = sample
    assert values["original_shape_MeshVolume"] == pytest.approx(tumor.volume_mm3, rel=0.05)
    assert values["original_firstorder_Mean"] == pytest.approx(30.0, abs=3.0)  # tumor HU


def test_crop_gives_the_whole_volume_values(sample):
    cropped = extract_radiomics(*sample, crop=True)
    whole = extract_radiomics(*sample, crop=False)
    assert cropped.names == whole.names
    np.testing.assert_allclose(cropped.values, whole.values, rtol=1e-9, atol=1e-9)


def test_features_check_themselves():
    with pytest.raises(ValueError, match="values: expected finite"):
        RadiomicsFeatures(names=("a",), values=np.array([np.nan]))
    with pytest.raises(ValueError, match="names: expected unique"):
        RadiomicsFeatures(names=("a", "a"), values=np.zeros(2))
