"""A radiologist's mark on the CT, and where it points on the CT's grid.

A ``Mark`` is what the node read from a viewer's SR (``cdss_node.dicom.mark``): a region or a
point drawn on one CT image (SCOORD, in that image's pixel coordinates: column, row, with
(0, 0) the top left corner of the top left pixel, PS3.3 C.18.6.1.1), or in patient coordinates
(SCOORD3D, LPS mm in the CT's frame of reference). ``seed_of`` turns it into a ``Seed`` on the
volume's grid: the voxel at the mark's centre and how far from it the tumor may begin (half the
mark's extent: a length line drawn across a tumor, an ellipse around it, a point on it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cdss_node.pipeline.reasons import NotEvaluableReason
from cdss_node.pipeline.records import CTVolume, NotEvaluable, require

GRAPHIC_TYPES = ("POINT", "MULTIPOINT", "POLYLINE", "POLYGON", "CIRCLE", "ELLIPSE", "ELLIPSOID")
IMAGE, PATIENT = "image", "patient"
POSITION_TOLERANCE_MM = 2.0   # a SCOORD3D point this far off the scanned range still counts


@dataclass(frozen=True)
class Mark:
    """One mark of a radiologist's SR (the first usable one)."""

    sr_sop_class_uid: str
    sr_sop_instance_uid: str
    sr_series_uid: str
    study_uid: str
    series_uid: str                  # the marked CT series ("" where the SR does not say)
    observer: str                    # the person who marked it ("" where the SR names none)
    graphic_type: str
    points: tuple[tuple[float, ...], ...]   # (column, row) for IMAGE, (x, y, z) for PATIENT
    coordinates: str = IMAGE
    image_uid: str = ""              # the CT image of an IMAGE mark
    frame_number: int = 0            # its frame, in a multi-frame image (0: none)
    frame_of_reference_uid: str = "" # the frame of a PATIENT mark

    def __post_init__(self) -> None:
        require(self.graphic_type in GRAPHIC_TYPES, "graphic_type", " ".join(GRAPHIC_TYPES),
                self.graphic_type)
        require(self.coordinates in (IMAGE, PATIENT), "coordinates", f"{IMAGE} or {PATIENT}",
                self.coordinates)
        width = 2 if self.coordinates == IMAGE else 3
        require(len(self.points) >= 1 and all(len(p) == width and np.all(np.isfinite(p))
                                              for p in self.points),
                "points", f"one or more points of {width} finite numbers", self.points)
        require(self.coordinates == PATIENT or bool(self.image_uid), "image_uid",
                "the marked image's SOP Instance UID", self.image_uid)

    @property
    def centre(self) -> np.ndarray:
        """The mark's centre: a circle's first point, otherwise the mean of its points (a
        closed polyline's repeated last point left out)."""
        points = np.asarray(self.points, dtype=float)
        if self.graphic_type == "CIRCLE":
            return points[0]
        if len(points) > 2 and np.array_equal(points[0], points[-1]):
            points = points[:-1]
        return points.mean(axis=0)

    def describe(self) -> str:
        """One line for the SR and the log."""
        where = (f"on image {self.image_uid}" if self.coordinates == IMAGE
                 else f"at patient position {tuple(round(v, 1) for v in self.centre)} mm")
        return f"{self.graphic_type.lower()} {where}"


@dataclass(frozen=True)
class Seed:
    """Where a mark points on the volume's grid (z, y, x, in voxels) and how far from it, in
    mm, the tumor may begin."""

    voxel: tuple[float, float, float]
    reach_mm: float


def seed_of(mark: Mark, volume: CTVolume) -> Seed:
    """The mark on ``volume``'s grid; NotEvaluable when it does not lie on this series."""
    if mark.coordinates == IMAGE:
        voxel, points = _image_voxels(mark, volume)
    else:
        voxel, points = _patient_voxels(mark, volume)
    spacing = np.asarray(volume.spacing_mm)
    reach = float(np.max(np.linalg.norm((points - voxel) * spacing, axis=1))) if len(
        points) else 0.0
    return Seed(tuple(float(v) for v in voxel), reach)


def _image_voxels(mark: Mark, volume: CTVolume) -> tuple[np.ndarray, np.ndarray]:
    """An image mark: the slice of its image (and frame); (column, row) less the half pixel
    of PS3.3's pixel-corner origin gives (x, y) voxel indices."""
    slices = [k for k, uid in enumerate(volume.source_instance_uids) if uid == mark.image_uid]
    if len(slices) > 1:         # a multi-frame image: its frame must be named
        slices = [k for k in slices if volume.source_frame_numbers[k] == mark.frame_number]
    if len(slices) != 1:
        raise NotEvaluable(NotEvaluableReason.MARK_WITHOUT_IMAGE,
                           f"the marked image {mark.image_uid} (frame {mark.frame_number or '-'}"
                           f") is not one slice of series {volume.series_uid}")
    points = np.asarray(mark.points, dtype=float) - 0.5
    zyx = np.column_stack([np.full(len(points), slices[0]), points[:, 1], points[:, 0]])
    centre = np.array([slices[0], mark.centre[1] - 0.5, mark.centre[0] - 0.5])
    return _inside(centre, volume, "image"), zyx


def _patient_voxels(mark: Mark, volume: CTVolume) -> tuple[np.ndarray, np.ndarray]:
    """A patient-coordinate mark: voxel = direction (origin-relative position) / spacing."""
    matrix = np.asarray(volume.direction, dtype=float)      # rows: x (row), y (col), normal
    relative = np.asarray(mark.points, dtype=float) - np.asarray(volume.origin_mm)
    xyz = (relative @ matrix.T) / np.asarray(volume.spacing_mm[::-1])
    points = xyz[:, ::-1]
    centre_rel = mark.centre - np.asarray(volume.origin_mm)
    centre = ((matrix @ centre_rel) / np.asarray(volume.spacing_mm[::-1]))[::-1]
    return _inside(centre, volume, "patient position"), points


def _inside(voxel: np.ndarray, volume: CTVolume, what: str) -> np.ndarray:
    """The voxel, clipped to the volume when it lies at most POSITION_TOLERANCE_MM off."""
    shape = np.asarray(volume.shape) - 1
    off_mm = np.maximum(np.maximum(-voxel, voxel - shape), 0) * np.asarray(volume.spacing_mm)
    if np.any(off_mm > POSITION_TOLERANCE_MM):
        raise NotEvaluable(NotEvaluableReason.MARK_WITHOUT_IMAGE,
                           f"the mark's {what} lies {float(off_mm.max()):.0f} mm outside the "
                           f"scanned volume of series {volume.series_uid}")
    return np.clip(voxel, 0, shape)
