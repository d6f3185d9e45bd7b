"""Tumor segmentation: the interface, and the node's own default segmenter.

The default segmenter needs no trained weights. It finds the lung fields
(:mod:`cdss_node.pipeline.lungs`), the lesion candidates within them (tissue denser than
-650 HU, so ground glass too, on a grid of about 1.5 mm, opened to cut vessels away: 3 mm first,
then 6 and 10 mm for what is still joined to vessels), keeps the plausible ones (size,
roundness, an aerated shell, not as dense as contrast-filled blood) and outlines the largest
of them, the primary tumor, at full resolution. No plausible candidate is "no tumor found".
Measured on real chest CT with inserted lesions in ``bench/segmentation.py``; a U-Net
(LungTumorMask shape) can replace it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import ndimage

from cdss_node.pipeline.lungs import (
    bounding_box, lung_fields, opening, upsample, widen, within)
from cdss_node.pipeline.records import CTVolume, TumorMask

LESION_HU = -650.0          # ground glass and denser tissue may be lesion
PARENCHYMA_HU = -500.0      # aerated lung is below this
VESSEL_OPENINGS_MM = (3.0, 6.0, 10.0)  # openings tried in turn on what is not yet plausible:
                            # each cuts away vessels thinner than twice its radius
SHELL_MM = 3.0              # the shell around a candidate that is looked at
MIN_DIAMETER_MM = 8.0       # candidates smaller than this (equivalent diameter) are dropped
SMALL_DIAMETER_MM = 9.0     # candidates smaller than this must be rounder:
SMALL_MIN_COMPACTNESS = 0.6 # a piece of a vessel junction is often 8 mm and half round
MIN_COMPACTNESS = 0.5       # candidate volume / volume of the sphere around its extent
MIN_PARENCHYMA = 0.5        # share of the shell that must be aerated lung
MAX_MEDIAN_HU = 100.0       # contrast-filled vessels are denser than lung tumors
CANDIDATE_SPACING_MM = 1.5  # candidates are found on a grid about this coarse


def equivalent_diameter_mm(volume_mm3: float) -> float:
    """The diameter of the ball with this volume."""
    return 2 * (3 * volume_mm3 / (4 * np.pi)) ** (1 / 3)


class Segmenter(Protocol):
    name: str
    version: str

    def segment(self, volume: CTVolume) -> TumorMask: ...


@dataclass(frozen=True)
class Candidate:
    label: int
    volume_mm3: float
    compactness: float          # volume / volume of the ball spanned by its largest extent
                                # (less half a voxel: a lesion grazing one more thick slice)
    parenchyma: float           # share of its shell that is aerated lung
    opening_mm: float           # the radius of the opening it survived
    median_hu: float

    @property
    def diameter_mm(self) -> float:
        return equivalent_diameter_mm(self.volume_mm3)

    @property
    def plausible(self) -> bool:
        round_enough = self.compactness >= (
            SMALL_MIN_COMPACTNESS if self.diameter_mm < SMALL_DIAMETER_MM else MIN_COMPACTNESS)
        return (self.diameter_mm >= MIN_DIAMETER_MM and round_enough
                and self.parenchyma >= MIN_PARENCHYMA and self.median_hu <= MAX_MEDIAN_HU)


@dataclass(frozen=True)
class CandidateMap:
    """Candidates on a coarse grid: ``labels`` holds the plausible ones' labels, ``step`` the
    grid's stride; ``candidates`` are all that were measured."""

    labels: np.ndarray
    step: list[int]
    candidates: list[Candidate]

    def full_size(self, candidate: Candidate, shape: tuple[int, ...]) -> np.ndarray:
        return upsample(self.labels == candidate.label, self.step, shape)


class DefaultSegmenter:
    """Lung fields → lesion candidates → primary tumor (the largest plausible candidate) →
    outline. No weights."""

    name = "CDSS default lesion segmenter"
    version = "0.3"

    def segment(self, volume: CTVolume) -> TumorMask:
        lungs = lung_fields(volume.hu, volume.spacing_mm)
        mask = np.zeros(volume.hu.shape, dtype=bool)
        box = bounding_box(lungs)
        plausible = []
        if box is not None:
            hu, lungs = volume.hu[box], lungs[box]
            found = find_candidates(hu, lungs, volume.spacing_mm)
            plausible = [c for c in found.candidates if c.plausible]
            if plausible:
                primary = max(plausible, key=lambda c: c.volume_mm3)
                seed = found.full_size(primary, hu.shape)
                mask[box] = _outline(seed, hu, lungs, volume.spacing_mm, primary.opening_mm)
        return TumorMask(mask=mask, spacing_mm=volume.spacing_mm,
                         segmenter=f"{self.name} {self.version}", candidates=len(plausible))


def find_candidates(hu: np.ndarray, lungs: np.ndarray, spacing_mm: tuple[float, float, float]
                    ) -> CandidateMap:
    """Tissue denser than LESION_HU in the lung fields, on a grid of about
    CANDIDATE_SPACING_MM, opened to cut vessels away: first with the smallest of
    VESSEL_OPENINGS_MM, then what is not plausible (a tumor still joined to vessels) with the
    next larger one, and so on."""
    step = [max(1, round(CANDIDATE_SPACING_MM / s)) for s in spacing_mm]
    coarse = tuple(slice(None, None, k) for k in step)
    spacing = tuple(s * k for s, k in zip(spacing_mm, step))
    hu_c = hu[coarse]
    remaining = (hu_c > LESION_HU) & lungs[coarse]
    plausible_labels = np.zeros(remaining.shape, dtype=np.int32)
    measured: list[Candidate] = []
    offset = 0
    for radius in VESSEL_OPENINGS_MM:
        labels, count = ndimage.label(opening(remaining, radius, spacing))
        found = _measure(labels, hu_c, spacing, radius, offset)
        measured += found
        for candidate in (c for c in found if c.plausible):
            plausible_labels[labels == candidate.label - offset] = candidate.label
        remaining = (labels > 0) & (plausible_labels == 0)
        offset += count
        if not remaining.any():
            break
    return CandidateMap(plausible_labels, step, measured)


def _measure(labels: np.ndarray, hu: np.ndarray, spacing_mm: tuple[float, float, float],
             opening_mm: float, offset: int) -> list[Candidate]:
    """Each labelled piece big enough to matter, numbered from ``offset + 1``."""
    voxel_mm3 = float(np.prod(spacing_mm))
    margin = [int(np.ceil(SHELL_MM / s)) + 1 for s in spacing_mm]
    found = []
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        volume = int(np.count_nonzero(labels[box] == label)) * voxel_mm3
        if equivalent_diameter_mm(volume) < MIN_DIAMETER_MM:
            continue  # measuring the shell of every speck costs time
        wide = widen(box, margin, labels.shape)
        piece = labels[wide] == label
        shell = within(piece, SHELL_MM, spacing_mm) & ~piece
        parenchyma = float(np.mean(hu[wide][shell] < PARENCHYMA_HU)) if shell.any() else 0.0
        length = max((b.stop - b.start - 0.5) * s for b, s in zip(box, spacing_mm))
        found.append(Candidate(offset + label, volume, volume / (np.pi / 6 * length ** 3),
                               parenchyma, opening_mm, float(np.median(hu[wide][piece]))))
    return found


def _outline(seed: np.ndarray, hu: np.ndarray, lungs: np.ndarray,
             spacing_mm: tuple[float, float, float], reach_mm: float) -> np.ndarray:
    """The lesion around an opened candidate: lung-field voxels within ``reach_mm`` (the
    radius of the opening it survived) of it, denser than halfway between the candidate and
    the aerated lung around it, connected to it; worked out in a box around the candidate."""
    margin = [int(np.ceil((reach_mm + SHELL_MM) / s)) + 1 for s in spacing_mm]
    box = bounding_box(seed, margin)
    local, core = hu[box], seed[box]
    near = within(core, reach_mm, spacing_mm)
    around = lungs[box] & ~near & (local < PARENCHYMA_HU)
    background = float(np.median(local[around])) if around.any() else -850.0
    level = (float(np.median(local[core])) + background) / 2
    labels, _ = ndimage.label(near & (local > level) & lungs[box])
    hit = np.unique(labels[core & (labels > 0)])
    outline = np.zeros(seed.shape, dtype=bool)
    outline[box] = np.isin(labels, hit[hit > 0])
    return outline
