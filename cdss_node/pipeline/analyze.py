"""One CT series from files to an EGFR prediction: the paper's pipeline, stage by stage.

``load_volume → segment → radiomics / clinical / tumor crop → predict_egfr``, and for a model
with an image network ``explain_egfr`` (Grad-CAM: where that network looked). The tumor crop
(the CNN's input: VOI window and histogram flattening, ``ct_tumor_crop``) is made only for a
model with an image network.
Each stage is timed. A series the node cannot analyse (a defect of the series, or no tumor
found) ends as ``not_evaluable`` with its coded reason; anything else that goes wrong raises.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from cdss_node.logs import get_logger
from cdss_node.model.bundle import ModelBundle
from cdss_node.model.network import uses_image
from cdss_node.model.attention import AttentionMap
from cdss_node.model.predict import explain_egfr, predict_egfr
from cdss_node.pipeline.clinical import SuppliedFacts, clinical_vector
from cdss_node.pipeline.crop import ct_tumor_crop
from cdss_node.pipeline.load import load_series
from cdss_node.pipeline.mark import Mark, seed_of
from cdss_node.pipeline.radiomics import extract_radiomics
from cdss_node.pipeline.reasons import NotEvaluableReason, QualityFlag
from cdss_node.pipeline.records import (
    ClinicalVector,
    CTVolume,
    EgfrPrediction,
    NotEvaluable,
    RadiomicsFeatures,
    TumorCrop,
    TumorMask,
    require,
)
from cdss_node.pipeline.seeded import tumor_at_mark
from cdss_node.pipeline.segment import Segmenter

log = get_logger(__name__)

OK, NOT_EVALUABLE = "ok", "not_evaluable"


@dataclass(frozen=True)
class Analysis:
    """What the pipeline made of one series; the fields after ``status`` are filled as far as
    the pipeline got."""

    status: str                                   # ok | not_evaluable
    reason: NotEvaluableReason | None = None
    detail: str | None = None
    volume: CTVolume | None = None
    tumor: TumorMask | None = None
    radiomics: RadiomicsFeatures | None = None
    clinical: ClinicalVector | None = None
    crop: TumorCrop | None = None
    prediction: EgfrPrediction | None = None
    attention: AttentionMap | None = None         # image networks only
    headers: list | None = None                   # the series' headers (pydicom, no pixels)
    mark: Mark | None = None                      # the radiologist's mark that chose the tumor
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def quality_flags(self) -> tuple[QualityFlag, ...]:
        """The segmenter's quality flags (none before segmentation)."""
        return self.tumor.flags if self.tumor is not None else ()

    def __post_init__(self) -> None:
        require(self.status in (OK, NOT_EVALUABLE), "status", f"{OK} or {NOT_EVALUABLE}",
                self.status)
        if self.status == OK:
            require(self.prediction is not None, "prediction", "an EgfrPrediction when ok",
                    None)
        else:
            require(self.reason is not None, "reason", "a coded reason when not evaluable",
                    None)


class StageClock:
    """Seconds per stage, in the order the stages ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 4)


def analyze_series(paths: Sequence[Path], segmenter: Segmenter, bundle: ModelBundle,
                   supplied: SuppliedFacts = SuppliedFacts(), attention: bool = True,
                   mark: Mark | None = None) -> Analysis:
    """Run the pipeline on the files of one series; ``attention``: the Grad-CAM too, where the
    model has an image network; ``mark``: the tumor is the one a radiologist marked
    (``pipeline.seeded``), not the segmenter's choice."""
    clock, found = StageClock(), {"mark": mark}
    try:
        _run(paths, segmenter, bundle, supplied, clock, found, attention)
    except NotEvaluable as rejected:
        return Analysis(status=NOT_EVALUABLE, reason=rejected.reason, detail=rejected.detail,
                        stage_seconds=clock.seconds, **found)
    return Analysis(status=OK, stage_seconds=clock.seconds, **found)


def _run(paths: Sequence[Path], segmenter: Segmenter, bundle: ModelBundle,
         supplied: SuppliedFacts, clock: StageClock, found: dict, attention: bool = True
         ) -> None:
    """The stages; each record is put into ``found`` as soon as it exists."""
    with clock.stage("load"):
        volume, found["headers"] = load_series(paths)
        found["volume"] = volume
    with clock.stage("segment"):
        tumor = found["tumor"] = _segment(segmenter, volume, found["mark"])
    if QualityFlag.LUNGS_NOT_COVERED in tumor.flags:
        raise NotEvaluable(NotEvaluableReason.LUNGS_NOT_COVERED,
                           f"{segmenter.name} {segmenter.version} found "
                           f"{tumor.lung_volume_ml or 0:.0f} ml of lung in the scan")
    if not tumor.found:
        raise NotEvaluable(NotEvaluableReason.NO_TUMOR_FOUND,
                           f"{segmenter.name} {segmenter.version} found no primary lung tumor "
                           f"among {tumor.candidates} candidates")
    with clock.stage("radiomics"):
        found["radiomics"] = extract_radiomics(volume, tumor)
    with clock.stage("clinical"):
        found["clinical"] = clinical_vector(volume.header, bundle.description.clinical.scaling,
                                            supplied)
    crop = None
    if uses_image(bundle.description.architecture):
        with clock.stage("crop"):
            crop = found["crop"] = ct_tumor_crop(volume, tumor)
    with clock.stage("predict"):
        found["prediction"] = predict_egfr(bundle, crop, found["radiomics"], found["clinical"])
    if crop is not None and attention:
        with clock.stage("attention"):
            found["attention"] = _attention(bundle, crop, found, tumor)


def _segment(segmenter: Segmenter, volume: CTVolume, mark: Mark | None) -> TumorMask:
    if mark is None:
        return segmenter.segment(volume)
    return tumor_at_mark(segmenter, volume, seed_of(mark, volume))


def _attention(bundle: ModelBundle, crop: TumorCrop, found: dict, tumor: TumorMask
               ) -> AttentionMap | None:
    """The Grad-CAM; an explanation that fails is logged and left out, and the prediction it
    would explain is kept."""
    try:
        return explain_egfr(bundle, crop, found["radiomics"], found["clinical"], tumor)
    except (RuntimeError, ValueError) as error:
        log.warning("attention_failed", error=repr(error))
        return None
