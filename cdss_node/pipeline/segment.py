"""Tumor segmentation: the interface, and the node's own default segmenter.

The default segmenter needs no trained weights. It finds the lung fields
(:mod:`cdss_node.pipeline.lungs`, on a 3 mm grid), the lesion candidates within them (tissue
denser than -650 HU, so ground glass too, but not contrast-filled blood, on a 1.5 mm grid
whatever the series, opened to cut vessels away: 3 mm first, then 6 and 10 mm for what is still
joined to vessels, each opening flattened along z by the half slice that partial volume blurs
a lesion over), keeps the
plausible ones (size, roundness, an aerated shell, not as dense as contrast-filled blood) and
outlines the largest of them, the primary tumor, at full resolution; up to
MAX_OTHER_CANDIDATES other plausible ones are outlined too, for the radiologist to see.

The scan's edges are not lung: the part of a candidate's shell beyond the first or last slice
or the axial field of view counts as not aerated, so a vessel cut off by the edge, whose
continuation cannot be seen, is not taken for a round lesion, while a tumor that merely touches
the edge still is (and is flagged as truncated). Too little lung in the scan is its own
answer (``QualityFlag.LUNGS_NOT_COVERED``), not "no tumor found". Measured on real chest CT
and its acquisition variants in ``bench/segmentation.py``; a U-Net (LungTumorMask shape) can
replace it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
from scipy import ndimage

from cdss_node.pipeline.lungs import (
    WORK_SPACING_MM, LungFields, bounding_box, find_lungs, opening, to_grid, to_shape, widen,
    within)
from cdss_node.pipeline.reasons import QualityFlag
from cdss_node.pipeline.records import CTVolume, TumorMask

LESION_HU = -650.0          # ground glass and denser tissue may be lesion
PARENCHYMA_HU = -500.0      # aerated lung is below this
VESSEL_OPENINGS_MM = (3.0, 6.0, 10.0)  # openings tried in turn on what is not yet plausible:
                            # each cuts away vessels thinner than twice its radius
SHELL_MM = 3.0              # the shell around a candidate that is looked at
MIN_DIAMETER_MM = 8.0       # candidates smaller than this (equivalent diameter) are dropped
MASS_DIAMETER_MM = 30.0     # a lesion this large is a mass, not a nodule (Fleischner)
SMALL_DIAMETER_MM = 9.0     # candidates smaller than this must be rounder:
SMALL_MIN_COMPACTNESS = 0.6 # a piece of a vessel junction is often 8 mm and half round
MIN_COMPACTNESS = 0.5       # candidate volume / volume of the sphere around its extent
MIN_PARENCHYMA = 0.5        # share of the shell that must be aerated lung
MAX_MEDIAN_HU = 100.0       # contrast-filled vessels are denser than lung tumors
IN_PLANE_STRETCH = 1e3      # z measured this much longer: the opening stays in each slice
BLOOD_POOL_HU = 150.0       # contrast-filled blood (150-400 HU) is not lesion tissue: a tumor
                            # touching an enhanced hilar vessel parts from it before the openings
CANDIDATE_SPACING_MM = 1.5  # candidates are found on a grid this fine, whatever the series
UNSEEN_HU = 0.0             # beyond the scan's edges: no evidence of aerated lung
MIN_COVERED_LUNG_ML = 250.0 # less lung than this in the scan: the lungs are not covered
PLAUSIBLE_LUNG_ML = (1500.0, 9000.0)  # both lungs wholly in the scan (adult, inspiration)
SIMILAR_SIZE = 0.5          # another candidate at least this share of the primary's volume
MAX_OTHER_CANDIDATES = 3    # outlined beside the primary, for the radiologist to see


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
    parenchyma: float | None    # share of its lesion's shell that is aerated lung (measured
                                # only for candidates of plausible form: ``_parenchyma``)
    opening_mm: float           # the radius of the opening it survived
    median_hu: float

    @property
    def diameter_mm(self) -> float:
        return equivalent_diameter_mm(self.volume_mm3)

    @property
    def plausible_form(self) -> bool:
        """Big enough, round enough, not as dense as contrast-filled blood."""
        round_enough = self.compactness >= (
            SMALL_MIN_COMPACTNESS if self.diameter_mm < SMALL_DIAMETER_MM else MIN_COMPACTNESS)
        return (self.diameter_mm >= MIN_DIAMETER_MM and round_enough
                and self.median_hu <= MAX_MEDIAN_HU)

    @property
    def plausible(self) -> bool:
        """Of plausible form, and in aerated lung."""
        return (self.plausible_form and self.parenchyma is not None
                and self.parenchyma >= MIN_PARENCHYMA)


@dataclass(frozen=True)
class CandidateMap:
    """Candidates on the candidate grid (``spacing_mm``) within ``box`` of it: ``labels``
    holds the plausible ones' labels; ``candidates`` are all that were measured."""

    labels: np.ndarray
    box: tuple[slice, ...]
    spacing_mm: tuple[float, float, float]
    grid_shape: tuple[int, ...]
    candidates: list[Candidate]
    measured: np.ndarray | None = None   # every measured candidate's label (``keep_measured``)

    @property
    def plausible(self) -> list[Candidate]:
        """The plausible candidates, largest first: the first is the primary tumor."""
        return sorted((c for c in self.candidates if c.plausible),
                      key=lambda c: c.volume_mm3, reverse=True)

    def on_grid(self, candidate: Candidate) -> np.ndarray:
        """The candidate on the whole candidate grid."""
        labels = self.labels if candidate.plausible or self.measured is None else self.measured
        grid = np.zeros(self.grid_shape, dtype=bool)
        grid[self.box] = labels == candidate.label
        return grid


class DefaultSegmenter:
    """Lung fields → lesion candidates → primary tumor (the largest plausible candidate) →
    outline. No weights."""

    name = "CDSS default lesion segmenter"
    version = "0.5"

    def segment(self, volume: CTVolume) -> TumorMask:
        lungs, flags, found = self.look(volume)
        if QualityFlag.LUNGS_NOT_COVERED in flags:
            return _no_tumor(volume, self, flags, lungs)
        plausible = found.plausible if found else []
        outlines = [outline_candidate(found, c, volume, lungs)
                    for c in plausible[:1 + MAX_OTHER_CANDIDATES]]
        if not outlines:
            return _no_tumor(volume, self, flags, lungs)
        flags += candidate_flags(plausible, outlines[0])
        others = np.zeros(volume.hu.shape, dtype=np.uint8)
        for number, other in enumerate(outlines[1:], start=1):
            others[other & ~outlines[0] & (others == 0)] = number
        return TumorMask(mask=outlines[0], spacing_mm=volume.spacing_mm,
                         segmenter=f"{self.name} {self.version}", candidates=len(plausible),
                         flags=tuple(flags), lung_volume_ml=lungs.volume_ml,
                         others=others if len(outlines) > 1 else None)

    def look(self, volume: CTVolume, keep_measured: bool = False
             ) -> tuple[LungFields, list[QualityFlag], CandidateMap | None]:
        """The lung fields, what they say of the scan, and the lesion candidates in them
        (none looked for when the lungs are not covered)."""
        fine, fine_mm = to_grid(volume.hu, volume.spacing_mm, CANDIDATE_SPACING_MM)
        lungs = find_lungs(*to_grid(fine, fine_mm, WORK_SPACING_MM))
        flags = lung_flags(lungs)
        if QualityFlag.LUNGS_NOT_COVERED in flags:
            return lungs, flags, None
        return lungs, flags, find_candidates(
            fine, to_shape(lungs.mask, lungs.spacing_mm, fine_mm, fine.shape), fine_mm,
            volume.spacing_mm[0], keep_measured)


def _no_tumor(volume: CTVolume, segmenter, flags, lungs: LungFields) -> TumorMask:
    return TumorMask(mask=np.zeros(volume.hu.shape, dtype=bool), spacing_mm=volume.spacing_mm,
                     segmenter=f"{segmenter.name} {segmenter.version}", candidates=0,
                     flags=tuple(flags), lung_volume_ml=lungs.volume_ml)


def lung_flags(lungs: LungFields) -> list[QualityFlag]:
    """What the lung fields say of the scan: too little lung to look in; lungs cut by the
    scan's range or field of view; or whole lungs of an implausible volume."""
    if lungs.volume_ml < MIN_COVERED_LUNG_ML:
        return [QualityFlag.LUNGS_NOT_COVERED]
    if lungs.cut_by_scan:
        return [QualityFlag.LUNGS_INCOMPLETE]
    low, high = PLAUSIBLE_LUNG_ML
    return [] if low <= lungs.volume_ml <= high else [QualityFlag.LUNG_VOLUME_IMPLAUSIBLE]


def candidate_flags(plausible: list[Candidate], primary: np.ndarray) -> list[QualityFlag]:
    """The primary's outline cut by the scan's edge (first or last slice, field of view);
    another candidate of similar size."""
    faces = [primary[0], primary[-1], primary[:, 0], primary[:, -1], primary[:, :, 0],
             primary[:, :, -1]]
    flags = [QualityFlag.TUMOR_TRUNCATED] if any(face.any() for face in faces) else []
    if any(c.volume_mm3 >= SIMILAR_SIZE * plausible[0].volume_mm3 for c in plausible[1:]):
        flags.append(QualityFlag.SIMILAR_CANDIDATES)
    return flags


def outline_candidate(found: CandidateMap, candidate: Candidate, volume: CTVolume,
                       lungs: LungFields) -> np.ndarray:
    """The candidate outlined on the CT's own grid, in a box around it."""
    shape, spacing = volume.hu.shape, volume.spacing_mm
    grid = found.on_grid(candidate)
    on_ct = tuple(slice(int(b.start * f / s), int(np.ceil(b.stop * f / s)) + 1)
                  for b, f, s in zip(bounding_box(grid), found.spacing_mm, spacing))
    margin = [int(np.ceil((candidate.opening_mm + SHELL_MM) / s)) + 1 for s in spacing]
    box = widen(on_ct, margin, shape)
    seed = to_shape(grid, found.spacing_mm, spacing, shape, box)
    lungs_here = to_shape(lungs.mask, lungs.spacing_mm, spacing, shape, box)
    outline = np.zeros(shape, dtype=bool)
    outline[box] = _outline(seed, volume.hu[box], lungs_here, spacing, candidate.opening_mm)
    return outline


def find_candidates(hu: np.ndarray, lungs: np.ndarray, spacing_mm: tuple[float, float, float],
                    slice_mm: float, keep_measured: bool = False) -> CandidateMap | None:
    """Tissue denser than LESION_HU (and not blood pool) in the lung fields (on the candidate
    grid), opened to cut vessels away: first with the smallest of VESSEL_OPENINGS_MM, then
    what is not plausible (a tumor still joined to vessels) with the next larger one, and so
    on; each opening as thick along z as the series' slices (``slice_mm``) resolve
    (``vessel_opening``). Worked out in the lungs' box, widened by the shell so that only the
    scan's edges clip a shell. ``keep_measured``: also map every measured candidate (the last
    opening's piece where openings overlap), for a mark to choose from."""
    margin = [int(np.ceil(SHELL_MM / s)) + 1 for s in spacing_mm]
    box = bounding_box(lungs, margin)
    if box is None:
        return None
    hu_c = hu[box]
    remaining = (hu_c > LESION_HU) & (hu_c <= BLOOD_POOL_HU) & lungs[box]
    plausible_labels = np.zeros(remaining.shape, dtype=np.int32)
    measured_labels = np.zeros(remaining.shape, dtype=np.int32) if keep_measured else None
    measured: list[Candidate] = []
    offset = 0
    for radius in VESSEL_OPENINGS_MM:
        labels, count = ndimage.label(vessel_opening(remaining, radius, spacing_mm, slice_mm))
        found = _measure(labels, hu_c, lungs[box], spacing_mm, radius, offset)
        measured += found
        if measured_labels is not None:
            _map_measured(measured_labels, labels, found, offset, count)
        for candidate in (c for c in found if c.plausible):
            plausible_labels[labels == candidate.label - offset] = candidate.label
        remaining = (labels > 0) & (plausible_labels == 0)
        offset += count
        if not remaining.any():
            break
    return CandidateMap(plausible_labels, box, spacing_mm, hu.shape, measured, measured_labels)


def _map_measured(into: np.ndarray, labels: np.ndarray, found: list[Candidate], offset: int,
                  count: int) -> None:
    """Write the measured candidates' labels (offset) into ``into``, one pass."""
    lut = np.zeros(count + 1, dtype=np.int32)
    for candidate in found:
        lut[candidate.label - offset] = candidate.label
    ids = lut[labels]
    into[ids > 0] = ids[ids > 0]


def vessel_opening(mask: np.ndarray, radius_mm: float, spacing_mm: tuple[float, float, float],
                   slice_mm: float) -> np.ndarray:
    """An opening with an ellipsoid: ``radius_mm`` in the axial plane, less half a slice
    along z, where partial volume blurs a lesion's top and bottom over half a slice (a 10 mm
    nodule on 5 mm slices is dense on fewer mm of z than across); in-plane only when no
    thickness is left."""
    z_radius = radius_mm - slice_mm / 2
    stretch = radius_mm / z_radius if z_radius > spacing_mm[0] / 2 else IN_PLANE_STRETCH
    return opening(mask, radius_mm, (spacing_mm[0] * stretch, *spacing_mm[1:]))


def _measure(labels: np.ndarray, hu: np.ndarray, lungs: np.ndarray,
             spacing_mm: tuple[float, float, float], opening_mm: float, offset: int
             ) -> list[Candidate]:
    """Each labelled piece big enough to matter, numbered from ``offset + 1``."""
    voxel_mm3 = float(np.prod(spacing_mm))
    found = []
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        piece = labels[box] == label
        volume = int(np.count_nonzero(piece)) * voxel_mm3
        if equivalent_diameter_mm(volume) < MIN_DIAMETER_MM:
            continue  # measuring the shell of every speck costs time
        length = max((b.stop - b.start - 0.5) * s for b, s in zip(box, spacing_mm))
        candidate = Candidate(offset + label, volume, volume / (np.pi / 6 * length ** 3), None,
                              opening_mm, float(np.median(hu[box][piece])))
        if candidate.plausible_form:  # only then look at its shell (the costly part)
            candidate = replace(candidate, parenchyma=_parenchyma(
                labels, box, label, hu, lungs, spacing_mm, opening_mm, candidate.diameter_mm))
        found.append(candidate)
    return found


def _parenchyma(labels, box, label, hu, lungs, spacing_mm, opening_mm, diameter_mm
                ) -> float:
    """The share of aerated lung in the shell around the candidate; beyond the scan's edges
    the shell counts as not aerated (no evidence of lung). A nodule's shell is taken around
    its opened core, as it lies in the lung. A mass (MASS_DIAMETER_MM and more, the
    radiological line between nodule and mass) fills its part of the lobe and abuts pleura,
    mediastinum or chest wall broadly: its shell is taken around its outline (spiculae and a
    ground-glass rim included) and only where it lies in the lung fields."""
    mass = diameter_mm >= MASS_DIAMETER_MM
    reach = opening_mm + 3 * SHELL_MM if mass else SHELL_MM
    margin = [int(np.ceil(reach / s)) + 1 for s in spacing_mm]
    wide = widen(box, margin, labels.shape)
    clipped = [(m - (b.start - w.start), m - (w.stop - b.stop))
               for b, w, m in zip(box, wide, margin)]
    lesion = np.pad(labels[wide] == label, clipped)
    local = np.pad(hu[wide], clipped, constant_values=UNSEEN_HU)
    looked_at = np.ones(lesion.shape, dtype=bool)
    if mass:
        seen_lungs = np.pad(lungs[wide], clipped, constant_values=False)
        lesion |= _outline(lesion, local, seen_lungs, spacing_mm, opening_mm)
        looked_at = np.pad(lungs[wide], clipped, constant_values=True)
    shell = within(lesion, SHELL_MM, spacing_mm) & ~lesion & looked_at
    return float(np.mean(local[shell] < PARENCHYMA_HU)) if shell.any() else 0.0


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
