"""The DICOM an analysis leaves beside result.json: ``seg.dcm`` and ``sr.dcm`` for an analysed
tumor (and ``attention.dcm``, the image network's Grad-CAM, where the analysis has one), or the
not-evaluable ``sr.dcm``; the result image ``sc.dcm`` in both cases (unless
switched off); and reading back an earlier report to supersede it.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.valuerep import DA, TM

from cdss_node import __version__
from cdss_node.dicom.attention_seg import attention_segmentation
from cdss_node.dicom.key_slice import key_slice
from cdss_node.dicom.result_image import result_image
from cdss_node.dicom.seg import Equipment, source_datasets, tumor_segmentation
from cdss_node.dicom.sr import ReportedModel, Version, egfr_report, not_evaluable_report
from cdss_node.jobs import ATTENTION_FILE, SC_FILE, SEG_FILE, SR_FILE
from cdss_node.logs import get_logger

if TYPE_CHECKING:
    from cdss_node.pipeline.analyze import Analysis

log = get_logger(__name__)


def write_dicom_results(out_dir: Path, analysis: "Analysis", model: ReportedModel,
                        paths: Sequence[Path], version: Version = Version(),
                        device_uid: str | None = None, with_image: bool = True) -> list[Path]:
    """``seg.dcm`` and ``sr.dcm`` (an analysed tumor), or the not-evaluable ``sr.dcm``, and
    ``sc.dcm`` when ``with_image``; the SR's Device Observer UID is ``device_uid`` (the node's),
    or a new one."""
    headers = ([_normalised(ds) for ds in analysis.headers] if analysis.headers
               else series_headers(paths))
    if not headers:
        log.warning("no_dicom_report", reason="no readable DICOM header in the series")
        return []
    equipment = Equipment(software_version=__version__, device_uid=device_uid)
    key = None                                   # the tumor's key slice, for SR and image
    if analysis.status != "ok":
        report = not_evaluable_report(analysis, model, headers, equipment, version)
        written = [_save(report, out_dir, SR_FILE)]
    else:
        seg = tumor_segmentation(analysis.volume, analysis.tumor, headers, equipment,
                                 version.instance_number)
        key = key_slice(analysis.volume, analysis.tumor.mask, headers)
        attention = _attention(analysis, headers, equipment, model, version)
        report = egfr_report(analysis, model, seg, source_datasets(analysis.volume, headers),
                             equipment, version, key, attention)
        written = [_save(seg, out_dir, SEG_FILE),
                   *([] if attention is None else [_save(attention, out_dir, ATTENTION_FILE)]),
                   _save(report, out_dir, SR_FILE)]
    if with_image:
        image = result_image(analysis, model, headers, equipment, version, key)
        written.append(_save(image, out_dir, SC_FILE))
    return written


def _attention(analysis: "Analysis", headers: list[Dataset], equipment: Equipment,
               model: ReportedModel, version: Version):
    """The Grad-CAM as a fractional SEG; None without one."""
    if analysis.attention is None:
        return None
    return attention_segmentation(analysis.volume, analysis.attention, headers, equipment,
                                  model.name, model.version, version.instance_number)


def series_headers(paths: Sequence[Path]) -> list[Dataset]:
    """The readable headers of the most frequent series among ``paths``."""
    headers = []
    for path in paths:
        try:
            headers.append(pydicom.dcmread(path, stop_before_pixels=True))
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
    series = Counter(str(ds.get("SeriesInstanceUID", "")) for ds in headers).most_common(1)
    return [_normalised(ds) for ds in headers
            if series and str(ds.get("SeriesInstanceUID", "")) == series[0][0]]


# Patient and study attributes of type 2 (present, may be empty) that SEG and SR copy from the
# CT. An anonymised CT often lacks some; the copy then carries them empty, as the standard
# says for an unknown type 2 value, instead of the analysis failing without any report.
TYPE2_IDENTITY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
                  "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")


DATES_AND_TIMES = (("PatientBirthDate", DA), ("StudyDate", DA), ("StudyTime", TM))


def _normalised(header: Dataset) -> Dataset:
    """The header as SEG and SR copy it: missing type 2 identity present and empty, a date or
    time that is no valid DA/TM (e.g. 19310231) empty, and a Specific Character Set whose first
    value is empty (the default repertoire) named ISO 2022 IR 6, as PS3.3 C.12.1.1.2 reads it."""
    for keyword in TYPE2_IDENTITY:
        if keyword not in header:
            setattr(header, keyword, "")
    for keyword, kind in DATES_AND_TIMES:
        if not _valid(str(header.get(keyword, "") or ""), kind):
            log.warning("unreadable_value_left_empty", keyword=keyword)
            setattr(header, keyword, "")
    charset = header.get("SpecificCharacterSet")
    if isinstance(charset, MultiValue) and len(charset) > 1 and not charset[0]:
        header.SpecificCharacterSet = ["ISO 2022 IR 6", *charset[1:]]
    return header


def _valid(text: str, kind) -> bool:
    try:
        return not text or kind(text) is not None
    except ValueError:
        return False


def _save(dataset: Dataset, out_dir: Path, name: str) -> Path:
    path = out_dir / name
    partial = out_dir / f".{name}.partial"
    dataset.save_as(partial, enforce_file_format=True)
    os.replace(partial, path)
    return path


def read_report(path: str | Path) -> Dataset:
    """An earlier SR, to be named as the predecessor of a new one."""
    return pydicom.dcmread(path)
