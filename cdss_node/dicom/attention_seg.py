"""Where the image network looked, as a DICOM Segmentation (highdicom, FRACTIONAL, PROBABILITY)
on the source CT: same study, a series of its own, one segment "Model attention (Grad-CAM)"
whose pixel values are the ensemble's Grad-CAM (0-255 for 0-1), the model as its algorithm.

Frames without attention are left out (``omit_empty_frames``): the map covers the region around
the tumor, and a full stack of 8-bit frames of a 512 x 512 CT would be tens of megabytes.
Explicit VR Little Endian, as every other object of the node, so any peer takes it. No standard
code names a model's attention: the segment uses the node's private scheme ``99CDSS``.
"""

from __future__ import annotations

from typing import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from cdss_node.dicom.seg import (
    ARTIFICIAL_INTELLIGENCE, LUNG, MANUFACTURER, MODEL_NAME, Equipment, frames_in_source_order,
    result_series_uid, source_datasets)
from cdss_node.model.attention import METHOD, AttentionMap
from cdss_node.pipeline.reasons import CODING_SCHEME as P
from cdss_node.pipeline.records import CTVolume

ATTENTION_SERIES_NUMBER = 9904
ATTENTION_LABEL = "Model attention (Grad-CAM)"
ATTENTION_CATEGORY = Code("MODEL-ATTENTION", P, "Model attention")
ATTENTION_TYPE = Code("GRAD-CAM", P, "Grad-CAM attention of the image network")
ATTENTION_COLOR = hd.color.CIELabColor.from_rgb(0, 200, 255)


def attention_segmentation(volume: CTVolume, attention: AttentionMap,
                           headers: Sequence[Dataset], equipment: Equipment,
                           model_name: str, model_version: str, instance_number: int = 1
                           ) -> hd.seg.Segmentation:
    """The attention map as a fractional SEG of the CT series."""
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name[:64], version=model_version[:64], family=ARTIFICIAL_INTELLIGENCE,
        parameters={"method": METHOD, "layer": attention.layer})
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label=ATTENTION_LABEL, display_color=ATTENTION_COLOR,
        segmented_property_category=ATTENTION_CATEGORY, segmented_property_type=ATTENTION_TYPE,
        anatomic_regions=[LUNG], algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm)
    return hd.seg.Segmentation(
        source_images=source_datasets(volume, headers),
        pixel_array=frames_in_source_order(volume, attention.values.astype(np.float32)),
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        segment_descriptions=[segment],
        series_instance_uid=result_series_uid(volume.series_uid, "ATTENTION"),
        series_number=ATTENTION_SERIES_NUMBER,
        series_description="CDSS EGFR: model attention (Grad-CAM)",
        sop_instance_uid=hd.UID(), instance_number=instance_number, manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME, software_versions=equipment.software_version,
        device_serial_number=equipment.device_serial_number, omit_empty_frames=True)
