"""The tumor as a DICOM Segmentation (highdicom, BINARY) on the source CT: same study, a new
series, one segment per tumor with the codes of the design, and the segmenter that drew it as
the segment's algorithm. Only the frames that hold a segment are written
(``omit_empty_frames=True``): each frame names its source slice and carries its position, and
OHIF 3 draws the segment on the right slice (``tests/integration/test_ohif_viewer.py``), while
a SEG of every slice of a 512 x 512 x 240 CT is 16 MB, and 1-2 s of writing and sending.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import highdicom as hd
import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sr.coding import Code
from pynetdicom.sop_class import SegmentationStorage
from scipy import ndimage

from cdss_node.pipeline.records import CTVolume, TumorMask
from cdss_node.uids import result_series_uid  # noqa: F401 (sr, result_image import it here)

MORPHOLOGICALLY_ABNORMAL_STRUCTURE = Code("49755003", "SCT", "Morphologically abnormal structure")
NEOPLASM = Code("108369006", "SCT", "Neoplasm")
LUNG = Code("39607008", "SCT", "Lung")
LESION = Code("52988006", "SCT", "Lesion")
ARTIFICIAL_INTELLIGENCE = Code("123110", "DCM", "Artificial Intelligence")
MANUFACTURER, MODEL_NAME = "CDSS", "CDSS EGFR node"
SEG_SERIES_NUMBER = 9901
TUMOR_TRACKING_ID = "Primary lung tumor 1"
PRIMARY_LABEL = "Primary lung tumor (AI)"
OTHER_LABEL = "Other lesion candidate {} (AI)"
# Recommended display colours: the primary tumor red, the other candidates yellow, so that a
# viewer draws them apart and not in its default colour.
PRIMARY_COLOR = hd.color.CIELabColor.from_rgb(230, 40, 40)
OTHER_COLOR = hd.color.CIELabColor.from_rgb(240, 200, 0)


@dataclass(frozen=True)
class Equipment:
    """The node as the equipment that made an object."""

    software_version: str
    device_serial_number: str = "0"
    device_uid: str | None = None    # the node's (cdss_node.uids.node_device_uid); None: a new one


def source_datasets(volume: CTVolume, headers: Sequence[Dataset]) -> list[Dataset]:
    """The CT headers in the volume's slice order (one per slice; a multi-frame once)."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in headers}
    ordered = [by_uid[uid] for uid in dict.fromkeys(volume.source_instance_uids)]
    return ordered


def frames_in_source_order(volume: CTVolume, mask: np.ndarray) -> np.ndarray:
    """The mask's slices in the order of the source frames (multi-frame CT: frame order)."""
    if not any(volume.source_frame_numbers):
        return mask
    return mask[np.argsort(volume.source_frame_numbers)]


def segmenter_name_version(segmenter: str) -> tuple[str, str]:
    """A ``TumorMask.segmenter`` ("name version") as the algorithm identification's name and
    version (a name without a version gets "unknown")."""
    name, _, version = segmenter.rpartition(" ")
    return (name, version) if name else (segmenter, "unknown")


def tumor_segmentation(volume: CTVolume, tumor: TumorMask, headers: Sequence[Dataset],
                       equipment: Equipment, instance_number: int = 1) -> hd.seg.Segmentation:
    name, version = segmenter_name_version(tumor.segmenter)
    algorithm = hd.AlgorithmIdentificationSequence(name=name, version=version,
                                                   family=ARTIFICIAL_INTELLIGENCE)
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label=PRIMARY_LABEL, display_color=PRIMARY_COLOR,
        segmented_property_category=MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        segmented_property_type=NEOPLASM, anatomic_regions=[LUNG],
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm, tracking_uid=hd.UID(), tracking_id=TUMOR_TRACKING_ID)
    return hd.seg.Segmentation(
        source_images=source_datasets(volume, headers),
        pixel_array=frames_in_source_order(volume, segment_labels(tumor)),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment, *_other_candidates(tumor, algorithm)],
        series_instance_uid=result_series_uid(volume.series_uid, "SEG"),
        series_number=SEG_SERIES_NUMBER, series_description="CDSS EGFR: lung tumor segmentation",
        sop_instance_uid=hd.UID(), instance_number=instance_number, manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=equipment.software_version,
        device_serial_number=equipment.device_serial_number, omit_empty_frames=True)


def segment_labels(tumor: TumorMask) -> np.ndarray:
    """Segment number per voxel: 1 the primary tumor, 2.. the other candidates (which do not
    overlap it), 0 none; the others are written only within their box."""
    labels = tumor.mask.astype(np.uint8)
    if tumor.other_candidates:
        box = ndimage.find_objects((tumor.others > 0).view(np.uint8))[0]
        others = tumor.others[box]
        np.copyto(labels[box], others + 1, where=others > 0)
    return labels


def _other_candidates(tumor: TumorMask, algorithm) -> list[hd.seg.SegmentDescription]:
    """Segments 2.. for the other plausible lesion candidates the segmenter weighed (the primary
    is the largest), so that the radiologist sees them; a lesion (SCT 52988006), not called a
    neoplasm."""
    return [hd.seg.SegmentDescription(
        segment_number=number + 1, segment_label=OTHER_LABEL.format(number),
        display_color=OTHER_COLOR,
        segmented_property_category=MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        segmented_property_type=LESION, anatomic_regions=[LUNG],
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm, tracking_uid=hd.UID(),
        tracking_id=f"Other lesion candidate {number}")
        for number in range(1, tumor.other_candidates + 1)]


def split_segmentations(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """``paths`` as (the other DICOM files, the Segmentation objects); unreadable files are
    left out."""
    others, segmentations = [], []
    for path in paths:
        try:
            sop_class = dcmread(path, stop_before_pixels=True,
                                specific_tags=["SOPClassUID"]).SOPClassUID
        except (InvalidDicomError, OSError, AttributeError):
            continue
        (segmentations if sop_class == SegmentationStorage else others).append(path)
    return others, segmentations


def read_segment_mask(path: Path, slice_uids: Sequence[str]) -> np.ndarray:
    """All segments of a SEG on the given source slices, in their order (bool z, y, x)."""
    seg = hd.seg.segread(path)
    frames = seg.get_pixels_by_source_instance(list(slice_uids), combine_segments=True,
                                               ignore_spatial_locations=True)
    return np.asarray(frames) > 0
