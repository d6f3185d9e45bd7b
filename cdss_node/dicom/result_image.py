"""The result as a DICOM Secondary Capture, for viewers that show only images: the tumor's key
slice in a lung window with its outline, and the result, the model, the date and the model's
intended use burned in (a not-evaluable series: the reason, on its middle slice when one could be
read). Its own series in the study (one per analysed CT series), a new instance per analysis,
as the SEG and SR."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from cdss_node.dicom.key_slice import KeySlice, largest_outline
from cdss_node.dicom.result_picture import (LUNG_WINDOW, OTHER_RGB, PRIMARY_RGB, Caption, Outline,
                                            render)
from cdss_node.dicom.seg import MANUFACTURER, MODEL_NAME, Equipment, result_series_uid
from cdss_node.dicom.sr import LOSSY_NOTE, ReportedModel, Version

if TYPE_CHECKING:
    from cdss_node.pipeline.analyze import Analysis

SC_SERIES_NUMBER = 9903
SC_SERIES_DESCRIPTION = "CDSS EGFR: result image"
SOURCE_IMAGE_PURPOSE = Code("121322", "DCM", "Source image for image processing operation")
NOT_FOR_CLINICAL_USE = "NOT FOR CLINICAL USE: model trained on synthetic data"
RESEARCH_USE = "Decision support, research use only: not for diagnosis"


def result_image(analysis: "Analysis", model: ReportedModel, headers: Sequence[Dataset],
                 equipment: Equipment, version: Version = Version(),
                 key: KeySlice | None = None) -> hd.sc.SCImage:
    """The Secondary Capture of an analysis (ok or not evaluable); ``key`` is the analysed
    tumor's key slice (the SR's)."""
    when = datetime.datetime.now().astimezone()
    source, index, outlines = _shown_slice(analysis, headers, key)
    volume = analysis.volume
    pixels = render(None if index is None else volume.hu[index],
                    volume.spacing_mm[1:] if volume is not None else (1.0, 1.0), outlines,
                    caption(analysis, model, equipment, when))
    image = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=headers[0], pixel_array=pixels, photometric_interpretation="RGB",
        bits_allocated=8, coordinate_system="PATIENT",
        patient_orientation=_orientation(source),
        series_instance_uid=result_series_uid(str(headers[0].SeriesInstanceUID), "SC"),
        series_number=SC_SERIES_NUMBER, sop_instance_uid=hd.UID(),
        instance_number=version.instance_number, manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME, software_versions=equipment.software_version,
        series_description=SC_SERIES_DESCRIPTION, transfer_syntax_uid="1.2.840.10008.1.2.1")
    _describe(image, source, index, volume, when)
    return image


def _shown_slice(analysis: "Analysis", headers: Sequence[Dataset], key: KeySlice | None
                 ) -> tuple[Dataset | None, int | None, list[Outline]]:
    """The CT image shown, its index in the volume and the outlines on it: the key slice of
    an analysed tumor; the middle slice of a volume that was read but not evaluable; none."""
    volume, tumor = analysis.volume, analysis.tumor
    if volume is None:
        return None, None, []
    by_uid = {str(ds.SOPInstanceUID): ds for ds in headers}
    if analysis.status != "ok" or tumor is None:
        index = volume.hu.shape[0] // 2
        return by_uid.get(volume.source_instance_uids[index]), index, []
    if key is None:
        return None, None, []
    outlines = [Outline(key.outline, PRIMARY_RGB)]
    if tumor.others is not None:
        plane = tumor.others[key.index]
        outlines += [Outline(largest_outline(plane == n), OTHER_RGB)
                     for n in np.unique(plane[plane > 0])]
    return key.image, key.index, outlines


def caption(analysis: "Analysis", model: ReportedModel, equipment: Equipment,
             when: datetime.datetime) -> Caption:
    lines = _result_lines(analysis)
    lines.append(f"Model: {model.name} {model.version} (sha256 {model.sha256[:12]})")
    lines.append(f"{MODEL_NAME} {equipment.software_version}, "
                 f"{when.strftime('%Y-%m-%d %H:%M %Z')}")
    return Caption(tuple(lines), NOT_FOR_CLINICAL_USE if model.synthetic else RESEARCH_USE)


def _result_lines(analysis: "Analysis") -> list[str]:
    if analysis.status != "ok":
        return [f"Not evaluable: {analysis.reason.sentence} {analysis.detail or ''}".strip(),
                *_quality(analysis)]
    prediction, tumor = analysis.prediction, analysis.tumor
    lines = [f"AI prediction: {prediction.label}, probability {prediction.probability:.3f} "
             f"(threshold {prediction.threshold:.3f})",
             f"Tumor volume {tumor.volume_mm3 / 1000:.1f} ml, outlined in red on its largest "
             f"axial slice{'; other lesion candidates in yellow' if tumor.other_candidates else ''}"
             f". Lung window W {LUNG_WINDOW[1]:.0f} L {LUNG_WINDOW[0]:.0f}."]
    if analysis.mark is not None:
        who = f" ({analysis.mark.observer})" if analysis.mark.observer else ""
        lines.insert(0, f"Tumor chosen by a radiologist{who}: the lesion at the mark in report "
                        f"{analysis.mark.sr_sop_instance_uid}.")
    if analysis.volume.lossy_compressed:
        lines.append(LOSSY_NOTE.strip())
    return lines + _quality(analysis)


def _quality(analysis: "Analysis") -> list[str]:
    return [f"Quality: {flag.sentence}" for flag in analysis.quality_flags]


def _orientation(source: Dataset | None) -> tuple[str, str]:
    """The row and column directions of the shown CT image as patient orientation letters
    (the closest axis); ("L", "P") for a caption without an image (cleared in ``_describe``)."""
    cosines = source.get("ImageOrientationPatient") if source is not None else None
    if cosines is None or len(cosines) != 6:
        return "L", "P"
    return _letter(np.asarray(cosines[:3], float)), _letter(np.asarray(cosines[3:], float))


def _letter(vector: np.ndarray) -> str:
    axis = int(np.argmax(np.abs(vector)))
    return (("R", "L"), ("A", "P"), ("F", "H"))[axis][int(vector[axis] > 0)]


def _describe(image: hd.sc.SCImage, source: Dataset | None, index: int | None, volume,
              when: datetime.datetime) -> None:
    """What the picture is, and the CT image it was made from."""
    image.ConversionType = "WSD"          # made on a workstation, not digitised
    image.BurnedInAnnotation = "YES"
    image.ContentDate, image.ContentTime = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    if source is None or index is None:
        image.PatientOrientation = ""     # type 2C: a caption has no patient orientation
        image.ImageLaterality = "U"
        image.DerivationDescription = "The analysis result as text; no CT image could be shown"
        return
    image.ImageLaterality = "B"           # an axial chest slice: both lungs
    image.DerivationDescription = (
        f"CT image in a lung window (W {LUNG_WINDOW[1]:.0f}, L {LUNG_WINDOW[0]:.0f}), resampled "
        "to square pixels, with the analysis result burned in")
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    frame = int(volume.source_frame_numbers[index])
    if frame:
        reference.ReferencedFrameNumber = frame
    reference.PurposeOfReferenceCodeSequence = [hd.sr.CodedConcept(*SOURCE_IMAGE_PURPOSE)]
    image.SourceImageSequence = [reference]
