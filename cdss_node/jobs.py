"""What passes between the node and its analysis process: the settings the process starts
with, a request per series and the outcome it answers. Plain, picklable records, so that the
node's own process never imports torch or the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cdss_node.config import AnalysisSection, OutputsSection
from cdss_node.model.installed import active_bundle

if TYPE_CHECKING:
    from cdss_node.pipeline.analyze import Analysis

DEFAULT_BUNDLE = Path(__file__).resolve().parent / "model" / "default_bundle"
# the DICOM results beside result.json: Segmentation, Structured Report, Secondary Capture
SEG_FILE, SR_FILE, SC_FILE = "seg.dcm", "sr.dcm", "sc.dcm"
ATTENTION_FILE = "attention.dcm"


@dataclass(frozen=True)
class AnalysisSettings:
    """What an analysis process needs to know."""

    bundle: str = ""
    segmenter: str = "default"
    unet_weights: str = ""
    unet_window: str = "48x64x64"
    device: str = "auto"
    data_dir: str = ""         # where installed models are (cdss_node.model.installed)
    result_image: bool = True  # [outputs] result_image: write sc.dcm too
    attention_map: bool = True  # [outputs] attention_map: Grad-CAM (image networks only)

    @classmethod
    def from_config(cls, section: AnalysisSection, data_dir: str = "",
                    outputs: OutputsSection = OutputsSection()) -> "AnalysisSettings":
        return cls(bundle=section.bundle, segmenter=section.segmenter,
                   unet_weights=section.unet_weights, unet_window=section.unet_window,
                   device=section.device, data_dir=data_dir, result_image=outputs.result_image,
                   attention_map=outputs.attention_map)

    @property
    def bundle_path(self) -> Path:
        """[analysis] bundle; else the active installed model; else the built-in default."""
        if self.bundle:
            return Path(self.bundle)
        active = active_bundle(self.data_dir) if self.data_dir else None
        return active or DEFAULT_BUNDLE


@dataclass(frozen=True)
class AnalysisRequest:
    """One series: its files and the folder for its result files."""

    paths: tuple[str, ...]
    out_dir: str
    generation: int = 1        # the analysis of the series this is (1, 2, ...)
    previous_sr: str = ""      # the SR of the last earlier analysis, superseded by this one
    mark: str = ""             # a radiologist's SR whose mark chooses the tumor
    reason: str = ""           # a NotEvaluableReason name: the request cannot be acted on
    detail: str = ""           # ... and why


@dataclass(frozen=True)
class AheadRequest:
    """A series whose association ended: analyse its files ahead of completion (no answer;
    the job of the series takes the result if its files are still these)."""

    paths: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    """What the index and the log need to know of one analysis."""

    status: str
    reason_code: str | None
    reason: str | None
    probability: float | None
    label: str | None
    result_file: str
    dicom_files: tuple[str, ...] = ()   # seg.dcm, sr.dcm (or the not-evaluable sr.dcm), sc.dcm
    keeps_answer: bool = False  # a radiologist's mark not used: the series' earlier answer stands

    def summary(self) -> str:
        """One line for a person."""
        if self.status == "ok":
            return (f"ok: {self.label} (probability {self.probability:.3f}); "
                    f"{self.result_file}")
        return f"not evaluable: {self.reason}; {self.result_file}"

    @classmethod
    def of(cls, analysis: "Analysis", result_file: Path,
           dicom_files: tuple[Path, ...] = (), keeps_answer: bool = False) -> "Outcome":
        p, r = analysis.prediction, analysis.reason
        reason = f"{r.code} {r.meaning}: {analysis.detail}" if r else None
        return cls(status=analysis.status, reason_code=r.code if r else None, reason=reason,
                   probability=p.probability if p else None, label=p.label if p else None,
                   result_file=str(result_file), dicom_files=tuple(map(str, dicom_files)),
                   keeps_answer=keeps_answer)
