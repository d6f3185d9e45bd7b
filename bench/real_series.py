"""A real chest CT as a DICOM series, for the speed benches.

PyRadiomics' ``lung2`` (``training.real_ct``, BSD-3; 512 x 512, 0.63 mm pixels, 5 mm slices, a
48 ml tumor with its mask) resampled to 1.25 mm slices (``training.ct_variants.resample``: 241
slices over the same 300 mm), written as CT Image Storage files by the node's own series writer.
Needs ``cdss-train real-ct`` first. The real CT's voxels and tumor mask are kept; its header is
the writer's (synthetic patient and equipment facts).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from cdss_node.dicom.ct_series import write_ct_series
from cdss_node.synthetic.phantom import HU_MAX, HU_MIN, ChestPhantom, PhantomSpec

REAL_SLICE_MM = 1.25


def lung2_series(folder: Path) -> tuple[list[Path], np.ndarray]:
    """The series' files in slice order (written once into ``folder``) and the true tumor
    mask on its grid (z from head to feet, as the files)."""
    hu, tumor, spacing = _lung2_arrays()
    marker = folder.with_name(folder.name + ".complete")
    if not marker.exists():
        started = time.monotonic()
        write_ct_series(_as_phantom(hu, tumor, spacing), folder, uid_seed="bench-lung2")
        marker.touch()
        print(f"wrote lung2 at {REAL_SLICE_MM} mm ({hu.shape[0]} slices) in "
              f"{time.monotonic() - started:.0f} s")
    return sorted(folder.glob("*.dcm")), tumor


def _lung2_arrays() -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    from training import real_ct
    from training.ct_variants import resample, resample_label
    import SimpleITK as sitk

    image, label = real_ct.load("pyrad-lung2")
    spacing = [*image.GetSpacing()[:2], REAL_SLICE_MM]
    label_image = sitk.GetImageFromArray(label.astype(np.uint8))
    label_image.CopyInformation(image)
    hu = sitk.GetArrayFromImage(resample(image, spacing))
    tumor = sitk.GetArrayFromImage(resample_label(label_image, spacing)) > 0
    # SimpleITK's slice 0 is the most caudal (z rises with the index); the writer's is cranial
    hu, tumor = hu[::-1], tumor[::-1]
    hu = np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16)
    return np.ascontiguousarray(hu), np.ascontiguousarray(tumor), \
        (REAL_SLICE_MM, spacing[1], spacing[0])


def _as_phantom(hu: np.ndarray, tumor: np.ndarray, spacing: tuple[float, float, float]
                ) -> ChestPhantom:
    """The writer takes a phantom: this one's voxels are the real CT's (its pixels are square,
    as the writer's are: 0.63 x 0.63 mm)."""
    slices, rows, columns = hu.shape
    spec = PhantomSpec(rows=rows, columns=columns, slices=slices, pixel_spacing_mm=spacing[1],
                       slice_spacing_mm=spacing[0], noise_hu=0.0)
    voxels = np.argwhere(tumor)
    centre = tuple(int(c) for c in voxels[len(voxels) // 2])
    volume = float(np.count_nonzero(tumor)) * spacing[0] * spacing[1] * spacing[2]
    return ChestPhantom(spec, hu, tumor, tumor.copy(), (spacing[0], spacing[1], spacing[1]),
                        centre, volume)
