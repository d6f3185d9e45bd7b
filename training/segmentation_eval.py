"""Measure a segmenter on hybrid cases and real CTs: detection and Dice by lesion kind.

A case is detected when the segmenter's mask holds at least ``DETECTED_FRACTION`` of the
lesion's voxels and at least half of the mask lies on the lesion (so an outline that runs off
along a vessel counts as found, one of the wrong structure does not). A missed case has Dice 0.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import SimpleITK as sitk

from cdss_node.pipeline.reasons import QualityFlag
from cdss_node.pipeline.records import CTVolume, HeaderFacts
from cdss_node.pipeline.segment import Segmenter
from training.hybrid_lesions import KINDS, Host, insert
from training.real_ct import arrays

DETECTED_FRACTION = 0.1
DIAMETERS_MM = (6.0, 10.0, 20.0, 30.0, 45.0, 60.0)
SLICES_MM = (1.0, 5.0)


@dataclass(frozen=True)
class CaseResult:
    kind: str
    diameter_mm: float
    slice_mm: float
    detected: bool
    dice: float
    seconds: float
    found_ml: float
    true_ml: float
    candidates: int          # what the segmenter considered (the U-Net: its components)


def volume_of(hu: np.ndarray, spacing_mm: tuple[float, float, float]) -> CTVolume:
    """A CTVolume around an array (axial, identity direction), for the segmenters."""
    n = hu.shape[0]
    return CTVolume(hu=hu.astype(np.float32, copy=False), spacing_mm=spacing_mm,
                    origin_mm=(0.0, 0.0, 0.0), direction=((1, 0, 0), (0, 1, 0), (0, 0, 1)),
                    source_instance_uids=("1.2",) * n, source_frame_numbers=(0,) * n,
                    study_uid="1.2", series_uid="1.2.3", window=None, header=HeaderFacts())


def dice(found: np.ndarray, truth: np.ndarray) -> float:
    total = int(found.sum()) + int(truth.sum())
    return 2.0 * int((found & truth).sum()) / total if total else 1.0


def detected(found: np.ndarray, truth: np.ndarray) -> bool:
    overlap = int((found & truth).sum())
    return overlap >= DETECTED_FRACTION * truth.sum() and overlap >= 0.5 * found.sum() > 0


def evaluate(segmenter: Segmenter, host: Host, kind: str, diameter_mm: float, seed: int
             ) -> CaseResult:
    hu, lesion = insert(host, kind, diameter_mm, seed)
    started = time.perf_counter()
    tumor = segmenter.segment(volume_of(hu, host.spacing_mm))
    seconds = time.perf_counter() - started
    found = tumor.mask
    hit = detected(found, lesion.mask)
    ml = float(np.prod(host.spacing_mm)) / 1000.0
    return CaseResult(kind, diameter_mm, host.spacing_mm[0], hit,
                      dice(found, lesion.mask) if hit else 0.0, seconds,
                      float(found.sum()) * ml, float(lesion.mask.sum()) * ml, tumor.candidates)


def hybrid_cases(hosts: dict[float, Host], kinds: Iterable[str] = KINDS,
                 diameters: Iterable[float] = DIAMETERS_MM) -> Iterator[tuple]:
    """(host, kind, diameter, seed) for every combination; the seed names the case."""
    seed = 0
    for slice_mm, host in hosts.items():
        for kind in kinds:
            for diameter in diameters:
                seed += 1
                yield host, kind, diameter, seed


def summary_rows(results: list[CaseResult], min_diameter_mm: float = 10.0) -> list[tuple]:
    """(kind, cases, detection %, median Dice) for lesions of at least ``min_diameter_mm``."""
    rows = []
    for kind in dict.fromkeys(r.kind for r in results):
        chosen = [r for r in results if r.kind == kind and r.diameter_mm >= min_diameter_mm]
        if chosen:
            rows.append((kind, len(chosen), 100.0 * sum(r.detected for r in chosen) / len(chosen),
                         statistics.median(r.dice for r in chosen)))
    return rows


@dataclass(frozen=True)
class VariantResult:
    """A segmenter on one acquisition variant of a real CT (``training.ct_variants``)."""

    case: str
    variant: str
    shape: tuple[int, ...]
    outcome: str             # "found", "MISSED", "no tumor", "FALSE TUMOR" or a coded reason
    dice: float | None       # against the label carried through the variant (None: no mask)
    found_ml: float
    flags: tuple[str, ...]   # the quality flags' codes
    seconds: float

    @property
    def right(self) -> bool:
        return self.outcome in ("found", "no tumor")


def score_variant(segmenter: Segmenter, case, variant: str) -> VariantResult:
    """Segment ``case`` (already varied) and score it: a mask by detection and Dice, a region
    by whether at least half the found tumor lies in it, a lesion-free CT by finding nothing
    (or refusing with a coded reason, which counts as no false tumor)."""
    hu, spacing = arrays(case.image)
    started = time.perf_counter()
    tumor = segmenter.segment(volume_of(hu, spacing))
    seconds = time.perf_counter() - started
    found, ml = tumor.mask, float(tumor.mask.sum() * np.prod(spacing) / 1000.0)
    truth = None if case.label is None else sitk.GetArrayFromImage(case.label) > 0
    score = None
    if truth is None:
        outcome = "no tumor" if not found.any() else "FALSE TUMOR"
    elif case.region:
        hit = found.any() and (found & truth).sum() >= 0.5 * found.sum()
        outcome = "found" if hit else "MISSED"
    else:
        hit = detected(found, truth)
        outcome, score = ("found" if hit else "MISSED"), (dice(found, truth) if hit else 0.0)
    if QualityFlag.LUNGS_NOT_COVERED in tumor.flags:   # refused: never a tumor
        outcome = f"{outcome} (lungs not covered)"
    return VariantResult(case.name, variant, hu.shape, outcome, score, ml,
                         tuple(flag.code for flag in tumor.flags), seconds)
