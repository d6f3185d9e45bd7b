"""The analysis as the node runs it: model bundle and segmenter loaded once, then series after
series through the pipeline, each leaving its result files in a folder of its own.

``cdss-node analyze`` and the node's worker process both use ``Analyzer``, so a folder
analysed by hand gives what the node gives.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

import pydicom
import torch

from cdss_node.ahead import AheadOfCompletion
from cdss_node.config import AnalysisSection
from cdss_node.dicom.mark import MarkProblem, read_mark
from cdss_node.dicom.outputs import write_dicom_results
from cdss_node.dicom.sr import ReportedModel, Version
from cdss_node.jobs import AnalysisSettings, Outcome
from cdss_node.logs import get_logger
from cdss_node.model.bundle import ModelBundle, load_bundle
from cdss_node.model.network import uses_image
from cdss_node.pipeline.analyze import NOT_EVALUABLE, Analysis, analyze_series
from cdss_node.pipeline.clinical import SuppliedFacts
from cdss_node.pipeline.mark import Mark
from cdss_node.pipeline.reasons import NotEvaluableReason
from cdss_node.pipeline.segment import DefaultSegmenter, Segmenter
from cdss_node.results import write_result
from cdss_node.uids import node_device_uid

log = get_logger(__name__)


class Analyzer:
    """A loaded model bundle and segmenter."""

    def __init__(self, settings: AnalysisSettings):
        self.settings = settings
        self.bundle: ModelBundle = load_bundle(settings.bundle_path, device=settings.device)
        self.segmenter: Segmenter = make_segmenter(settings)
        self.device_uid = device_uid(settings.data_dir)
        if not uses_image(self.bundle.description.architecture):
            torch.set_num_threads(1)  # a small network: more threads only wait on each other
        self.ahead: AheadOfCompletion[Analysis] = AheadOfCompletion(self._pipeline)
        log.info("analyzer_ready", model_id=self.bundle.model_id, model_sha256=self.bundle.sha256,
                 device=str(self.bundle.device), segmenter=self.segmenter.name,
                 synthetic_model=self.bundle.description.training_data.synthetic)

    def identity(self) -> dict:
        """What /healthz and the status page say of the loaded model (plain, picklable)."""
        return {**asdict(reported_model(self.bundle)), "model_id": self.bundle.model_id,
                "device": str(self.bundle.device), "segmenter": self.segmenter.name,
                "device_uid": self.device_uid,
                "bundle": str(self.bundle.folder)}

    def analyze(self, paths: Sequence[Path], out_dir: Path,
                supplied: SuppliedFacts = SuppliedFacts(), version: Version = Version()
                ) -> Outcome:
        """The series' result files; the pipeline's part is taken from an analysis ahead of
        completion where one was made of exactly these files."""
        analysis = self.ahead.take(paths)        # waits for one that runs, in any case
        if supplied != SuppliedFacts():
            analysis = None                       # made without the facts supplied here
        if analysis is None:
            analysis = self._pipeline(paths, supplied)
        return self._write(analysis, paths, Path(out_dir), version)

    def analyze_requested(self, paths: Sequence[Path], out_dir: Path, version: Version,
                          mark_path: str = "", reason: str = "", detail: str = ""
                          ) -> Outcome:
        """An analysis a request asked for: the tumor at the radiologist's mark in the SR at
        ``mark_path``; or the request's not-evaluable answer when ``reason`` (a
        NotEvaluableReason name) says it cannot be acted on, the mark cannot be used or the
        series has no files. A mark the analysis cannot use (MARK_REASONS) is answered on the
        marking SR's own series, and the series' earlier answer stands (``keeps_answer``)."""
        self.ahead.take(paths)          # one made without the mark is of no use here
        sr = pydicom.dcmread(mark_path) if mark_path else None
        found = read_mark(sr) if sr is not None else None
        mark = found if isinstance(found, Mark) else None
        if reason or not paths or (sr is not None and mark is None):
            analysis = refused_request(reason, detail, found, sr)
        else:
            analysis = self._at_mark(paths, mark)
        log.info("requested_analysis", mark=mark.describe() if mark else None,
                 status=analysis.status, reason_code=analysis.reason and analysis.reason.code)
        if sr is not None and analysis.reason in MARK_REASONS:
            return self._write(replace(analysis, headers=[sr]), [], Path(out_dir), Version(),
                               keeps_answer=bool(paths))
        return self._write(analysis, paths, Path(out_dir), version)

    def _at_mark(self, paths: Sequence[Path], mark: Mark | None) -> Analysis:
        """The pipeline with the tumor at the mark; a patient-coordinate mark in another
        frame of reference than the series' is not on it."""
        frame = mark.frame_of_reference_uid if mark else ""
        if frame:
            header = pydicom.dcmread(paths[0], stop_before_pixels=True,
                                     specific_tags=["FrameOfReferenceUID"])
            if str(header.get("FrameOfReferenceUID", "")) not in ("", frame):
                return Analysis(status=NOT_EVALUABLE, mark=mark,
                                reason=NotEvaluableReason.MARK_WITHOUT_IMAGE,
                                detail=f"the mark's frame of reference {frame} is not the "
                                       "series' one")
        return analyze_series(paths, self.segmenter, self.bundle,
                              attention=self.settings.attention_map, mark=mark)

    def _write(self, analysis: Analysis, paths: Sequence[Path], out_dir: Path,
               version: Version, keeps_answer: bool = False) -> Outcome:
        result_file = write_result(out_dir, analysis, self.bundle)
        dicom_files = write_dicom_results(out_dir, analysis, reported_model(self.bundle),
                                          paths, version, self.device_uid,
                                          with_image=self.settings.result_image and bool(paths))
        return Outcome.of(analysis, result_file, tuple(dicom_files), keeps_answer)

    def _pipeline(self, paths: Sequence[Path], supplied: SuppliedFacts = SuppliedFacts()
                  ) -> Analysis:
        return analyze_series(paths, self.segmenter, self.bundle, supplied,
                              attention=self.settings.attention_map)


# a radiologist's mark the node could not act on: answered on the marking SR's own series
MARK_REASONS = frozenset({NotEvaluableReason.MARK_WITHOUT_IMAGE,
                          NotEvaluableReason.MARK_OUTSIDE_LUNGS,
                          NotEvaluableReason.NO_LESION_AT_MARK,
                          NotEvaluableReason.SERIES_NOT_RETRIEVABLE})


def refused_request(reason: str, detail: str, found, sr) -> Analysis:
    """The not-evaluable answer to a request: ``reason`` if given, else the mark's problem,
    else the series' files being gone; headers from the marking SR (its patient and study),
    so that the answer lands in the same study."""
    if reason:
        coded = NotEvaluableReason[reason]
    elif isinstance(found, MarkProblem):
        coded, detail = found.reason, found.detail
    elif sr is not None and found is None:
        coded, detail = NotEvaluableReason.MARK_WITHOUT_IMAGE, "the SR holds no mark"
    else:
        coded = NotEvaluableReason.SERIES_NOT_RETRIEVABLE
        detail = detail or "the series has no instance in the spool"
    return Analysis(status=NOT_EVALUABLE, reason=coded, detail=detail,
                    headers=[sr] if sr is not None else None,
                    mark=found if isinstance(found, Mark) else None)


def reported_model(bundle: ModelBundle) -> ReportedModel:
    description = bundle.description
    return ReportedModel(name=description.name, version=description.version,
                         sha256=bundle.sha256, synthetic=description.training_data.synthetic)


def device_uid(data_dir: str) -> str | None:
    """The node's Device UID where its data folder exists (the node, or ``cdss-node analyze``
    beside it); else None, and each report gets a new one (no folder is made for it)."""
    return node_device_uid(Path(data_dir)) if data_dir and Path(data_dir).is_dir() else None


def make_segmenter(settings: AnalysisSettings) -> Segmenter:
    if settings.segmenter == "lungtumormask":
        from cdss_node.config import unet_window
        from cdss_node.pipeline.unet_segment import LungTumorMaskSegmenter

        return LungTumorMaskSegmenter(Path(settings.unet_weights), device=settings.device,
                                      roi_size=unet_window(settings.unet_window))
    return DefaultSegmenter()


def series_files(folder: Path) -> list[Path]:
    """The files below ``folder`` that may be DICOM (hidden files and DICOMDIR skipped)."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file()
                  and not p.name.startswith(".") and p.name.upper() != "DICOMDIR")


def analyze_folder(folder: Path, out_dir: Path, section: AnalysisSection,
                   supplied: SuppliedFacts = SuppliedFacts(), **overrides) -> Outcome:
    """``cdss-node analyze``: one folder, one series, result files in ``out_dir``; facts a CT
    header does not carry (family history, stage) may be ``supplied``."""
    files = series_files(folder) if Path(folder).is_dir() else []
    if not files:
        raise FileNotFoundError(f"{folder}: no files to analyse (expected a folder of DICOM "
                                "files of one series)")
    settings = replace(AnalysisSettings.from_config(section), **overrides)
    return Analyzer(settings).analyze(files, out_dir, supplied)
