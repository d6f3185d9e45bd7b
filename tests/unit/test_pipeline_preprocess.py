import numpy as np
import pydicom
import pytest

from cdss_node.pipeline.header import header_facts, voi_window
from cdss_node.pipeline.preprocess import cnn_input, flatten_histogram, voi_linear
from cdss_node.pipeline.records import CnnInput, CTVolume, HeaderFacts


def volume(hu, window=None) -> CTVolume:
    n = hu.shape[0]
    return CTVolume(hu=hu.astype(np.float32), spacing_mm=(1.0, 1.0, 1.0), origin_mm=(0, 0, 0),
                    direction=((1, 0, 0), (0, 1, 0), (0, 0, 1)),
                    source_instance_uids=("1.2",) * n, source_frame_numbers=(0,) * n,
                    study_uid="1.2", series_uid="1.2.3", window=window, header=HeaderFacts())


def test_voi_linear_follows_the_dicom_formula():
    # centre 40, width 400: below -160 → 0, above 239 → 1, centre → about 0.5
    out = voi_linear(np.array([-1000.0, -160.0, 39.5, 239.5, 3000.0]), 40, 400)
    assert out[0] == 0.0 and out[-1] == 1.0
    assert out[2] == pytest.approx(0.5, abs=1e-6)
    assert np.all(np.diff(out) >= 0)


def test_histogram_flattening_spreads_values_evenly():
    rng = np.random.default_rng(0)
    skewed = rng.beta(2, 8, size=100_000).astype(np.float32)  # mostly small values
    flat = flatten_histogram(skewed)
    assert flat.min() >= 0 and flat.max() <= 1
    assert np.all(np.diff(flat[np.argsort(skewed)]) >= -1e-6)  # order kept
    deciles = np.quantile(flat, np.linspace(0.1, 0.9, 9))
    np.testing.assert_allclose(deciles, np.linspace(0.1, 0.9, 9), atol=0.02)


def test_cnn_input_uses_bundle_then_header_then_lung_window():
    hu = np.linspace(-1000, 1000, 8 * 4 * 4).reshape(8, 4, 4)
    header_window = cnn_input(volume(hu, window=(40, 400))).image
    bundle_window = cnn_input(volume(hu, window=(40, 400)), window=(-600, 1500)).image
    default_window = cnn_input(volume(hu)).image
    np.testing.assert_array_equal(bundle_window, default_window)
    assert not np.array_equal(header_window, default_window)


def test_records_name_the_bad_field():
    with pytest.raises(ValueError, match="hu: expected dtype float32"):
        CTVolume(hu=np.zeros((2, 2, 2), np.int16), spacing_mm=(1, 1, 1), origin_mm=(0, 0, 0),
                 direction=((1, 0, 0), (0, 1, 0), (0, 0, 1)), source_instance_uids=("1",) * 2,
                 source_frame_numbers=(0, 0), study_uid="1", series_uid="2", window=None,
                 header=HeaderFacts())
    with pytest.raises(ValueError, match="source_instance_uids: expected 3"):
        CTVolume(
            hu=np.zeros((3, 2, 2), np.float32), spacing_mm=(1, 1, 1), origin_mm=(0, 0, 0),
            direction=((1, 0, 0), (0, 1, 0), (0, 0, 1)), source_instance_uids=("1",),
            source_frame_numbers=(0, 0, 0), study_uid="1", series_uid="2", window=None,
            header=HeaderFacts())
    with pytest.raises(ValueError, match="image: expected values in"):
        CnnInput(image=np.full((2, 2, 2), 1.5, np.float32))
    with pytest.raises(ValueError, match="sex"):
        HeaderFacts(sex="X")


@pytest.mark.parametrize("attributes, expected", [
    ({"PatientSex": "F", "PatientAge": "058Y", "PatientSize": "1.6", "PatientWeight": "55",
      "SmokingStatus": "NO"}, HeaderFacts("F", 58.0, 1.6, 55.0, "NO")),
    ({"PatientAge": "018M"}, HeaderFacts(age_years=1.5)),
    ({"PatientSex": "", "PatientAge": "64", "PatientSize": "172", "PatientWeight": "0",
      "SmokingStatus": "MAYBE"}, HeaderFacts()),  # malformed or implausible: imputed later
    ({}, HeaderFacts()),
])
def test_header_facts(attributes, expected):
    ds = pydicom.Dataset()
    for key, value in attributes.items():
        setattr(ds, key, value)
    assert header_facts(ds) == expected


def test_voi_window_classic_and_enhanced():
    ds = pydicom.Dataset()
    ds.WindowCenter, ds.WindowWidth = ["-600", "40"], ["1500", "400"]
    assert voi_window(ds) == (-600.0, 1500.0)
    enhanced, shared, voi = pydicom.Dataset(), pydicom.Dataset(), pydicom.Dataset()
    voi.WindowCenter, voi.WindowWidth = "40", "400"
    shared.FrameVOILUTSequence = [voi]
    enhanced.SharedFunctionalGroupsSequence = [shared]
    assert voi_window(enhanced) == (40.0, 400.0)
    assert voi_window(pydicom.Dataset()) is None


def test_flattening_equals_interpolation_of_the_histogram_cdf():
    from cdss_node.pipeline.preprocess import flatten_histogram

    values = (np.random.default_rng(0).random((30, 40, 50)) ** 2).astype(np.float32)
    counts, edges = np.histogram(values, bins=1024, range=(0.0, 1.0))
    cdf = np.cumsum(counts).astype(np.float64)
    cdf = (cdf - cdf[0]) / (cdf[-1] - cdf[0])
    expected = np.interp(values, (edges[:-1] + edges[1:]) / 2, cdf)
    assert np.abs(flatten_histogram(values) - expected).max() < 1e-6
