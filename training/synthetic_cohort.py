"""A synthetic cohort: invented patients with a chest CT phantom each and an EGFR label.

No real patient is in it, and its EGFR labels follow a rule written here, not biology: the
label is drawn first, then the facts are drawn from distributions that differ by label in
the directions the literature reports (EGFR-mutant lung adenocarcinoma is more frequent in
women and never-smokers, and more often part-solid, i.e. less dense, and smaller). A model
trained on it learns that rule and nothing about real tumors. It exists so that the node
has a working default bundle and the training code has data to run on.

Features are made by the node's own pipeline stages (``extract_radiomics``,
``clinical_vector``); the tumor mask is the phantom's known mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cdss_node.pipeline.clinical import FEATURES, STAGES, SuppliedFacts, encode
from cdss_node.pipeline.radiomics import extract_radiomics
from cdss_node.pipeline.records import CTVolume, HeaderFacts, RadiomicsFeatures, TumorMask
from cdss_node.synthetic.phantom import PhantomSpec, make_chest_phantom

FIELD_OF_VIEW_MM = (384.0, 200.0)   # in-plane, along z: the phantom's chest fits
PIXEL_SPACINGS_MM = (1.5, 2.0, 2.4)  # scanners differ; radiomics must see more than one
SLICE_SPACINGS_MM = (2.5, 4.0)
MUTANT_PREVALENCE = 0.4
MISSING_HEADER_FACT = 0.1   # each header fact is absent this often, to exercise imputation


@dataclass(frozen=True)
class SyntheticCase:
    case_id: str
    egfr_mutant: bool
    header: HeaderFacts
    supplied: SuppliedFacts
    spec: PhantomSpec


@dataclass(frozen=True)
class CaseFeatures:
    case: SyntheticCase
    radiomics: RadiomicsFeatures
    clinical_raw: dict[str, float | None]   # before imputation (None: missing)


def draw_case(index: int, seed: int) -> SyntheticCase:
    """Case ``index`` of the cohort with ``seed``: the same arguments give the same case."""
    rng = np.random.default_rng([seed, index])
    mutant = bool(rng.random() < MUTANT_PREVALENCE)
    header = _header(rng, mutant)
    supplied = SuppliedFacts(family_history=bool(rng.random() < (0.2 if mutant else 0.1)),
                             stage=str(rng.choice(STAGES)))
    spec = PhantomSpec(**_grid(rng), seed=int(rng.integers(0, 2**31)),
                       tumor_diameter_mm=float(rng.uniform(15, 35) if mutant
                                               else rng.uniform(20, 45)),
                       tumor_hu=float(np.clip(rng.normal(-180, 130) if mutant
                                              else rng.normal(20, 60), -500, 80)))
    return SyntheticCase(f"SYN{seed:03d}-{index:04d}", mutant, header, supplied, spec)


def _grid(rng: np.random.Generator) -> dict:
    pixel, thickness = float(rng.choice(PIXEL_SPACINGS_MM)), float(rng.choice(SLICE_SPACINGS_MM))
    rows = int(round(FIELD_OF_VIEW_MM[0] / pixel))
    return dict(rows=rows, columns=rows, slices=int(round(FIELD_OF_VIEW_MM[1] / thickness)),
                pixel_spacing_mm=pixel, slice_spacing_mm=thickness)


def _header(rng: np.random.Generator, mutant: bool) -> HeaderFacts:
    female = rng.random() < (0.6 if mutant else 0.35)
    never_smoked = rng.random() < (0.65 if mutant else 0.3)
    size = float(np.clip(rng.normal(1.62 if female else 1.74, 0.07), 1.4, 2.0))
    facts = {"sex": "F" if female else "M",
             "age_years": float(np.clip(round(rng.normal(63, 9)), 30, 90)),
             "size_m": round(size, 2),
             "weight_kg": round(float(np.clip(rng.normal(22.5, 3) * size**2, 38, 130)), 1),
             "smoking_status": "NO" if never_smoked else "YES"}
    missing = [k for k in facts if rng.random() < MISSING_HEADER_FACT]
    return HeaderFacts(**{k: (None if k in missing else v) for k, v in facts.items()})


def case_features(case: SyntheticCase) -> CaseFeatures:
    """The case's radiomics (on its phantom, with the known tumor mask) and clinical facts."""
    phantom = make_chest_phantom(case.spec)
    volume = CTVolume(
        hu=phantom.hu.astype(np.float32), spacing_mm=phantom.spacing_mm,
        origin_mm=(0.0, 0.0, 0.0), direction=((1, 0, 0), (0, 1, 0), (0, 0, 1)),
        source_instance_uids=tuple(f"{k}" for k in range(phantom.hu.shape[0])),
        source_frame_numbers=(0,) * phantom.hu.shape[0], study_uid="1.2.3", series_uid="1.2.3.4",
        window=None, header=case.header)
    tumor = TumorMask(mask=phantom.tumor_mask, spacing_mm=phantom.spacing_mm,
                      segmenter="phantom truth", candidates=1)
    return CaseFeatures(case, extract_radiomics(volume, tumor), encode(case.header,
                                                                       case.supplied))


def clinical_matrix(features: list[CaseFeatures]) -> np.ndarray:
    """Cases x FEATURES, NaN where a fact is missing."""
    return np.array([[np.nan if f.clinical_raw[name] is None else f.clinical_raw[name]
                      for name in FEATURES] for f in features], dtype=np.float64)
