"""The tumor's key slice for the SR's planar ROI: the slice of largest area, its image and
frame, and its outline in DICOM image coordinates."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from pydicom.dataset import Dataset

from cdss_node.dicom.key_slice import key_slice, largest_outline


def _volume(slices: int, frames: bool):
    return SimpleNamespace(
        source_instance_uids=("1.2.3",) * slices if frames else tuple(
            f"1.2.{k}" for k in range(slices)),
        source_frame_numbers=tuple(range(slices, 0, -1)) if frames else (0,) * slices,
        spacing_mm=(2.5, 0.5, 0.75))


def _headers(volume):
    headers = []
    for uid in dict.fromkeys(volume.source_instance_uids):
        ds = Dataset()
        ds.SOPInstanceUID = uid
        headers.append(ds)
    return headers


def test_the_slice_of_largest_area_its_image_and_its_area():
    mask = np.zeros((5, 20, 20), dtype=bool)
    mask[1, 5:8, 5:8] = True
    mask[3, 4:10, 4:9] = True     # 30 pixels: the key slice
    mask[4, 5:9, 5:9] = True
    volume = _volume(5, frames=False)
    key = key_slice(volume, mask, _headers(volume))
    assert key.index == 3 and key.image.SOPInstanceUID == "1.2.3" and key.frame == 0
    assert key.area_mm2 == 30 * 0.5 * 0.75


def test_a_multiframe_ct_names_the_frame():
    mask = np.zeros((4, 10, 10), dtype=bool)
    mask[1, 2:5, 2:5] = True
    volume = _volume(4, frames=True)
    key = key_slice(volume, mask, _headers(volume))
    assert key.image.SOPInstanceUID == "1.2.3" and key.frame == 3


def test_no_key_slice_without_a_tumor():
    volume = _volume(3, frames=False)
    assert key_slice(volume, np.zeros((3, 8, 8), dtype=bool), _headers(volume)) is None


def test_the_outline_is_closed_between_pixel_centres_in_image_coordinates():
    plane = np.zeros((10, 12), dtype=bool)
    plane[2:5, 3:9] = True        # rows 2-4, columns 3-8
    plane[7, 1] = True            # a smaller piece: not the outline
    outline = largest_outline(plane)
    assert np.array_equal(outline[0], outline[-1])
    columns, rows = outline[:, 0], outline[:, 1]
    # pixel centres at index + 0.5; the contour runs halfway to the next pixel
    assert (columns.min(), columns.max()) == (3.0, 9.0)
    assert (rows.min(), rows.max()) == (2.0, 5.0)


def test_a_tumor_at_the_image_edge_still_closes():
    plane = np.zeros((6, 6), dtype=bool)
    plane[0:3, 0:2] = True
    outline = largest_outline(plane)
    assert np.array_equal(outline[0], outline[-1])
    assert outline[:, 0].min() == 0.0 and outline[:, 1].min() == 0.0
