from io import BytesIO

import pydicom
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID
from pynetdicom.dsutils import encode

from cdss_node.dicom.file_meta import file_meta, file_meta_length


def test_file_meta_reads_back_in_pydicom_with_the_dataset_behind_it():
    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.3.45"  # odd length: padded with NUL
    raw = encode(ds, True, True)
    meta = file_meta(ds.SOPClassUID, ds.SOPInstanceUID, "1.2.840.10008.1.2", "PACS ")
    read = pydicom.dcmread(BytesIO(meta + raw))
    fm = read.file_meta
    assert fm.MediaStorageSOPClassUID == ds.SOPClassUID
    assert fm.MediaStorageSOPInstanceUID == "1.2.3.45"
    assert fm.TransferSyntaxUID == "1.2.840.10008.1.2"
    assert fm.ImplementationClassUID == PYNETDICOM_IMPLEMENTATION_UID
    assert fm.SourceApplicationEntityTitle == "PACS"
    assert fm.FileMetaInformationGroupLength == len(meta) - 128 - 4 - 12
    assert read.SOPInstanceUID == "1.2.3.45"
    pydicom.filewriter.validate_file_meta(fm, enforce_standard=True)


def test_file_meta_length_finds_the_dataset():
    meta = file_meta("1.2.840.10008.5.1.4.1.1.2", "1.2.3", "1.2.840.10008.1.2", "A")
    assert file_meta_length(meta + b"dataset") == len(meta)
    assert file_meta_length(b"\x00" * 200) is None
