"""Property tests: ``load_volume`` gives a ``CTVolume`` or raises ``NotEvaluable`` (a coded
reason), whatever a sender put into the headers of a small valid series: spacing, orientation,
positions, rescale, pixel description, modality, missing attributes. Never anything else.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdss_node.pipeline.load import load_volume
from cdss_node.pipeline.records import CTVolume, NotEvaluable
from tests.conftest import write_series

ROWS, SLICES, MIN_SLICES = 64, 5, 3
# CDSS_FUZZ_EXAMPLES=5000: a longer, random (not derandomized) search, for a person to run
EXAMPLES = int(os.environ.get("CDSS_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=EXAMPLES or 150, derandomize=not EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])

NUMBER = st.one_of(
    st.sampled_from(["0", "-0", "1", "-1", "0.5", "nan", "NaN", "inf", "-inf", "1e999", "-1e999",
                     "1e-300", "", " ", "abc", "1,5", "65535", "1e308"]),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda v: f"{v:.6g}"))
VECTOR = {n: st.lists(NUMBER, min_size=0, max_size=n + 1) for n in (2, 3, 6)}
US = st.one_of(st.sampled_from([0, 1, 8, 12, 15, 16, 17, 32, 64, 65535]), st.integers(0, 65535))
ATTRIBUTES = {
    "PixelSpacing": VECTOR[2], "ImagePositionPatient": VECTOR[3],
    "ImageOrientationPatient": VECTOR[6], "RescaleSlope": NUMBER, "RescaleIntercept": NUMBER,
    "BitsAllocated": US, "BitsStored": US, "HighBit": US, "PixelRepresentation": US,
    "Rows": US, "Columns": US, "SamplesPerPixel": US,
    "NumberOfFrames": st.sampled_from(["0", "1", "2", "-1", "abc", ""]),
    "Modality": st.sampled_from(["CT", "MR", "", "ct"]),
    "ImageType": st.sampled_from([["ORIGINAL", "PRIMARY", "LOCALIZER"], ["DERIVED"], []]),
    "PhotometricInterpretation": st.sampled_from(["MONOCHROME1", "RGB", "PALETTE COLOR", ""]),
}
EDIT = st.tuples(st.sampled_from(sorted(ATTRIBUTES)), st.sampled_from(["all", "one", "delete"]),
                 st.integers(0, SLICES - 1), st.data())


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> list[Path]:
    return write_series(tmp_path_factory.mktemp("fuzz_load"), rows=ROWS, slices=8).files[:SLICES]


def test_the_unmutated_series_loads(series):
    assert load_volume(series, min_slices=MIN_SLICES).shape == (SLICES, ROWS, ROWS)


def _mutate(paths: list[Path], edits, draw) -> None:
    datasets = [pydicom.dcmread(p) for p in paths]
    for name, scope, which, _ in edits:
        targets = datasets if scope == "all" else [datasets[which]]
        value = None if scope == "delete" else draw(ATTRIBUTES[name])
        for ds in targets:
            if value is None:
                if name in ds:
                    delattr(ds, name)
            else:
                setattr(ds, name, value)
    for ds, path in zip(datasets, paths):
        ds.save_as(path)


@FUZZ
@given(edits=st.lists(EDIT, min_size=1, max_size=4), data=st.data())
def test_mutated_headers_load_or_are_not_evaluable(series, edits, data):
    folder = Path(tempfile.mkdtemp(prefix="fuzz_load_"))
    try:
        paths = [Path(shutil.copy(p, folder / p.name)) for p in series]
        try:
            _mutate(paths, edits, data.draw)
        except (ValueError, TypeError, OverflowError):
            return  # pydicom refused to write such a value: nothing a peer could send either
        assert_volume_or_not_evaluable(paths)
    finally:
        shutil.rmtree(folder)


@pytest.mark.parametrize("scope, attributes, code", [
    ("all", {"RescaleSlope": "0"}, "NE009"),                     # was read as slope 1
    ("all", {"RescaleIntercept": "nan"}, "NE009"),
    ("all", {"PixelSpacing": ["-0.8", "-0.8"]}, "NE007"),        # was ValueError in CTVolume
    ("all", {"PixelSpacing": ["0", "0"]}, "NE007"),
    ("all", {"ImageOrientationPatient": [0, 0, 0, 0, 0, 0]}, "NE007"),   # was NaN spacing
    ("all", {"ImageOrientationPatient": [2, 0, 0, 0, 2, 0]}, "NE007"),
    ("all", {"ImagePositionPatient": ["0", "0"]}, "NE007"),      # was a matmul ValueError
    ("one", {"ImagePositionPatient": ["0", "0", "1e999"]}, "NE007"),     # was NE004 (inf gap)
    ("one", {"Columns": None}, "NE007"),                         # was AttributeError
    ("all", {"SamplesPerPixel": 3, "PhotometricInterpretation": "RGB",
             "PlanarConfiguration": 0, "Rows": 32, "Columns": 21}, "NE009"),  # was broadcast
])
def test_headers_the_fuzzing_found(series, tmp_path, scope, attributes, code):
    paths = [Path(shutil.copy(p, tmp_path / p.name)) for p in series]
    for path in paths if scope == "all" else paths[1:2]:
        ds = pydicom.dcmread(path)
        for name, value in attributes.items():
            if value is None:
                delattr(ds, name)
            else:
                setattr(ds, name, value)
        ds.save_as(path)
    with pytest.raises(NotEvaluable) as rejected:
        load_volume(paths, min_slices=MIN_SLICES)
    assert rejected.value.reason.code == code, rejected.value.detail


ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
ENHANCED_EDITS = st.lists(st.one_of(
    st.tuples(st.just("NumberOfFrames"),
              st.sampled_from(["0", "1", "4", "6", "-1", "abc", "", "99999"])),
    st.tuples(st.just("frames_listed"), st.integers(0, SLICES + 1)),
    st.tuples(st.just("position"), st.integers(0, SLICES - 1), VECTOR[3]),
    st.tuples(st.just("orientation"), VECTOR[6]),
    st.tuples(st.just("spacing"), VECTOR[2]),
    st.tuples(st.just("rescale"), NUMBER, NUMBER),
    st.tuples(st.just("drop"), st.sampled_from(["SharedFunctionalGroupsSequence",
                                                "PixelMeasuresSequence",
                                                "PlaneOrientationSequence",
                                                "PixelValueTransformationSequence"])),
    st.tuples(st.just("pixel_bytes"), st.integers(0, SLICES * ROWS * ROWS * 2 + 64)),
), min_size=1, max_size=4)


def _enhanced(series: list[Path]) -> pydicom.Dataset:
    """The series as one Enhanced CT object: shared measures, orientation and rescale, a
    position per frame."""
    slices = [pydicom.dcmread(p) for p in series]
    ds = slices[0].copy()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ENHANCED_CT
    ds.NumberOfFrames = len(slices)
    ds.PixelData = b"".join(s.PixelData for s in slices)
    shared, measures, orient, transform = (pydicom.Dataset() for _ in range(4))
    measures.PixelSpacing = ds.PixelSpacing
    orient.ImageOrientationPatient = ds.ImageOrientationPatient
    transform.RescaleIntercept, transform.RescaleSlope = ds.RescaleIntercept, ds.RescaleSlope
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [orient]
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for s in slices:
        position, item = pydicom.Dataset(), pydicom.Dataset()
        position.ImagePositionPatient = s.ImagePositionPatient
        item.PlanePositionSequence = [position]
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = frames
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                    "RescaleIntercept", "RescaleSlope"):
        delattr(ds, keyword)
    return ds


def _edit_enhanced(ds: pydicom.Dataset, edit: tuple) -> None:
    what, *args = edit
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds \
        else pydicom.Dataset()
    if what == "NumberOfFrames":
        ds.NumberOfFrames = args[0]
    elif what == "frames_listed":
        items = list(ds.PerFrameFunctionalGroupsSequence)
        ds.PerFrameFunctionalGroupsSequence = (items + items)[:args[0]]
    elif what == "position" and args[0] < len(ds.PerFrameFunctionalGroupsSequence):
        item = ds.PerFrameFunctionalGroupsSequence[args[0]]
        item.PlanePositionSequence[0].ImagePositionPatient = args[1]
    elif what == "orientation" and "PlaneOrientationSequence" in shared:
        shared.PlaneOrientationSequence[0].ImageOrientationPatient = args[0]
    elif what == "spacing" and "PixelMeasuresSequence" in shared:
        shared.PixelMeasuresSequence[0].PixelSpacing = args[0]
    elif what == "rescale" and "PixelValueTransformationSequence" in shared:
        transform = shared.PixelValueTransformationSequence[0]
        transform.RescaleSlope, transform.RescaleIntercept = args
    elif what == "drop":
        for holder in (ds, shared):
            if args[0] in holder:
                delattr(holder, args[0])
    elif what == "pixel_bytes":
        ds.PixelData = (ds.PixelData * 2)[:args[0] // 2 * 2]


@pytest.fixture(scope="module")
def enhanced(series) -> pydicom.Dataset:
    return _enhanced(series)


def test_the_unmutated_enhanced_object_loads(enhanced, tmp_path):
    enhanced.save_as(tmp_path / "enhanced.dcm")
    assert load_volume([tmp_path / "enhanced.dcm"], min_slices=MIN_SLICES).shape == \
        (SLICES, ROWS, ROWS)


@FUZZ
@given(edits=ENHANCED_EDITS)
def test_mutated_enhanced_ct_loads_or_is_not_evaluable(enhanced, edits):
    ds = pydicom.dcmread(_saved(enhanced))  # a deep copy
    folder = Path(tempfile.mkdtemp(prefix="fuzz_enhanced_"))
    try:
        try:
            for edit in edits:
                _edit_enhanced(ds, edit)
            ds.save_as(folder / "enhanced.dcm")
        except (ValueError, TypeError, OverflowError):
            return  # pydicom refused to write such a value
        assert_volume_or_not_evaluable([folder / "enhanced.dcm"])
    finally:
        shutil.rmtree(folder)


def assert_volume_or_not_evaluable(paths) -> None:
    """A CTVolume, or NotEvaluable with a coded reason and a detail; nothing else."""
    try:
        volume = load_volume(paths, min_slices=MIN_SLICES)
    except NotEvaluable as rejected:
        assert rejected.reason.code.startswith("NE") and rejected.detail
        return
    assert isinstance(volume, CTVolume)


def _saved(ds: pydicom.Dataset) -> "object":
    from io import BytesIO

    buffer = BytesIO()
    ds.save_as(buffer)
    buffer.seek(0)
    return buffer
