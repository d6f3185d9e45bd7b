"""The clinical input of the model, as in the paper: sex, age, height, weight, smoking, family
history and stage; binary or one-hot encoded, missing values imputed with the training median,
then min-max scaled with the training ranges. Both come from the model bundle
(``ClinicalScaling``), so serving uses exactly the numbers training used.

Sex, age, height, weight and smoking come from the DICOM header; family history and stage are
not in a CT header and are imputed unless the caller supplies them. What was imputed is kept,
so that the report can say so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cdss_node.pipeline.records import ClinicalVector, HeaderFacts, require

STAGES = ("I", "II", "III", "IV")
FEATURES = ("sex_male", "age_years", "height_m", "weight_kg", "smoker", "family_history",
            *(f"stage_{s}" for s in STAGES))


@dataclass(frozen=True)
class ClinicalScaling:
    """Training-set medians (for imputation) and min / max (for scaling), per feature."""

    medians: dict[str, float]
    minimums: dict[str, float]
    maximums: dict[str, float]

    def __post_init__(self) -> None:
        for name in ("medians", "minimums", "maximums"):
            keys = set(getattr(self, name))
            require(keys == set(FEATURES), name, f"one value per feature {FEATURES}", keys)


@dataclass(frozen=True)
class SuppliedFacts:
    """Facts a CT header does not carry; None means unknown (imputed)."""

    family_history: bool | None = None
    stage: str | None = None

    def __post_init__(self) -> None:
        require(self.stage in (None, *STAGES), "stage", f"one of {STAGES} or None", self.stage)


def clinical_vector(header: HeaderFacts, scaling: ClinicalScaling,
                    supplied: SuppliedFacts = SuppliedFacts()) -> ClinicalVector:
    raw = encode(header, supplied)
    imputed = tuple(name for name in FEATURES if raw[name] is None)
    filled = {name: scaling.medians[name] if raw[name] is None else raw[name]
              for name in FEATURES}
    scaled = [_min_max(filled[name], scaling.minimums[name], scaling.maximums[name])
              for name in FEATURES]
    return ClinicalVector(names=FEATURES, values=np.array(scaled, dtype=np.float32),
                          raw={name: filled[name] for name in FEATURES}, imputed=imputed)


def encode(header: HeaderFacts, supplied: SuppliedFacts) -> dict[str, float | None]:
    """Binary and one-hot encoding; None where the fact is unknown."""
    smoker = {"YES": 1.0, "NO": 0.0}.get(header.smoking_status or "")
    sex = {"M": 1.0, "F": 0.0}.get(header.sex or "")
    family = None if supplied.family_history is None else float(supplied.family_history)
    stages = {f"stage_{s}": (None if supplied.stage is None else float(supplied.stage == s))
              for s in STAGES}
    return {"sex_male": sex, "age_years": header.age_years, "height_m": header.size_m,
            "weight_kg": header.weight_kg, "smoker": smoker, "family_history": family,
            **stages}


def _min_max(value: float, low: float, high: float) -> float:
    if high <= low:
        return 0.0
    return float(np.clip((value - low) / (high - low), 0.0, 1.0))
