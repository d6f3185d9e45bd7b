"""The tumor's key slice: the axial slice where its outline is largest, the CT image (and frame)
it lies on, and the outline there as a closed polyline in image coordinates, for a planar ROI
(TID 1410) that viewers which draw only image coordinates (OHIF) can show."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import contourpy
import numpy as np
from pydicom.dataset import Dataset

from cdss_node.pipeline.records import CTVolume


@dataclass(frozen=True)
class KeySlice:
    index: int                     # the slice in the volume's order
    image: Dataset                 # the CT image's header
    frame: int                     # 1-based frame of a multi-frame CT, else 0
    outline: np.ndarray            # (n, 2) column, row; first point repeated last
    area_mm2: float                # the tumor's area on this slice


def key_slice(volume: CTVolume, mask: np.ndarray, headers: Sequence[Dataset]) -> KeySlice | None:
    """The slice of largest tumor area; None for an empty mask."""
    areas = mask.reshape(mask.shape[0], -1).sum(axis=1)
    if not areas.any():
        return None
    index = int(np.argmax(areas))
    by_uid = {str(ds.SOPInstanceUID): ds for ds in headers}
    outline = largest_outline(mask[index])
    return KeySlice(index=index, image=by_uid[volume.source_instance_uids[index]],
                    frame=int(volume.source_frame_numbers[index]), outline=outline,
                    area_mm2=float(areas[index] * volume.spacing_mm[1] * volume.spacing_mm[2]))


def largest_outline(plane: np.ndarray) -> np.ndarray:
    """The longest contour of a 2D mask at half height (marching squares between pixel
    centres; a single pixel gives a diamond), closed (first point repeated last), as (column,
    row) in DICOM image coordinates: the top left corner of the top left pixel is (0, 0), so a
    pixel centre is at index + 0.5."""
    padded = np.pad(plane.astype(np.float64), 1)  # a tumor at the image's edge still closes
    line = max(contourpy.contour_generator(z=padded).lines(0.5), key=len)
    return (line - 1 + 0.5).astype(np.float32)
