"""The answer as a Comprehensive 3D SR, TID 1500 Imaging Measurement Report (highdicom).

One measurement group (TID 1411) for the tumor: its tracking identifier and UID, the SEG
segment it refers to, its volume, the EGFR probability and the model that gave it (name,
version, sha256), the EGFR status and the model's intended use as qualitative evaluations, the
107 radiomics values and the clinical inputs (with which of them were imputed). The device
observer is the node. No standard codes exist for EGFR status, the radiomics features or the
reasons: they use the node's private scheme ``99CDSS``.

A group before it (TID 1410), with the same tracking identifier and UID, outlines the tumor on
its key slice (largest axial area) as a closed polyline in that CT image's coordinates, with
the EGFR probability (named with the predicted status), the volume and the area there: OHIF
draws it on the image with those values as its label. Every container is SEPARATE, so that
renderers name each value on its own line.

A series that could not be analysed gets a Basic Diagnostic Imaging Report (TID 2000) instead:
a Summary and a Findings section with the coded reason and a sentence. It is text only: a TID
1500 report with no group a viewer can draw stops OHIF 3.13 with an error.

For a model with an image network, the Grad-CAM of that network (``cdss_node.model.attention``)
is a fractional SEG of its own: the Summary references it (a COMPOSITE item "Model attention
(Grad-CAM)") and says how much of the attention lies inside the tumor, which the volumetric
group also has as a number.

A "Summary" container (DCM 121111) comes right after TID 1500's context rows and before the
Image Library: the impression in one sentence and the intended use. Viewers and ``dsr2html``
render the tree in order, so these are the first lines a radiologist reads, not the end of a
list of 120 values. TID 1500 is extensible; validators note the container as an extension.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import highdicom as hd
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from cdss_node.dicom.key_slice import KeySlice
from cdss_node.dicom.seg import (
    ARTIFICIAL_INTELLIGENCE, LUNG, MANUFACTURER, MODEL_NAME, NEOPLASM, TUMOR_TRACKING_ID,
    Equipment, result_series_uid, segmenter_name_version)
from cdss_node.model.attention import METHOD
from cdss_node.pipeline.analyze import Analysis
from cdss_node.pipeline.reasons import CODING_SCHEME as P
from cdss_node.pipeline.records import EGFR_MUTANT

SR_SERIES_NUMBER = 9902
VOLUME = Code("118565006", "SCT", "Volume")
AREA = Code("42798000", "SCT", "Area")
SUMMARY = Code("121111", "DCM", "Summary")
IMPRESSION = Code("121073", "DCM", "Impression")
NO_UNITS = Code("1", "UCUM", "no units")
PERCENT = Code("%", "UCUM", "%")
PROCESSING_EQUIPMENT = Code("109102", "DCM", "Processing Equipment")
EGFR_STATUS = Code("EGFR-STATUS", P, "EGFR mutation status (predicted)")
INTENDED_USE = Code("INTENDED-USE", P, "Intended use")
ANALYSIS_RESULT = Code("ANALYSIS", P, "Analysis result")
MODEL = Code("MODEL", P, "Model")
DIAGNOSTIC_IMAGING_REPORT = Code("18748-4", "LN", "Diagnostic Imaging Report")
FINDINGS = Code("121070", "DCM", "Findings")
ENGLISH = hd.sr.CodedConcept("en-US", "RFC5646", "English (United States)")
QUALITY_FLAG = Code("QUALITY", P, "Quality flag")
CONTAINS = hd.sr.RelationshipTypeValues.CONTAINS
# SOP Common's Coding Scheme Identification Sequence: what "99CDSS" (PS3.16 8.2) stands for.
PRIVATE_SCHEME = CodingSchemeIdentificationItem(
    P, name="CDSS EGFR node codes (EGFR status, radiomics, clinical inputs, reasons)",
    responsible_organization=MANUFACTURER)
LOSSY_NOTE = (" Computed on lossy-compressed CT images: radiomics and the prediction may differ "
              "from those of the original images.")
ATTENTION = Code("ATTENTION", P, "Model attention (Grad-CAM)")
ATTENTION_INSIDE = Code("ATTENTION-IN-TUMOR", P, "Model attention inside the tumor")
CHOSEN_BY = Code("CHOSEN-BY", P, "Tumor chosen by")
RADIOLOGIST_MARK = Code("MARK", P, "Radiologist's mark")
CLINICAL_UNITS = {"age_years": Code("a", "UCUM", "year"), "height_m": Code("m", "UCUM", "m"),
                  "weight_kg": Code("kg", "UCUM", "kg")}


@dataclass(frozen=True)
class Version:
    """Which analysis of the series this is, and the report it supersedes (named in the
    Predecessor Documents Sequence)."""

    instance_number: int = 1
    previous: Dataset | None = None


@dataclass(frozen=True)
class ReportedModel:
    """The model as the report names it."""

    name: str
    version: str
    sha256: str
    synthetic: bool

    @property
    def caveat(self) -> Code:
        if self.synthetic:
            return Code("SYNTHETIC", P, "Trained on synthetic data; not for clinical use")
        return Code("RESEARCH", P, "Decision support research use; not for diagnosis")


def egfr_report(analysis: Analysis, model: ReportedModel, seg: hd.seg.Segmentation,
                headers: Sequence[Dataset], equipment: Equipment,
                version: Version = Version(), key: KeySlice | None = None,
                attention: hd.seg.Segmentation | None = None) -> hd.sr.Comprehensive3DSR:
    """TID 1500 with two groups on the one tumor, sharing the SEG segment's tracking UID: the
    planar ROI on its key slice (TID 1410) and the volumetric ROI on the SEG (TID 1411). OHIF
    merges groups of one tracking UID into one measurement, which it can draw only when one of
    them has image coordinates (3.13 stops with an error on a group it cannot draw)."""
    tracking = hd.sr.TrackingIdentifier(uid=seg.SegmentSequence[0].TrackingUID,
                                        identifier=TUMOR_TRACKING_ID)
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID,
            segment_number=1, source_series=hd.sr.SourceSeriesForSegmentation(
                analysis.volume.series_uid)),
        finding_type=NEOPLASM, finding_sites=[hd.sr.FindingSite(LUNG)],
        algorithm_id=_algorithm(model),
        measurements=_measurements(analysis, model) + _attention_share(analysis, model),
        qualitative_evaluations=_evaluations(analysis, model))
    prediction = analysis.prediction
    impression = (f"AI prediction: {prediction.label}, probability {prediction.probability:.3f} "
                  f"(threshold {prediction.threshold:.3f}), tumor volume "
                  f"{analysis.tumor.volume_mm3 / 1000:.1f} ml.")
    if analysis.volume.lossy_compressed:
        impression += LOSSY_NOTE
    impression += _quality_note(analysis)
    groups = ([_key_slice_group(analysis, model, key, tracking)] if key else []) + [group]
    summary = _summary(_chosen_note(analysis) + impression, model)
    evidence = [seg, *headers, *_mark_evidence(analysis)]
    summary.ContentSequence.extend(_mark_items(analysis))
    if attention is not None:
        summary.ContentSequence.extend(_attention_items(analysis, attention))
        evidence.insert(1, attention)
    return _document(groups, summary, evidence, headers, equipment, version, key)


def _chosen_note(analysis: Analysis) -> str:
    """The impression's first words when a radiologist's mark chose the tumor."""
    mark = analysis.mark
    if mark is None:
        return ""
    return f"Tumor chosen by a radiologist{f' ({mark.observer})' if mark.observer else ''}. "


def _mark_items(analysis: Analysis) -> list:
    """The Summary's lines on the radiologist's mark: what it was, who made it (PNAME), and
    the marking SR itself (COMPOSITE)."""
    mark = analysis.mark
    if mark is None:
        return []
    who = mark.observer or "a radiologist (the marking SR names no observer)"
    items = [_text(RADIOLOGIST_MARK, f"The tumor analysed is the one {who} marked: "
                   f"{mark.describe()}, in SR {mark.sr_sop_instance_uid}.")]
    if mark.observer:
        items.append(hd.sr.PnameContentItem(name=CHOSEN_BY, value=mark.observer[:64],
                                            relationship_type=CONTAINS))
    items.append(hd.sr.CompositeContentItem(
        name=RADIOLOGIST_MARK, referenced_sop_class_uid=mark.sr_sop_class_uid,
        referenced_sop_instance_uid=mark.sr_sop_instance_uid, relationship_type=CONTAINS))
    return items


def _mark_evidence(analysis: Analysis) -> list[Dataset]:
    """The marking SR among the evidence (same study: Current Requested Procedure Evidence)."""
    mark = analysis.mark
    if mark is None:
        return []
    ds = Dataset()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = mark.study_uid, mark.sr_series_uid
    ds.SOPClassUID, ds.SOPInstanceUID = mark.sr_sop_class_uid, mark.sr_sop_instance_uid
    return [ds]


def _attention_items(analysis: Analysis, attention: hd.seg.Segmentation) -> list:
    """The Summary's lines on the Grad-CAM: a sentence and the reference to its SEG."""
    share = analysis.attention.inside_tumor_share
    return [_text(ATTENTION, f"Where the image network looked: Grad-CAM ({METHOD}), series "
                  f"{attention.SeriesNumber}; {100 * share:.0f} % of it lies inside the tumor."),
            hd.sr.CompositeContentItem(
                name=ATTENTION, referenced_sop_class_uid=attention.SOPClassUID,
                referenced_sop_instance_uid=attention.SOPInstanceUID,
                relationship_type=CONTAINS)]


def _attention_share(analysis: Analysis, model: ReportedModel) -> list[hd.sr.Measurement]:
    if analysis.attention is None:
        return []
    return [hd.sr.Measurement(name=ATTENTION_INSIDE,
                              value=100.0 * analysis.attention.inside_tumor_share, unit=PERCENT,
                              algorithm_id=_algorithm(model))]


def egfr_probability_concept(label: str, marked: bool = False) -> Code:
    """The EGFR probability as the planar ROI names it, the predicted status pre-coordinated in
    the concept: viewers that label an outline with its NUMs' names and values (OHIF) then show
    "AI: EGFR mutant, probability of mutation: 73.40 %", while CODE items are not shown.
    ``marked``: the tumor is the one a radiologist marked, and the label says so ("AI, marked
    tumor: ...")."""
    status = "mutant" if label == EGFR_MUTANT else "wild type"
    if marked:
        return Code("EGFR-PM-MUT" if label == EGFR_MUTANT else "EGFR-PM-WT", P,
                    f"AI, marked tumor: EGFR {status}, probability of mutation")
    return Code("EGFR-P-MUT" if label == EGFR_MUTANT else "EGFR-P-WT", P,
                f"AI: EGFR {status}, probability of mutation")


def _key_slice_group(analysis: Analysis, model: ReportedModel, key: KeySlice,
                     tracking: hd.sr.TrackingIdentifier
                     ) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """TID 1410: the tumor's outline on its key slice; the EGFR probability (in per cent, named
    with the status), the volume and its area there; the status and intended use coded."""
    source = hd.sr.SourceImageForRegion(
        referenced_sop_class_uid=key.image.SOPClassUID,
        referenced_sop_instance_uid=key.image.SOPInstanceUID,
        referenced_frame_numbers=[key.frame] if key.frame else None)
    region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                               graphic_data=key.outline, source_image=source)
    prediction = analysis.prediction
    egfr = hd.sr.Measurement(name=egfr_probability_concept(prediction.label,
                                                           analysis.mark is not None),
                             value=100.0 * prediction.probability, unit=PERCENT,
                             algorithm_id=_algorithm(model))
    volume = _answer(analysis, model)[0]
    area = hd.sr.Measurement(name=AREA, value=key.area_mm2, unit=codes.UCUM.SquareMillimeter,
                             algorithm_id=_segmenter(analysis.tumor.segmenter))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking, referenced_region=region, finding_type=NEOPLASM,
        finding_sites=[hd.sr.FindingSite(LUNG)], algorithm_id=_algorithm(model),
        measurements=[egfr, volume, area], qualitative_evaluations=_status(analysis, model))


def not_evaluable_report(analysis: Analysis, model: ReportedModel, headers: Sequence[Dataset],
                         equipment: Equipment, version: Version = Version()
                         ) -> hd.sr.Comprehensive3DSR:
    """TID 2000: the Summary (the sentence, the intended use), then Findings: the coded reason,
    the quality flags, the model."""
    reason = analysis.reason
    sentence = f"Not evaluable: {reason.sentence} {analysis.detail or ''}".strip()
    findings = hd.sr.ContainerContentItem(name=FINDINGS, relationship_type=CONTAINS)
    findings.ContentSequence = hd.sr.ContentSequence([
        _code(ANALYSIS_RESULT, Code(reason.code, P, reason.meaning)),
        *[_code(QUALITY_FLAG, Code(flag.code, P, flag.meaning))
          for flag in analysis.quality_flags],
        *_mark_items(analysis),
        _text(MODEL, f"{model.name} {model.version} (manifest sha256 {model.sha256})")])
    root = hd.sr.ContainerContentItem(name=DIAGNOSTIC_IMAGING_REPORT, template_id="2000")
    root.ContentSequence = hd.sr.ContentSequence([
        *hd.sr.LanguageOfContentItemAndDescendants(ENGLISH),
        *hd.sr.ObservationContext(observer_device_context=_observer(equipment)),
        _summary(sentence, model), findings])
    _separate(root)
    known = {str(h.SOPInstanceUID) for h in headers}
    evidence = [*headers, *(e for e in _mark_evidence(analysis) if e.SOPInstanceUID not in known)]
    return _sr(root, evidence, headers, equipment, version)


def _quality_note(analysis: Analysis) -> str:
    """The quality flags as sentences for the impression: what to check before trusting it."""
    return "".join(f" Quality: {flag.sentence}" for flag in analysis.quality_flags)


def _flag_evaluations(analysis: Analysis) -> list[hd.sr.QualitativeEvaluation]:
    return [hd.sr.QualitativeEvaluation(QUALITY_FLAG, Code(flag.code, P, flag.meaning))
            for flag in analysis.quality_flags]


def _summary(impression: str, model: ReportedModel) -> hd.sr.ContainerContentItem:
    """The impression and the intended use, to be read first."""
    summary = hd.sr.ContainerContentItem(name=SUMMARY, relationship_type=CONTAINS)
    summary.ContentSequence = hd.sr.ContentSequence([
        _text(IMPRESSION, impression),
        hd.sr.CodeContentItem(name=INTENDED_USE, value=model.caveat, relationship_type=CONTAINS)])
    return summary


def _code(name: Code, value: Code) -> hd.sr.CodeContentItem:
    return hd.sr.CodeContentItem(name=name, value=value, relationship_type=CONTAINS)


def _text(name: Code, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value[:1024], relationship_type=CONTAINS)


def _algorithm(model: ReportedModel) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name=model.name[:64], version=model.version[:64],
                                         parameters=[f"manifest-sha256={model.sha256}"],
                                         family=ARTIFICIAL_INTELLIGENCE)


def _segmenter(segmenter: str) -> hd.sr.AlgorithmIdentification:
    """The segmenter that drew the mask the volume is measured on ("name version")."""
    name, version = segmenter_name_version(segmenter)
    return hd.sr.AlgorithmIdentification(name=name[:64], version=version[:64])


def _answer(analysis: Analysis, model: ReportedModel) -> list[hd.sr.Measurement]:
    """The tumor's volume and the EGFR probability."""
    return [hd.sr.Measurement(name=VOLUME, value=analysis.tumor.volume_mm3,
                              unit=codes.UCUM.CubicMillimeter,
                              algorithm_id=_segmenter(analysis.tumor.segmenter)),
            hd.sr.Measurement(name=codes.DCM.Probability, value=analysis.prediction.probability,
                              unit=NO_UNITS, algorithm_id=_algorithm(model))]


def _measurements(analysis: Analysis, model: ReportedModel) -> list[hd.sr.Measurement]:
    found = _answer(analysis, model)
    found += [hd.sr.Measurement(name=Code(f"RAD{k:03d}", P, name.removeprefix("original_")),
                                value=float(value), unit=NO_UNITS)
              for k, (name, value) in enumerate(analysis.radiomics.as_dict().items(), start=1)]
    raw = analysis.clinical.raw
    found += [hd.sr.Measurement(name=Code(f"CLIN-{name.upper()[:11]}", P, _clinical_name(
        name, analysis.clinical.imputed)), value=float(raw[name]),
        unit=CLINICAL_UNITS.get(name, NO_UNITS)) for name in analysis.clinical.names]
    return found


def _clinical_name(name: str, imputed: Sequence[str]) -> str:
    label = f"Clinical input {name.replace('_', ' ')}"
    return f"{label} (imputed)" if name in imputed else label


def _status(analysis: Analysis, model: ReportedModel) -> list[hd.sr.QualitativeEvaluation]:
    """The predicted EGFR status and the model's intended use."""
    label = analysis.prediction.label
    status = Code("EGFR-MUT" if label == EGFR_MUTANT else "EGFR-WT", P, label)
    return [hd.sr.QualitativeEvaluation(EGFR_STATUS, status),
            hd.sr.QualitativeEvaluation(INTENDED_USE, model.caveat)]


def _evaluations(analysis: Analysis, model: ReportedModel) -> list[hd.sr.QualitativeEvaluation]:
    return [*_status(analysis, model), *_flag_evaluations(analysis)]


def _observer(equipment: Equipment) -> hd.sr.ObserverContext:
    """The node as the device observer (TID 1004)."""
    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=equipment.device_uid or hd.UID(), name=MODEL_NAME, manufacturer_name=MANUFACTURER,
            model_name=MODEL_NAME, serial_number=equipment.device_serial_number))


def _document(groups, summary: hd.sr.ContainerContentItem, evidence: Sequence[Dataset],
              headers: Sequence[Dataset], equipment: Equipment, version: Version,
              key: KeySlice | None = None) -> hd.sr.Comprehensive3DSR:
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=_observer(equipment)),
        procedure_reported=codes.cid100.CTUnspecifiedBodyRegion, imaging_measurements=groups,
        referenced_images=_library_images(headers, key))
    _insert_after_context(report[0], summary)
    _separate(report[0])
    return _sr(report[0], evidence, headers, equipment, version)


def _sr(content: Dataset, evidence: Sequence[Dataset], headers: Sequence[Dataset],
        equipment: Equipment, version: Version) -> hd.sr.Comprehensive3DSR:
    source_series = str(headers[0].SeriesInstanceUID)
    return hd.sr.Comprehensive3DSR(
        evidence=list(evidence), content=content,
        series_instance_uid=result_series_uid(source_series, "SR"),
        series_number=SR_SERIES_NUMBER, series_description="CDSS EGFR: report",
        sop_instance_uid=hd.UID(), instance_number=version.instance_number,
        manufacturer=MANUFACTURER, is_complete=True, coding_schemes=[PRIVATE_SCHEME],
        previous_versions=[version.previous] if version.previous is not None else None,
        contributing_equipment=[_contributing(equipment)])


def _library_images(headers: Sequence[Dataset], key: KeySlice | None) -> list[Dataset] | None:
    """The first CT image and the key slice's for the Image Library, unless the geometry is
    unusable (a series that is not evaluable for that very reason): then the library names no
    image."""
    try:
        hd.sr.ImageLibraryEntryDescriptors(headers[0])
    except (ValueError, TypeError, AttributeError, IndexError):
        return None
    images = list(headers[:1])
    if key is not None and key.image.SOPInstanceUID != headers[0].SOPInstanceUID:
        images.append(key.image)
    return images


def _separate(item: Dataset) -> None:
    """Every container in the tree SEPARATE: its items are not one running sentence."""
    if item.get("ValueType") == "CONTAINER":
        item.ContinuityOfContent = "SEPARATE"
    for child in item.get("ContentSequence", []):
        _separate(child)


def report_summary(report: Dataset) -> list[str]:
    """The lines of the Summary container of a report this module wrote (empty if none)."""
    for item in report.get("ContentSequence", []):
        if _concept(item) == SUMMARY.value:
            return [child.TextValue if child.ValueType == "TEXT"
                    else child.ConceptCodeSequence[0].CodeMeaning
                    for child in item.ContentSequence]
    return []


def _concept(item: Dataset) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeValue)


def _insert_after_context(root: Dataset, item: Dataset) -> None:
    """Put ``item`` after the root's language, observer and procedure rows (TID 1500 rows 2-4)."""
    content = root.ContentSequence
    first = next((k for k, child in enumerate(content) if child.ValueType == "CONTAINER"),
                 len(content))
    content.insert(first, item)


def _contributing(equipment: Equipment) -> hd.ContributingEquipment:
    """The algorithm, in the Contributing Equipment Sequence."""
    return hd.ContributingEquipment(
        manufacturer=MANUFACTURER, manufacturer_model_name=MODEL_NAME,
        purpose_of_reference=PROCESSING_EQUIPMENT, software_versions=equipment.software_version)
