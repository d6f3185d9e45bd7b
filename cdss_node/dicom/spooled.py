"""Reading a spooled file back into the index record the receiver made of it, for a file that
was renamed into the spool but never recorded (a crash between the two). Header only, with
pydicom: pixel data is never read."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread

from cdss_node.store.index import InstanceRecord
from cdss_node.uids import is_valid_uid

_TAGS = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality"]


def spooled_record(path: Path, relative: str) -> InstanceRecord:
    """The record of the instance file at ``path`` (``relative`` to the spool); ValueError
    when it is no DICOM file or not the instance its place in the spool names."""
    try:
        header = dcmread(path, stop_before_pixels=True, specific_tags=_TAGS)
        syntax = str(header.file_meta.TransferSyntaxUID)
        values = {tag: str(header.get(tag, "")).strip() for tag in _TAGS}
    except Exception as error:  # pydicom raises many types for broken files
        raise ValueError(f"not a readable DICOM file ({type(error).__name__})") from None
    uids = (values["StudyInstanceUID"], values["SeriesInstanceUID"], values["SOPInstanceUID"])
    if not all(map(is_valid_uid, (*uids, values["SOPClassUID"], syntax))):
        raise ValueError("a UID of its header or file meta is missing or invalid")
    if relative != "{}/{}/{}.dcm".format(*uids):
        raise ValueError("its header names an instance stored elsewhere")
    return InstanceRecord(
        sop_instance_uid=uids[2], sop_class_uid=values["SOPClassUID"], study_uid=uids[0],
        series_uid=uids[1], modality=values["Modality"], transfer_syntax_uid=syntax,
        path=relative, size=path.stat().st_size, association_id=None)
