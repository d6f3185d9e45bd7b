"""Records passed between pipeline stages: frozen, and checked when built.

A record that was built is valid: a wrong shape, dtype, spacing or range raises ``ValueError``
naming the field, what was expected and what was found.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cdss_node.pipeline.reasons import NotEvaluableReason


def require(ok: bool, field: str, expected: str, found: object) -> None:
    if not ok:
        raise ValueError(f"{field}: expected {expected}, found {found!r}")


def _vector(value: tuple, n: int) -> bool:
    return len(value) == n and all(np.isfinite(v) for v in value)


@dataclass(frozen=True)
class HeaderFacts:
    """Clinical facts read from the DICOM header; None where the header lacks them."""

    sex: str | None = None              # (0010,0040) M / F / O
    age_years: float | None = None      # (0010,1010) Patient's Age
    size_m: float | None = None         # (0010,1020) Patient's Size
    weight_kg: float | None = None      # (0010,1030) Patient's Weight
    smoking_status: str | None = None   # (0010,21A0) YES / NO / UNKNOWN

    def __post_init__(self) -> None:
        require(self.sex in (None, "M", "F", "O"), "sex", "M, F, O or None", self.sex)
        for name, high in (("age_years", 130), ("size_m", 3.0), ("weight_kg", 500)):
            value = getattr(self, name)
            require(value is None or 0 < value <= high, name, f"None or in (0, {high}]", value)
        require(self.smoking_status in (None, "YES", "NO", "UNKNOWN"), "smoking_status",
                "YES, NO, UNKNOWN or None", self.smoking_status)


@dataclass(frozen=True)
class CTVolume:
    """A CT series as one volume in Hounsfield units, z-y-x.

    Slices are in ascending position along the slice normal (row direction x column
    direction), as in ITK: voxel (k, j, i) lies at ``origin + i*dx*row + j*dy*col + k*dz*normal``.
    """

    hu: np.ndarray                                   # float32 (z, y, x)
    spacing_mm: tuple[float, float, float]           # (z, y, x)
    origin_mm: tuple[float, float, float]            # patient position (LPS) of voxel (0, 0, 0)
    direction: tuple[tuple[float, float, float], ...]  # rows: x (row), y (column), z (normal)
    source_instance_uids: tuple[str, ...]            # one per slice, in slice order
    source_frame_numbers: tuple[int, ...]            # 1-based frame of a multi-frame, else 0
    study_uid: str
    series_uid: str
    window: tuple[float, float] | None               # (centre, width) of the first VOI window
    header: HeaderFacts
    lossy_compressed: bool = False                   # some slice is, or may be, lossy compressed

    def __post_init__(self) -> None:
        hu = self.hu
        require(isinstance(hu, np.ndarray) and hu.ndim == 3, "hu", "a 3-D array", type(hu))
        require(hu.dtype == np.float32, "hu", "dtype float32", hu.dtype)
        require(_vector(self.spacing_mm, 3) and min(self.spacing_mm) > 0, "spacing_mm",
                "3 positive numbers", self.spacing_mm)
        require(_vector(self.origin_mm, 3), "origin_mm", "3 finite numbers", self.origin_mm)
        matrix = np.asarray(self.direction, dtype=float)
        require(matrix.shape == (3, 3) and np.allclose(matrix @ matrix.T, np.eye(3), atol=1e-3),
                "direction", "an orthonormal 3x3 matrix", self.direction)
        for name in ("source_instance_uids", "source_frame_numbers"):
            found = len(getattr(self, name))
            require(found == hu.shape[0], name, f"{hu.shape[0]} (one per slice)", found)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]


@dataclass(frozen=True)
class CnnInput:
    """The CT as the CNN sees it: VOI window, histogram flattening, values in 0..1."""

    image: np.ndarray  # float32 (z, y, x) in [0, 1]

    def __post_init__(self) -> None:
        require(self.image.dtype == np.float32 and self.image.ndim == 3, "image",
                "a 3-D float32 array", (self.image.dtype, self.image.ndim))
        low, high = float(self.image.min()), float(self.image.max())
        require(0.0 <= low and high <= 1.0, "image", "values in [0, 1]", (low, high))


@dataclass(frozen=True)
class TumorMask:
    """The primary tumor on the CT's own grid; an all-false mask means no tumor was found."""

    mask: np.ndarray                          # bool (z, y, x)
    spacing_mm: tuple[float, float, float]
    segmenter: str                            # name and version, for the SEG and the SR
    candidates: int                           # lesion candidates the segmenter considered
    flags: tuple = ()                         # QualityFlag members, for the radiologist
    lung_volume_ml: float | None = None       # the lung fields' volume, where measured
    others: np.ndarray | None = None          # uint8: other lesion candidates, numbered 1..

    def __post_init__(self) -> None:
        require(isinstance(self.mask, np.ndarray) and self.mask.dtype == bool
                and self.mask.ndim == 3, "mask", "a 3-D bool array", getattr(self.mask, "dtype",
                                                                             type(self.mask)))
        require(_vector(self.spacing_mm, 3) and min(self.spacing_mm) > 0, "spacing_mm",
                "3 positive numbers", self.spacing_mm)
        require(self.candidates >= int(self.found), "candidates", ">= 1 when a tumor is found",
                self.candidates)

    @property
    def found(self) -> bool:
        return bool(self.mask.any())

    @property
    def other_candidates(self) -> int:
        """How many other lesion candidates ``others`` numbers."""
        return 0 if self.others is None else int(self.others.max())

    @property
    def volume_mm3(self) -> float:
        return float(np.count_nonzero(self.mask) * np.prod(self.spacing_mm))

    @property
    def centre_voxel(self) -> tuple[int, int, int] | None:
        if not self.found:
            return None
        return tuple(int(round(c)) for c in np.argwhere(self.mask).mean(axis=0))  # type: ignore


@dataclass(frozen=True)
class TumorCrop:
    """The CNN's tumor image: (1, 64, 112, 112) float32 in [0, 1] (channel, z, y, x)."""

    image: np.ndarray
    centre_voxel: tuple[int, int, int]   # the tumor centre on the CT grid
    start_voxel: tuple[int, int, int]    # the CT voxel at the crop's corner (may be negative)

    def __post_init__(self) -> None:
        require(self.image.shape == (1, 64, 112, 112), "image", "shape (1, 64, 112, 112)",
                self.image.shape)
        require(self.image.dtype == np.float32, "image", "dtype float32", self.image.dtype)
        low, high = float(self.image.min()), float(self.image.max())
        require(0.0 <= low and high <= 1.0, "image", "values in [0, 1]", (low, high))


@dataclass(frozen=True)
class RadiomicsFeatures:
    """Feature names in extraction order and their values."""

    names: tuple[str, ...]
    values: np.ndarray  # float64, one per name

    def __post_init__(self) -> None:
        require(len(set(self.names)) == len(self.names), "names", "unique names",
                len(self.names))
        require(self.values.shape == (len(self.names),), "values",
                f"shape ({len(self.names)},)", self.values.shape)
        require(bool(np.all(np.isfinite(self.values))), "values", "finite numbers",
                [n for n, v in zip(self.names, self.values) if not np.isfinite(v)])

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.names, (float(v) for v in self.values)))


@dataclass(frozen=True)
class ClinicalVector:
    """The model's clinical input: scaled values, the values before scaling, what was imputed."""

    names: tuple[str, ...]
    values: np.ndarray             # float32 in [0, 1], one per name
    raw: dict[str, float]          # after imputation, before scaling (years, m, kg, 0/1)
    imputed: tuple[str, ...]       # names whose value was missing and took the median

    def __post_init__(self) -> None:
        require(self.values.shape == (len(self.names),) and self.values.dtype == np.float32,
                "values", f"float32 of shape ({len(self.names)},)",
                (self.values.dtype, self.values.shape))
        require(bool(np.all((self.values >= 0) & (self.values <= 1))), "values",
                "values in [0, 1]", self.values)
        require(set(self.imputed) <= set(self.names), "imputed", "a subset of names",
                self.imputed)


EGFR_MUTANT = "EGFR mutant"
EGFR_WILD_TYPE = "EGFR wild type"
_HEX = frozenset("0123456789abcdef")


def egfr_label(probability: float, threshold: float) -> str:
    """The paper's decision: mutant when the mean probability reaches the threshold."""
    return EGFR_MUTANT if probability >= threshold else EGFR_WILD_TYPE


@dataclass(frozen=True)
class EgfrPrediction:
    """The EGFR mutation status: the mean of the fold models' probabilities and its label."""

    probability: float                    # mean of fold_probabilities, in [0, 1]
    fold_probabilities: tuple[float, ...]  # one per fold model, each in [0, 1]
    threshold: float                      # the bundle's decision threshold, in (0, 1)
    label: str                            # EGFR_MUTANT when probability >= threshold
    model_id: str
    model_sha256: str                     # the bundle's hash (64 lowercase hex digits)

    def __post_init__(self) -> None:
        folds = self.fold_probabilities
        require(isinstance(folds, tuple) and len(folds) >= 1
                and all(np.isfinite(p) and 0.0 <= p <= 1.0 for p in folds),
                "fold_probabilities", "a non-empty tuple of numbers in [0, 1]", folds)
        require(bool(np.isclose(self.probability, float(np.mean(folds)), rtol=0, atol=1e-6)),
                "probability", f"the mean of the folds ({float(np.mean(folds))})",
                self.probability)
        require(0.0 < self.threshold < 1.0, "threshold", "a number in (0, 1)", self.threshold)
        expected = egfr_label(self.probability, self.threshold)
        require(self.label == expected, "label", repr(expected), self.label)
        require(isinstance(self.model_id, str) and bool(self.model_id.strip()), "model_id",
                "a non-empty string", self.model_id)
        require(isinstance(self.model_sha256, str) and len(self.model_sha256) == 64
                and set(self.model_sha256) <= _HEX, "model_sha256", "64 lowercase hex digits",
                self.model_sha256)

    @classmethod
    def from_folds(cls, fold_probabilities: tuple[float, ...], threshold: float,
                   model_id: str, model_sha256: str) -> EgfrPrediction:
        """The prediction as the paper makes it: the mean of the fold models, then the label."""
        folds = tuple(float(p) for p in fold_probabilities)
        probability = float(np.mean(folds)) if folds else float("nan")
        return cls(probability=probability, fold_probabilities=folds, threshold=threshold,
                   label=egfr_label(probability, threshold), model_id=model_id,
                   model_sha256=model_sha256)


class NotEvaluable(Exception):
    """A series the node cannot analyse, with its coded reason and a sentence for the SR."""

    def __init__(self, reason: NotEvaluableReason, detail: str):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.meaning}: {detail}")
