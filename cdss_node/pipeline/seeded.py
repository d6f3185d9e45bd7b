"""The tumor a radiologist marked: the lesion candidate at (or nearest to) the mark, outlined
by the node's own method.

The default segmenter's lung fields and candidates (``DefaultSegmenter.look``) are used as they
are, with every measured candidate kept, not only the plausible ones: the radiologist has said
which structure is the tumor, so a candidate the automatic rules passed over (a second, smaller
lesion; one on the pleura) may be chosen (``candidate_at``: a lesion-like candidate within the
mark's reach, half its extent, or LESION_SLACK_MM first; then one containing its centre; then
the nearest, up to NEAR_MARK_MM beyond the reach). It is outlined as the automatic path
outlines its primary tumor, in 3D. A segmenter with a ``segment_at`` method of its own (none yet) is asked instead.
"""

from __future__ import annotations

import numpy as np

from cdss_node.pipeline.lungs import LungFields, within
from cdss_node.pipeline.mark import Seed
from cdss_node.pipeline.reasons import NotEvaluableReason, QualityFlag
from cdss_node.pipeline.records import CTVolume, NotEvaluable, TumorMask
from cdss_node.pipeline.segment import (
    Candidate, CandidateMap, DefaultSegmenter, outline_candidate, candidate_flags)

NEAR_MARK_MM = 10.0     # a candidate this far beyond the mark's reach is still the one it means
INSIDE_MM = 1.5         # a candidate this close to the mark's centre contains it
LESION_SLACK_MM = 5.0   # a lesion-like candidate this close beats another containing the mark
                        # (an arrow's head on a vessel just beside the tumor)
LUNG_REACH_MM = 10.0    # a mark this close to the lung fields points into them (a tumor on the
                        # pleura bulges out of them)


def tumor_at_mark(segmenter, volume: CTVolume, seed: Seed) -> TumorMask:
    """The marked tumor; NotEvaluable when the mark lies outside the lungs or no lesion is
    near it. Lungs not covered gives a TumorMask with that flag, as ``segment`` does."""
    if hasattr(segmenter, "segment_at"):
        return segmenter.segment_at(volume, seed)
    default = segmenter if isinstance(segmenter, DefaultSegmenter) else DefaultSegmenter()
    lungs, flags, found = default.look(volume, keep_measured=True)
    name = f"{default.name} {default.version}"
    if QualityFlag.LUNGS_NOT_COVERED in flags:
        return TumorMask(mask=np.zeros(volume.shape, dtype=bool), spacing_mm=volume.spacing_mm,
                         segmenter=name, candidates=0, flags=tuple(flags),
                         lung_volume_ml=lungs.volume_ml)
    _require_in_lungs(lungs, seed, volume)
    candidate = candidate_at(found, seed, volume.spacing_mm) if found else None
    if candidate is None:
        raise NotEvaluable(NotEvaluableReason.NO_LESION_AT_MARK,
                           f"{name} found no lesion within {seed.reach_mm + NEAR_MARK_MM:.0f} mm "
                           "of the mark")
    outline = outline_candidate(found, candidate, volume, lungs)
    flags += [f for f in candidate_flags([candidate], outline)
              if f is not QualityFlag.SIMILAR_CANDIDATES]
    return TumorMask(mask=outline, spacing_mm=volume.spacing_mm, segmenter=name,
                     candidates=len(found.plausible), flags=tuple(flags),
                     lung_volume_ml=lungs.volume_ml)


def _require_in_lungs(lungs: LungFields, seed: Seed, volume: CTVolume) -> None:
    """The mark's centre within LUNG_REACH_MM of the lung fields."""
    voxel = np.rint(np.asarray(seed.voxel) * np.asarray(volume.spacing_mm)
                    / np.asarray(lungs.spacing_mm)).astype(int)
    voxel = np.clip(voxel, 0, np.asarray(lungs.mask.shape) - 1)
    reach = [int(np.ceil(LUNG_REACH_MM / s)) + 1 for s in lungs.spacing_mm]
    box = tuple(slice(max(v - r, 0), v + r + 1) for v, r in zip(voxel, reach))
    near = within(lungs.mask[box], LUNG_REACH_MM, lungs.spacing_mm)
    if not near[tuple(v - b.start for v, b in zip(voxel, box))]:
        raise NotEvaluable(NotEvaluableReason.MARK_OUTSIDE_LUNGS,
                           f"the mark's centre lies more than {LUNG_REACH_MM:.0f} mm outside "
                           "the lung fields")


def candidate_at(found: CandidateMap, seed: Seed, ct_spacing_mm) -> Candidate | None:
    """The candidate the mark means, of those within its reach plus NEAR_MARK_MM: a plausible
    one within its own reach (at least LESION_SLACK_MM), else any containing its centre, else
    the nearest plausible, else the nearest; None if there is none."""
    spacing = np.asarray(found.spacing_mm)
    centre = np.asarray(seed.voxel) * np.asarray(ct_spacing_mm) / spacing
    distances = _distances(found, centre, seed.reach_mm + NEAR_MARK_MM)
    by_label = {c.label: c for c in found.candidates}
    plausible = {label: d for label, d in distances.items() if by_label[label].plausible}
    tiers = ((plausible, max(LESION_SLACK_MM, seed.reach_mm)), (distances, INSIDE_MM),
             (plausible, np.inf), (distances, np.inf))
    for pool, limit in tiers:
        near = [label for label, d in pool.items() if d <= limit]
        if near:
            return by_label[min(near, key=lambda k: (pool[k], -by_label[k].volume_mm3))]
    return None


def _distances(found: CandidateMap, centre: np.ndarray, radius_mm: float) -> dict[int, float]:
    """The distance (mm) from ``centre`` (candidate grid) to each measured candidate that comes
    within ``radius_mm`` of it."""
    spacing = np.asarray(found.spacing_mm)
    local = centre - np.asarray([b.start for b in found.box])
    half = np.ceil(radius_mm / spacing).astype(int) + 1
    low = np.maximum(np.floor(local).astype(int) - half, 0)
    high = np.minimum(np.ceil(local).astype(int) + half + 1, found.measured.shape)
    if np.any(high <= low):
        return {}
    window = found.measured[tuple(slice(a, b) for a, b in zip(low, high))]
    voxels = np.argwhere(window > 0)
    if not len(voxels):
        return {}
    mm = np.linalg.norm((voxels + low - local) * spacing, axis=1)
    labels = window[tuple(voxels.T)]
    near = mm <= radius_mm
    order = np.lexsort((mm[near], labels[near]))
    unique, first = np.unique(labels[near][order], return_index=True)
    return dict(zip(unique.tolist(), mm[near][order][first].tolist()))
