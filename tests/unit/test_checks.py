import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from pynetdicom.dsutils import encode

from cdss_node.dicom import checks
from cdss_node.dicom.checks import StoreProblem

CT = "1.2.840.10008.5.1.4.1.1.2"


def ct(**overrides) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.Modality = "CT"
    ds.Rows, ds.Columns, ds.BitsAllocated = 8, 8, 16
    ds.PixelData = np.zeros((8, 8), np.uint16).tobytes()
    for key, value in overrides.items():
        setattr(ds, key, value)
    return ds


def scanned(ds: Dataset, syntax=ExplicitVRLittleEndian):
    return checks.scan_dataset(encode(ds, syntax.is_implicit_VR, True), syntax)


def problem_of(ds: Dataset, syntax=ExplicitVRLittleEndian):
    scan = scanned(ds, syntax)
    if isinstance(scan, StoreProblem):
        return scan
    header = checks.instance_header(scan, CT, "1.2.3.4.5")
    if isinstance(header, StoreProblem):
        return header
    return checks.image_problem(scan, syntax)


def test_a_good_dataset_has_no_problem_and_its_header_is_read():
    assert problem_of(ct()) is None
    assert problem_of(ct(), ImplicitVRLittleEndian) is None
    header = checks.instance_header(scanned(ct()), CT, "1.2.3.4.5")
    assert (header.study_uid, header.series_uid, header.modality) == ("1.2.3", "1.2.3.4", "CT")


@pytest.mark.parametrize("cut", [1, 100, 145])
def test_truncated_dataset_cannot_be_understood(cut):
    raw = encode(ct(), False, True)
    result = checks.scan_dataset(raw[:-cut], ExplicitVRLittleEndian)
    assert isinstance(result, StoreProblem) and result.status == checks.CANNOT_UNDERSTAND


def test_truncated_encapsulated_pixel_data_cannot_be_understood():
    ds = ct()
    ds.PixelData = encapsulate([b"\x01" * 101])
    ds["PixelData"].VR = "OB"
    raw = encode(ds, False, True)
    assert not isinstance(checks.scan_dataset(raw, RLELossless), StoreProblem)
    result = checks.scan_dataset(raw[:-20], RLELossless)
    assert isinstance(result, StoreProblem) and result.status == checks.CANNOT_UNDERSTAND


def test_garbage_cannot_be_understood():
    result = checks.scan_dataset(b"\x00\x01garbage", ExplicitVRLittleEndian)
    assert isinstance(result, StoreProblem) and result.status == checks.CANNOT_UNDERSTAND


@pytest.mark.parametrize("overrides, words", [
    ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.4"}, "SOP Class UID differs"),
    ({"SOPInstanceUID": "1.2.3.4.6"}, "SOP Instance UID differs"),
    ({"SeriesInstanceUID": "../../etc"}, "SeriesInstanceUID is not a valid UID"),
    ({"StudyInstanceUID": "1.2.03"}, "StudyInstanceUID is not a valid UID"),
    ({"Rows": None}, "missing Rows"),
    ({"PixelData": b"\x00" * 10}, "Pixel Data has 10 bytes, expected 128"),
])
def test_dataset_that_does_not_match_its_sop_class(overrides, words):
    problem = problem_of(ct(**overrides))
    assert problem.status == checks.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert words in problem.comment


def test_missing_pixel_data():
    ds = ct()
    del ds.PixelData
    assert problem_of(ds).comment == "missing Pixel Data"


def test_error_comment_fits_the_attribute():
    assert len(StoreProblem(0xC000, "x" * 200).comment) == 64
