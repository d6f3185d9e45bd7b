"""Radiomics as in the paper: PyRadiomics' 107 default "original" features of the tumor.

Extraction runs on a crop around the mask, which gives the same values as the whole volume
(PyRadiomics itself only looks at the mask's bounding box plus ``padDistance`` voxels) in a
fraction of the time; a test checks the equality.
"""

from __future__ import annotations

import logging

import numpy as np
import SimpleITK as sitk
from radiomics import featureextractor
from scipy import ndimage

from cdss_node.pipeline.records import CTVolume, RadiomicsFeatures, TumorMask

FEATURE_COUNT = 107
CROP_MARGIN_VOXELS = 10   # more than PyRadiomics' padDistance (5)
logging.getLogger("radiomics").setLevel(logging.ERROR)  # it warns of its own defaults


def extract_radiomics(volume: CTVolume, tumor: TumorMask, crop: bool = True
                      ) -> RadiomicsFeatures:
    if not tumor.found:
        raise ValueError("tumor: expected a found tumor, found an empty mask")
    hu, mask = volume.hu, tumor.mask
    if crop:
        box = _box_with_margin(mask, CROP_MARGIN_VOXELS)
        hu, mask = hu[box], mask[box]
    result = _extractor().execute(_image(hu, volume.spacing_mm),
                                  _image(mask.astype(np.uint8), volume.spacing_mm))
    names = tuple(k for k in result if k.startswith("original_"))
    values = np.array([float(result[k]) for k in names], dtype=np.float64)
    return RadiomicsFeatures(names=names, values=values)


def _extractor() -> featureextractor.RadiomicsFeatureExtractor:
    extractor = featureextractor.RadiomicsFeatureExtractor()  # defaults: all original classes
    extractor.settings["additionalInfo"] = False
    return extractor


def _image(array: np.ndarray, spacing_mm: tuple[float, float, float]) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing_mm)))  # ITK order: x, y, z
    return image


def _box_with_margin(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    return tuple(slice(max(b.start - margin, 0), min(b.stop + margin, n))
                 for b, n in zip(box, mask.shape))
