"""The analysis as the node runs it: model bundle and segmenter loaded once, then series after
series through the pipeline, each leaving its result files in a folder of its own.

``cdss-node analyze`` and the node's worker process both use ``Analyzer``, so a folder
analysed by hand gives what the node gives.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch

from cdss_node.config import AnalysisSection
from cdss_node.logs import get_logger
from cdss_node.model.bundle import ModelBundle, load_bundle
from cdss_node.model.network import uses_image
from cdss_node.pipeline.analyze import Analysis, analyze_series
from cdss_node.pipeline.clinical import SuppliedFacts
from cdss_node.pipeline.segment import DefaultSegmenter, Segmenter
from cdss_node.results import write_result

log = get_logger(__name__)

DEFAULT_BUNDLE = Path(__file__).resolve().parent / "model" / "default_bundle"


@dataclass(frozen=True)
class AnalysisSettings:
    """What an analysis process needs to know; picklable, for the worker process."""

    bundle: str = ""
    segmenter: str = "default"
    unet_weights: str = ""
    device: str = "auto"

    @classmethod
    def from_config(cls, section: AnalysisSection) -> "AnalysisSettings":
        return cls(bundle=section.bundle, segmenter=section.segmenter,
                   unet_weights=section.unet_weights, device=section.device)

    @property
    def bundle_path(self) -> Path:
        return Path(self.bundle) if self.bundle else DEFAULT_BUNDLE


@dataclass(frozen=True)
class Outcome:
    """What the index and the log need to know of one analysis."""

    status: str
    reason_code: str | None
    reason: str | None
    probability: float | None
    label: str | None
    result_file: str

    def summary(self) -> str:
        """One line for a person."""
        if self.status == "ok":
            return (f"ok: {self.label} (probability {self.probability:.3f}); "
                    f"{self.result_file}")
        return f"not evaluable: {self.reason}; {self.result_file}"

    @classmethod
    def of(cls, analysis: Analysis, result_file: Path) -> "Outcome":
        p, r = analysis.prediction, analysis.reason
        reason = f"{r.code} {r.meaning}: {analysis.detail}" if r else None
        return cls(status=analysis.status, reason_code=r.code if r else None, reason=reason,
                   probability=p.probability if p else None, label=p.label if p else None,
                   result_file=str(result_file))


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
                supplied: SuppliedFacts = SuppliedFacts()) -> Outcome:
        analysis = analyze_series(paths, self.segmenter, self.bundle, supplied)
        return Outcome.of(analysis, write_result(out_dir, analysis, self.bundle))


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
