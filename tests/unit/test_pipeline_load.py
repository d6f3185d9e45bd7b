"""load_volume on synthetic series: geometry, pixels, header facts, and every defect."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import RLELossless, generate_uid

from cdss_node.pipeline.load import load_volume
from cdss_node.pipeline.reasons import NotEvaluableReason as Reason
from cdss_node.pipeline.records import NotEvaluable
from cdss_node.synthetic.phantom import PhantomSpec, make_chest_phantom
from tests.conftest import write_series

SLICES = 24


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    return write_series(tmp_path_factory.mktemp("load"), rows=96, slices=SLICES)


@pytest.fixture(scope="module")
def phantom():
    return make_chest_phantom(PhantomSpec(rows=96, columns=96, slices=SLICES,
                                          pixel_spacing_mm=340 / 96 * 1.1, slice_spacing_mm=5.0))


def copy(series, tmp_path: Path) -> list[Path]:
    out = tmp_path / "copy"
    shutil.copytree(series.folder, out)
    return sorted(out.glob("*.dcm"))


def edit(path: Path, **attributes) -> None:
    ds = pydicom.dcmread(path)
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.save_as(path)


def reason_of(paths) -> Reason:
    with pytest.raises(NotEvaluable) as err:
        load_volume(paths)
    return err.value.reason


def test_volume_matches_the_phantom(series, phantom):
    volume = load_volume(series.files)
    # ascending along the normal (+z, towards the head): the phantom's slice 0 is the top
    np.testing.assert_array_equal(volume.hu, phantom.hu[::-1].astype(np.float32))
    assert volume.spacing_mm == pytest.approx(phantom.spacing_mm)
    assert volume.direction == ((1, 0, 0), (0, 1, 0), (0, 0, 1))
    first = pydicom.dcmread(series.files[-1])  # the lowest slice
    assert volume.origin_mm == pytest.approx(tuple(first.ImagePositionPatient))
    assert volume.source_instance_uids[0] == first.SOPInstanceUID
    assert volume.source_frame_numbers == (0,) * SLICES
    assert volume.window == (-600.0, 1500.0)
    header = volume.header
    assert (header.sex, header.age_years, header.size_m, header.weight_kg,
            header.smoking_status) == ("M", 64.0, 1.72, 70.0, "YES")


def test_file_order_does_not_matter(series):
    shuffled = list(series.files)
    random.Random(1).shuffle(shuffled)
    np.testing.assert_array_equal(load_volume(shuffled).hu, load_volume(series.files).hu)


def test_compressed_and_per_slice_rescale_give_the_same_hu(series, tmp_path):
    paths = copy(series, tmp_path)
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        if k % 2:  # other slope and intercept on every other slice: HU = stored / 2 - 2048
            hu = ds.pixel_array.astype(np.int32) - 1024
            ds.RescaleIntercept, ds.RescaleSlope = -2048, 0.5
            ds.PixelData = ((hu + 2048) * 2).astype(np.uint16).tobytes()
            ds.BitsStored, ds.HighBit = 16, 15
        ds.compress(RLELossless, generate_instance_uid=False)
        ds.save_as(path)
    np.testing.assert_array_equal(load_volume(paths).hu, load_volume(series.files).hu)


def test_enhanced_ct_multiframe_gives_the_same_volume(series, tmp_path):
    slices = [pydicom.dcmread(p) for p in series.files]
    ds = slices[0].copy()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    ds.SOPInstanceUID = generate_uid()
    ds.NumberOfFrames = len(slices)
    ds.PixelData = b"".join(s.PixelData for s in slices)
    shared, measures, orient, transform = (pydicom.Dataset() for _ in range(4))
    measures.PixelSpacing, measures.SliceThickness = ds.PixelSpacing, ds.SliceThickness
    orient.ImageOrientationPatient = ds.ImageOrientationPatient
    transform.RescaleIntercept, transform.RescaleSlope = ds.RescaleIntercept, ds.RescaleSlope
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [orient]
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = [_per_frame(s) for s in slices]
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                    "RescaleIntercept", "RescaleSlope"):
        delattr(ds, keyword)
    ds.save_as(tmp_path / "enhanced.dcm")
    volume = load_volume([tmp_path / "enhanced.dcm"])
    np.testing.assert_array_equal(volume.hu, load_volume(series.files).hu)
    assert volume.source_frame_numbers == tuple(range(SLICES, 0, -1))


def _per_frame(ds):
    position, item = pydicom.Dataset(), pydicom.Dataset()
    position.ImagePositionPatient = ds.ImagePositionPatient
    item.PlanePositionSequence = [position]
    return item


def test_missing_slice(series):
    assert reason_of(series.files[:10] + series.files[11:]) == Reason.MISSING_SLICES


def test_too_few_slices(series):
    assert reason_of(series.files[:5]) == Reason.TOO_FEW_SLICES


def test_mixed_orientation(series, tmp_path):
    paths = copy(series, tmp_path)
    edit(paths[3], ImageOrientationPatient=[1, 0, 0, 0, 0.9950042, -0.0998334])
    assert reason_of(paths) == Reason.MIXED_ORIENTATION


def test_not_ct(series, tmp_path):
    paths = copy(series, tmp_path)
    for path in paths:
        edit(path, Modality="MR", SOPClassUID="1.2.840.10008.5.1.4.1.1.4")
    assert reason_of(paths) == Reason.NOT_CT


def test_localizers_are_dropped_and_localizer_only_is_not_evaluable(series, tmp_path):
    paths = copy(series, tmp_path)
    scout = tmp_path / "scout.dcm"
    shutil.copy(paths[0], scout)
    edit(scout, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"], SOPInstanceUID=generate_uid(),
         ImageOrientationPatient=[0, 1, 0, 0, 0, -1])
    assert load_volume([*paths, scout]).shape[0] == SLICES
    assert reason_of([scout]) == Reason.LOCALIZER


def test_the_headers_come_back_without_pixel_data(series, tmp_path):
    """For SEG and SR: every file's header, the localizer's too, its pixels let go; the
    multi-frame object's once all its frames are in."""
    from cdss_node.pipeline.load import load_series

    paths = copy(series, tmp_path)
    scout = tmp_path / "scout.dcm"
    shutil.copy(paths[0], scout)
    edit(scout, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"], SOPInstanceUID=generate_uid())
    volume, headers = load_series([*paths, scout])
    assert len(headers) == SLICES + 1 and volume.shape[0] == SLICES
    assert not any("PixelData" in ds for ds in headers)
    assert {str(ds.SOPInstanceUID) for ds in headers} >= set(volume.source_instance_uids)
    np.testing.assert_array_equal(volume.hu, load_volume(series.files).hu)


def test_duplicate_positions(series, tmp_path):
    paths = copy(series, tmp_path)
    twin = tmp_path / "twin.dcm"
    shutil.copy(paths[4], twin)
    edit(twin, SOPInstanceUID=generate_uid())
    assert reason_of([*paths, twin]) == Reason.INCONSISTENT_GEOMETRY


def test_gantry_tilt(series, tmp_path):
    paths = copy(series, tmp_path)
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        edit(path, ImagePositionPatient=[x, y + 0.5 * k, z])  # 0.1 mm per mm: ~6 degrees
    assert reason_of(paths) == Reason.GANTRY_TILT


def test_unreadable_file_and_broken_pixel_data(series, tmp_path):
    paths = copy(series, tmp_path)
    paths[2].write_bytes(b"not dicom at all")
    assert reason_of(paths) == Reason.UNREADABLE
    paths = copy(series, tmp_path / "b")
    ds = pydicom.dcmread(paths[2])
    ds.compress(RLELossless, generate_instance_uid=False)
    ds.PixelData = ds.PixelData[:200]
    ds.save_as(paths[2])
    assert reason_of(paths) == Reason.UNREADABLE


def test_two_series(series, tmp_path):
    paths = copy(series, tmp_path)
    edit(paths[0], SeriesInstanceUID=generate_uid())
    assert reason_of(paths) == Reason.MULTIPLE_SERIES


def test_every_reason_has_a_code_and_a_sentence():
    codes = [reason.code for reason in Reason]
    assert len(set(codes)) == len(codes)
    assert all(reason.sentence.endswith(".") for reason in Reason)


def test_lossy_compressed_series_is_flagged_and_lossless_is_not(series, tmp_path):
    """A real lossy JPEG 2000 encoding (compression ratio 20), its header set as PS3.3 C.7.6.1.1.5
    asks of a lossy encoder (pydicom leaves that to the caller); RLE is lossless."""
    from pydicom.uid import JPEG2000

    lossy_header = {"LossyImageCompression": "01", "LossyImageCompressionRatio": 20,
                    "LossyImageCompressionMethod": "ISO_15444_1"}
    paths = recompressed(copy(series, tmp_path / "j2k"), JPEG2000, lossy_header,
                         encoding_plugin="pylibjpeg", j2k_cr=[20])
    lossy, original = load_volume(paths), load_volume(series.files)
    assert lossy.lossy_compressed and not original.lossy_compressed
    assert not np.array_equal(lossy.hu, original.hu)              # the encoding really was lossy
    rle = recompressed(copy(series, tmp_path / "rle"), RLELossless)
    assert not load_volume(rle).lossy_compressed


def recompressed(paths: list[Path], syntax: str, header: dict | None = None,
                 **options) -> list[Path]:
    """``paths`` encoded in place in ``syntax``, with ``header`` attributes set after."""
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.compress(syntax, generate_instance_uid=False, **options)
        for keyword, value in (header or {}).items():
            setattr(ds, keyword, value)
        ds.save_as(path)
    return paths


@pytest.mark.parametrize("syntax, said, lossy", [
    ("1.2.840.10008.1.2.1", None, False),        # Explicit VR Little Endian
    ("1.2.840.10008.1.2.1", "01", True),         # decompressed after a lossy step: stays "01"
    ("1.2.840.10008.1.2.4.50", None, True),      # JPEG Baseline is always lossy
    ("1.2.840.10008.1.2.4.50", "00", True),
    ("1.2.840.10008.1.2.4.91", None, True),      # JPEG 2000 may be lossy...
    ("1.2.840.10008.1.2.4.91", "00", False),     # ...unless the header says it is not
    ("1.2.840.10008.1.2.4.90", None, False),     # JPEG 2000 lossless only
    ("1.2.840.10008.1.2.4.70", None, False),     # JPEG Lossless SV1
])
def test_lossy_compression_is_read_from_the_header_and_the_transfer_syntax(syntax, said, lossy):
    from pydicom.dataset import FileMetaDataset

    from cdss_node.pipeline.header import lossy_compressed

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    if said is not None:
        ds.LossyImageCompression = said
    assert lossy_compressed(ds) is lossy


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "int32", "uint32",
                                   "float32", "float64"])
@pytest.mark.parametrize("slope, intercept", [(1.0, -1024.0), (0.5, -1000.5), (2.0, 0.0)])
def test_rescale_in_place_equals_the_plain_expression(dtype, slope, intercept):
    from cdss_node.pipeline.load import rescale_into

    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    low, high = (info.min, info.max) if info else (-5000.0, 5000.0)
    rng = np.random.default_rng(0)
    pixels = rng.uniform(low, high, size=(16, 16)).astype(dtype)
    pixels.flat[:2] = (low, high)
    out = np.empty(pixels.shape, np.float32)
    rescale_into(out, pixels, slope, intercept)
    expected = (pixels * np.float32(slope) + np.float32(intercept)).astype(np.float32)
    np.testing.assert_array_equal(out, expected)
