"""``load_volume``: the files of one CT series → a ``CTVolume`` in Hounsfield units.

Classic CT Image Storage (one slice per file) and the multi-frame Enhanced / Legacy Converted
Enhanced CT objects, in any transfer syntax pydicom's installed decoders read. Slices are sorted
by position along the slice normal, so any orientation and any file order work. A series that
cannot be analysed raises ``NotEvaluable`` with a coded reason; it never crashes the caller.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from cdss_node.pipeline.header import header_facts, lossy_compressed, voi_window
from cdss_node.pipeline.reasons import NotEvaluableReason as Reason
from cdss_node.pipeline.records import CTVolume, NotEvaluable

CT_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.2",      # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.1",    # Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.2",    # Legacy Converted Enhanced CT Image Storage
})
MIN_SLICES = 20
MAX_GAP_RATIO = 1.5     # a step this many times the median spacing is a missing slice
MAX_TILT = 0.02         # in-plane shift per mm along the normal (about 1 degree)
ORIENTATION_TOL = 1e-3
MATRIX_SIZES = (16, 4096)   # rows and columns the node analyses (the NIfTI mask needs < 32768)


@dataclass(frozen=True)
class Frame:
    """One slice: where it is and how to get its Hounsfield units."""

    dataset: Dataset
    index: int | None           # frame index in a multi-frame object, None for a classic one
    uid: str
    position: np.ndarray        # Image Position (Patient), mm
    orientation: np.ndarray     # Image Orientation (Patient): row and column cosines
    pixel_spacing: tuple[float, float]
    size: tuple[int, int]       # Rows, Columns
    slope: float
    intercept: float

    def __post_init__(self) -> None:
        """Geometry that cannot place the slice raises ValueError (NE007 in ``_frames``); a
        modality LUT that cannot give HU raises NotEvaluable NE009."""
        _require(self.position.shape == (3,) and bool(np.all(np.isfinite(self.position))),
                 "Image Position (Patient)", "3 finite numbers", self.position)
        _require(self.orientation.shape == (6,) and _orthonormal(self.orientation),
                 "Image Orientation (Patient)", "two orthogonal unit vectors", self.orientation)
        _require(all(np.isfinite(v) and v > 0 for v in self.pixel_spacing), "Pixel Spacing",
                 "2 positive numbers", self.pixel_spacing)
        if not (np.isfinite(self.slope) and self.slope != 0 and np.isfinite(self.intercept)):
            raise NotEvaluable(Reason.UNREADABLE, f"image {self.uid}: Rescale Slope "
                               f"{self.slope} / Intercept {self.intercept} give no HU")

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.orientation[:3], self.orientation[3:])


def _require(ok: bool, name: str, expected: str, found: object) -> None:
    if not ok:
        raise ValueError(f"{name}: expected {expected}, found {found}")


def _orthonormal(orientation: np.ndarray) -> bool:
    """Row and column cosines of unit length and orthogonal, within what ``CTVolume`` allows."""
    if not np.all(np.isfinite(orientation)):
        return False
    row, col = orientation[:3], orientation[3:]
    return bool(abs(row @ row - 1) <= ORIENTATION_TOL and abs(col @ col - 1) <= ORIENTATION_TOL
                and abs(row @ col) <= ORIENTATION_TOL)


def _rescale(value: object, default: float) -> float:
    """Rescale Slope / Intercept; absent or empty gives ``default`` (0 stays 0)."""
    return default if value is None or value == "" else float(value)  # type: ignore[arg-type]


def load_volume(paths: Sequence[Path], min_slices: int = MIN_SLICES) -> CTVolume:
    return load_series(paths, min_slices)[0]


def load_series(paths: Sequence[Path], min_slices: int = MIN_SLICES
                ) -> tuple[CTVolume, list[Dataset]]:
    """The volume, and the headers of its files (read once, their pixel data let go), for
    the SEG and SR that refer to them."""
    datasets = [_read(path) for path in paths]
    _check_series(datasets)
    images = [ds for ds in datasets if not _is_localizer(ds)]
    if not images:
        raise NotEvaluable(Reason.LOCALIZER, f"all {len(datasets)} images are localizers")
    frames = [frame for ds in images for frame in _frames(ds)]
    if not frames:  # a multi-frame object of Number of Frames 0
        raise NotEvaluable(Reason.TOO_FEW_SLICES, "no frames")
    frames, normal, spacing = _geometry(frames, min_slices)
    volume = _volume(datasets, images, frames, normal, spacing)
    for ds in datasets:             # localizers too: only headers are kept
        _let_go_of_pixels(ds)
    return volume, datasets


def _volume(datasets: list[Dataset], images: list[Dataset], frames: list[Frame],
            normal: np.ndarray, spacing: float) -> CTVolume:
    return CTVolume(
        hu=_hounsfield(frames),
        spacing_mm=(spacing, *frames[0].pixel_spacing),
        origin_mm=tuple(float(v) for v in frames[0].position),
        direction=(tuple(frames[0].orientation[:3]), tuple(frames[0].orientation[3:]),
                   tuple(normal)),
        source_instance_uids=tuple(f.uid for f in frames),
        source_frame_numbers=tuple(0 if f.index is None else f.index + 1 for f in frames),
        study_uid=str(datasets[0].StudyInstanceUID),
        series_uid=str(datasets[0].SeriesInstanceUID),
        window=voi_window(datasets[0]),
        header=header_facts(datasets[0]),
        lossy_compressed=any(map(lossy_compressed, images)),
    )


def _read(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises many types for broken files
        raise NotEvaluable(Reason.UNREADABLE, f"{Path(path).name}: {exc}") from exc


def _check_series(datasets: list[Dataset]) -> None:
    if not datasets:
        raise NotEvaluable(Reason.TOO_FEW_SLICES, "no images")
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(series) > 1:
        raise NotEvaluable(Reason.MULTIPLE_SERIES, f"{len(series)} Series Instance UIDs")
    for ds in datasets:
        if ds.get("Modality") != "CT" or ds.get("SOPClassUID") not in CT_SOP_CLASSES:
            raise NotEvaluable(Reason.NOT_CT, f"modality {ds.get('Modality')!r}, "
                               f"SOP class {ds.get('SOPClassUID')}")


def _is_localizer(ds: Dataset) -> bool:
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    return "LOCALIZER" in image_type


# ---------------------------------------------------------------- frames


def _frames(ds: Dataset) -> list[Frame]:
    try:
        if "NumberOfFrames" in ds and "PerFrameFunctionalGroupsSequence" in ds:
            return [_enhanced_frame(ds, i) for i in range(int(ds.NumberOfFrames))]
        return [_classic_frame(ds)]
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise NotEvaluable(Reason.INCONSISTENT_GEOMETRY,
                           f"image {ds.get('SOPInstanceUID')}: geometry unreadable ({exc})"
                           ) from exc


def _classic_frame(ds: Dataset) -> Frame:
    return Frame(
        dataset=ds, index=None, uid=str(ds.SOPInstanceUID),
        position=np.asarray(ds.ImagePositionPatient, dtype=float),
        orientation=np.asarray(ds.ImageOrientationPatient, dtype=float),
        pixel_spacing=(float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])),
        size=(int(ds.Rows), int(ds.Columns)),
        slope=_rescale(ds.get("RescaleSlope"), 1.0),
        intercept=_rescale(ds.get("RescaleIntercept"), 0.0),
    )


def _group(ds: Dataset, i: int, sequence: str) -> Dataset:
    """A functional group item for frame ``i``: per-frame if present, else shared."""
    per_frame = ds.PerFrameFunctionalGroupsSequence[i]
    if sequence in per_frame:
        return per_frame[sequence][0]
    return ds.SharedFunctionalGroupsSequence[0][sequence][0]


def _enhanced_frame(ds: Dataset, i: int) -> Frame:
    measures = _group(ds, i, "PixelMeasuresSequence")
    try:
        transform = _group(ds, i, "PixelValueTransformationSequence")
    except (AttributeError, KeyError):
        transform = Dataset()
    return Frame(
        dataset=ds, index=i, uid=str(ds.SOPInstanceUID),
        position=np.asarray(_group(ds, i, "PlanePositionSequence").ImagePositionPatient,
                            dtype=float),
        orientation=np.asarray(
            _group(ds, i, "PlaneOrientationSequence").ImageOrientationPatient, dtype=float),
        pixel_spacing=(float(measures.PixelSpacing[0]), float(measures.PixelSpacing[1])),
        size=(int(ds.Rows), int(ds.Columns)),
        slope=_rescale(transform.get("RescaleSlope"), 1.0),
        intercept=_rescale(transform.get("RescaleIntercept"), 0.0),
    )


# ---------------------------------------------------------------- geometry


def _geometry(frames: list[Frame], min_slices: int) -> tuple[list[Frame], np.ndarray, float]:
    """Frames sorted along the normal, the normal, and the slice spacing; or NotEvaluable."""
    first = frames[0]
    for frame in frames[1:]:
        if not np.allclose(frame.orientation, first.orientation, atol=ORIENTATION_TOL):
            raise NotEvaluable(Reason.MIXED_ORIENTATION,
                               f"{first.orientation.round(3)} and {frame.orientation.round(3)}")
        if frame.pixel_spacing != first.pixel_spacing or frame.size != first.size:
            raise NotEvaluable(Reason.INCONSISTENT_GEOMETRY, "image size or pixel spacing differ")
    if not all(MATRIX_SIZES[0] <= n <= MATRIX_SIZES[1] for n in first.size):
        raise NotEvaluable(Reason.UNSUPPORTED_IMAGE_SIZE,
                           f"{first.size[0]} x {first.size[1]} pixels")
    if len(frames) < min_slices:
        raise NotEvaluable(Reason.TOO_FEW_SLICES, f"{len(frames)} slices, at least "
                           f"{min_slices} needed")
    normal = first.normal / np.linalg.norm(first.normal)
    frames = sorted(frames, key=lambda f: float(f.position @ normal))
    return frames, normal, _slice_spacing(frames, normal)


def _slice_spacing(frames: list[Frame], normal: np.ndarray) -> float:
    positions = np.array([f.position for f in frames])
    steps = np.diff(positions @ normal)
    if np.any(steps < 1e-3):
        raise NotEvaluable(Reason.INCONSISTENT_GEOMETRY, "two slices share one position")
    spacing = float(np.median(steps))
    gaps = np.flatnonzero(steps > MAX_GAP_RATIO * spacing)
    if gaps.size:
        raise NotEvaluable(Reason.MISSING_SLICES, f"{gaps.size} gap(s), the first after slice "
                           f"{gaps[0] + 1} ({steps[gaps[0]]:.1f} mm, spacing {spacing:.2f} mm)")
    shift = np.diff(positions, axis=0) - np.outer(steps, normal)
    tilt = float(np.max(np.linalg.norm(shift, axis=1) / steps))
    if tilt > MAX_TILT:
        raise NotEvaluable(Reason.GANTRY_TILT, f"in-plane shift {tilt:.3f} mm per mm")
    return spacing


# ---------------------------------------------------------------- pixels


def _hounsfield(frames: list[Frame]) -> np.ndarray:
    """Stored values → HU (the modality LUT), slice by slice into one float32 volume; each
    object's pixel data is let go once its frames are in (the headers are kept)."""
    rows, cols = frames[0].size
    hu = np.empty((len(frames), rows, cols), dtype=np.float32)
    cache: dict[int, np.ndarray] = {}
    left = Counter(id(frame.dataset) for frame in frames)
    for k, frame in enumerate(frames):
        pixels = _pixels(frame, cache)
        if pixels.shape != (rows, cols):
            raise NotEvaluable(Reason.UNREADABLE, f"image {frame.uid}: pixel array of shape "
                               f"{pixels.shape}, expected ({rows}, {cols})")
        rescale_into(hu[k], pixels, frame.slope, frame.intercept)
        left[id(frame.dataset)] -= 1
        if not left[id(frame.dataset)]:
            cache.pop(id(frame.dataset), None)
            _let_go_of_pixels(frame.dataset)
    return hu


def rescale_into(out: np.ndarray, pixels: np.ndarray, slope: float, intercept: float) -> None:
    """``out[...] = pixels * float32(slope) + float32(intercept)``, in place where numpy
    computes that in float32 (8-16 bit pixels: no temporary arrays, the same values)."""
    if np.result_type(pixels.dtype, np.float32) != np.float32:
        out[...] = pixels * np.float32(slope) + np.float32(intercept)
        return
    np.multiply(pixels, np.float32(slope), out=out, dtype=np.float32)
    out += np.float32(intercept)


def _let_go_of_pixels(ds: Dataset) -> None:
    """Drop the pixel data (and pydicom's decoded copy) of a dataset whose header stays."""
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in ds:
            delattr(ds, keyword)


def _pixels(frame: Frame, cache: dict[int, np.ndarray]) -> np.ndarray:
    """A frame's stored values; a multi-frame object is decoded once."""
    key = id(frame.dataset)
    array = cache.get(key)
    if array is None:
        try:
            array = frame.dataset.pixel_array
        except Exception as exc:  # decoders raise many types for broken streams
            raise NotEvaluable(Reason.UNREADABLE,
                               f"image {frame.uid}: pixel data cannot be decoded ({exc})"
                               ) from exc
        if frame.index is None:
            return array
        if array.ndim == 2:  # a one-frame object decodes to (rows, columns)
            array = array[np.newaxis]
        cache[key] = array
    return array[frame.index]
