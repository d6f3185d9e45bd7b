"""The analysis as the node runs it: model bundle and segmenter loaded once, then series after
series through the pipeline, each leaving its result files in a folder of its own.

``cdss-node analyze`` and the node's worker process both use ``Analyzer``, so a folder
analysed by hand gives what the node gives.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Sequence

import pydicom
import torch
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from cdss_node.config import AnalysisSection
from cdss_node.jobs import AnalysisSettings, Outcome
from cdss_node.dicom.seg import Equipment, source_datasets, tumor_segmentation
from cdss_node.dicom.sr import ReportedModel, Version, egfr_report, not_evaluable_report
from cdss_node.logs import get_logger
from cdss_node.model.bundle import ModelBundle, load_bundle
from cdss_node.model.network import uses_image
from cdss_node.pipeline.analyze import Analysis, analyze_series
from cdss_node.pipeline.clinical import SuppliedFacts
from cdss_node.pipeline.segment import DefaultSegmenter, Segmenter
from cdss_node.results import write_result

log = get_logger(__name__)

SEG_FILE, SR_FILE = "seg.dcm", "sr.dcm"


class Analyzer:
    """A loaded model bundle and segmenter."""

    def __init__(self, settings: AnalysisSettings):
        self.settings = settings
        self.bundle: ModelBundle = load_bundle(settings.bundle_path, device=settings.device)
        self.segmenter: Segmenter = make_segmenter(settings)
        if not uses_image(self.bundle.description.architecture):
            torch.set_num_threads(1)  # a small network: more threads only wait on each other
        log.info("analyzer_ready", model_id=self.bundle.model_id, model_sha256=self.bundle.sha256,
                 device=str(self.bundle.device), segmenter=self.segmenter.name,
                 synthetic_model=self.bundle.description.training_data.synthetic)

    def analyze(self, paths: Sequence[Path], out_dir: Path,
                supplied: SuppliedFacts = SuppliedFacts(), version: Version = Version()
                ) -> Outcome:
        analysis = analyze_series(paths, self.segmenter, self.bundle, supplied)
        result_file = write_result(out_dir, analysis, self.bundle)
        dicom_files = write_dicom_results(Path(out_dir), analysis, self.bundle, paths, version)
        return Outcome.of(analysis, result_file, tuple(dicom_files))


def write_dicom_results(out_dir: Path, analysis: Analysis, bundle: ModelBundle,
                        paths: Sequence[Path], version: Version = Version()) -> list[Path]:
    """``seg.dcm`` and ``sr.dcm`` (an analysed tumor), or the not-evaluable ``sr.dcm``."""
    headers = series_headers(paths)
    if not headers:
        log.warning("no_dicom_report", reason="no readable DICOM header in the series")
        return []
    equipment = Equipment(software_version=_version())
    model = ReportedModel(name=bundle.description.name, version=bundle.description.version,
                          sha256=bundle.sha256, synthetic=bundle.description.training_data.synthetic)
    if analysis.status != "ok":
        report = not_evaluable_report(analysis, model, headers, equipment, version)
        return [_save(report, out_dir, SR_FILE)]
    seg = tumor_segmentation(analysis.volume, analysis.tumor, headers, equipment,
                             version.instance_number)
    report = egfr_report(analysis, model, seg, source_datasets(analysis.volume, headers),
                         equipment, version)
    return [_save(seg, out_dir, SEG_FILE), _save(report, out_dir, SR_FILE)]


def series_headers(paths: Sequence[Path]) -> list[Dataset]:
    """The readable headers of the most frequent series among ``paths``."""
    headers = []
    for path in paths:
        try:
            headers.append(pydicom.dcmread(path, stop_before_pixels=True))
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
    series = Counter(str(ds.get("SeriesInstanceUID", "")) for ds in headers).most_common(1)
    return [ds for ds in headers if series and str(ds.get("SeriesInstanceUID", "")) == series[0][0]]


def _save(dataset: Dataset, out_dir: Path, name: str) -> Path:
    path = out_dir / name
    partial = out_dir / f".{name}.partial"
    dataset.save_as(partial, enforce_file_format=True)
    os.replace(partial, path)
    return path


def _version() -> str:
    try:
        return metadata.version("cdss-node")
    except metadata.PackageNotFoundError:
        return "unknown"


def make_segmenter(settings: AnalysisSettings) -> Segmenter:
    if settings.segmenter == "lungtumormask":
        from cdss_node.pipeline.unet_segment import LungTumorMaskSegmenter

        return LungTumorMaskSegmenter(Path(settings.unet_weights), device=settings.device)
    return DefaultSegmenter()


def series_files(folder: Path) -> list[Path]:
    """The files below ``folder`` that may be DICOM (hidden files and DICOMDIR skipped)."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file()
                  and not p.name.startswith(".") and p.name.upper() != "DICOMDIR")


def analyze_folder(folder: Path, out_dir: Path, section: AnalysisSection, **overrides: str
                   ) -> Outcome:
    """``cdss-node analyze``: one folder, one series, result files in ``out_dir``."""
    files = series_files(folder) if Path(folder).is_dir() else []
    if not files:
        raise FileNotFoundError(f"{folder}: no files to analyse (expected a folder of DICOM "
                                "files of one series)")
    settings = replace(AnalysisSettings.from_config(section), **overrides)
    return Analyzer(settings).analyze(files, out_dir)
