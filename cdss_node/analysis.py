"""The analysis as the node runs it: model bundle and segmenter loaded once, then series after
series through the pipeline, each leaving its result files in a folder of its own.

``cdss-node analyze`` and the node's worker process both use ``Analyzer``, so a folder
analysed by hand gives what the node gives.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

import torch

from cdss_node.ahead import AheadOfCompletion
from cdss_node.config import AnalysisSection
from cdss_node.dicom.outputs import write_dicom_results
from cdss_node.dicom.sr import ReportedModel, Version
from cdss_node.jobs import AnalysisSettings, Outcome
from cdss_node.logs import get_logger
from cdss_node.model.bundle import ModelBundle, load_bundle
from cdss_node.model.network import uses_image
from cdss_node.pipeline.analyze import Analysis, analyze_series
from cdss_node.pipeline.clinical import SuppliedFacts
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
        result_file = write_result(out_dir, analysis, self.bundle)
        dicom_files = write_dicom_results(Path(out_dir), analysis, reported_model(self.bundle),
                                          paths, version, self.device_uid,
                                          with_image=self.settings.result_image)
        return Outcome.of(analysis, result_file, tuple(dicom_files))

    def _pipeline(self, paths: Sequence[Path], supplied: SuppliedFacts = SuppliedFacts()
                  ) -> Analysis:
        return analyze_series(paths, self.segmenter, self.bundle, supplied,
                              attention=self.settings.attention_map)


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
