"""The paper's Table 1 (``../shared/PAPER.md``) as the law of the synthetic cohort's clinical
facts: sex, age, height, weight, smoking, family history and stage per EGFR group, from the
internal columns for the training and internal sites (A, B) and the external columns for the
external site (C), so the site shift the paper shows is kept (mutant share of women 34 %
internal, 65 % external; family history 2-5 % against 23 %).

Table 1 gives counts and means only. What it does not give is written here as assumptions:

* standard deviations (``AGE_SD_Y``, ``HEIGHT_SD_CM``, ``WEIGHT_SD_KG``), within a sex;
* how the facts go together. In real patients women are shorter, lighter and smoke less, and
  drawing Table 1's marginals independently gives the clinical facts far more power than the
  paper's own radiomics + clinical model had (Bayes AUC about 0.79 internal, 0.87 external,
  against its 0.74 / 0.70). So height and weight are drawn given sex (a fixed gap between the
  sexes, ``HEIGHT_SEX_GAP_CM``, ``WEIGHT_SEX_GAP_KG``) and smoking given sex (a woman smokes
  ``FEMALE_SMOKING_RATIO`` times as often as a man of her group); the group's means and rates
  are solved so that each column's marginal is Table 1's.

Age and family history are drawn independently of the rest. ``log_ratio`` is the Bayes score of
a drawn patient: the exact log likelihood ratio of the facts between the groups (the rounding
and the clipping at extreme values are left out; the clipping holds less than 1e-4 of the
mass).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from cdss_node.pipeline.clinical import STAGES

MUTANT, WILD_TYPE = 0, 1          # the group index used throughout synth_cohort
COLUMN = {"A": "internal", "B": "internal", "C": "external"}
# Table 1, per (column, group): patients, male, female, mean age (y), mean height (cm), mean
# weight (kg), smokers, family history, stage I-IV. The external mutant stages add up to 131
# for 130 patients (the paper's); they are used as proportions.
TABLE1 = {
    ("internal", WILD_TYPE): (523, 399, 124, 71.41, 163.39, 60.94, 268, 13, (185, 76, 114, 148)),
    ("internal", MUTANT): (324, 213, 111, 69.08, 158.66, 58.89, 68, 16, (157, 30, 28, 109)),
    ("external", WILD_TYPE): (303, 242, 61, 72.08, 163.34, 62.18, 190, 71, (83, 39, 81, 100)),
    ("external", MUTANT): (130, 46, 84, 69.75, 158.04, 59.91, 30, 30, (53, 11, 15, 52)),
}
PAPER_TABLE2_AUC = {"internal": 0.7370, "external": 0.7038}   # radiomics + clinical
AGE_SD_Y, AGE_RANGE_Y = 9.0, (30, 95)
HEIGHT_SD_CM, HEIGHT_SEX_GAP_CM, HEIGHT_RANGE_CM = 6.0, 13.0, (135.0, 205.0)
WEIGHT_SD_KG, WEIGHT_SEX_GAP_KG, WEIGHT_RANGE_KG = 9.0, 10.0, (35.0, 140.0)
FEMALE_SMOKING_RATIO = 0.2


@dataclass(frozen=True)
class ClinicalLaw:
    """The facts' distribution for one site and EGFR group."""

    female: float
    smoker: dict[str, float]          # by sex
    family_history: float
    stage: tuple[float, ...]          # I-IV
    age_mean_y: float
    height_mean_cm: dict[str, float]  # by sex
    weight_mean_kg: dict[str, float]  # by sex


def prevalence(site: str) -> float:
    """The mutant share of the site's Table 1 column."""
    mutant, wild = (TABLE1[(COLUMN[site], g)][0] for g in (MUTANT, WILD_TYPE))
    return mutant / (mutant + wild)


def law(site: str, group: int) -> ClinicalLaw:
    n, male, female, age, height, weight, smokers, family, stage = TABLE1[(COLUMN[site], group)]
    p_female = female / (male + female)
    smoker_male = smokers / n / (1 - p_female + FEMALE_SMOKING_RATIO * p_female)
    return ClinicalLaw(
        female=p_female, smoker={"M": smoker_male, "F": FEMALE_SMOKING_RATIO * smoker_male},
        family_history=family / n, stage=tuple(np.array(stage) / sum(stage)), age_mean_y=age,
        height_mean_cm=_by_sex(height, HEIGHT_SEX_GAP_CM, p_female),
        weight_mean_kg=_by_sex(weight, WEIGHT_SEX_GAP_KG, p_female))


def assumptions() -> dict:
    """What Table 1 does not give, as this module assumes it (for generator.json)."""
    return {"age_sd_y": AGE_SD_Y, "height_sd_cm": HEIGHT_SD_CM,
            "height_sex_gap_cm": HEIGHT_SEX_GAP_CM, "weight_sd_kg": WEIGHT_SD_KG,
            "weight_sex_gap_kg": WEIGHT_SEX_GAP_KG, "female_smoking_ratio": FEMALE_SMOKING_RATIO}


def _by_sex(mean: float, gap: float, p_female: float) -> dict[str, float]:
    """Means for men and women ``gap`` apart whose mix is ``mean``."""
    return {"M": mean + gap * p_female, "F": mean - gap * (1 - p_female)}


@dataclass(frozen=True)
class ClinicalFacts:
    sex: str                  # M | F
    age_y: int
    height_cm: float
    weight_kg: float
    smoker: bool
    family_history: bool
    stage: str


def sample(rng: np.random.Generator, site: str, group: int, n: int) -> dict[str, np.ndarray]:
    """The facts of ``n`` patients of ``group`` at ``site``, unrounded and unclipped."""
    rule = law(site, group)
    female = rng.random(n) < rule.female
    return {"female": female, "smoker": rng.random(n) < _per_patient(rule.smoker, female),
            "age": rng.normal(rule.age_mean_y, AGE_SD_Y, n),
            "height": rng.normal(_per_patient(rule.height_mean_cm, female), HEIGHT_SD_CM),
            "weight": rng.normal(_per_patient(rule.weight_mean_kg, female), WEIGHT_SD_KG),
            "family": rng.random(n) < rule.family_history,
            "stage": rng.choice(len(STAGES), size=n, p=rule.stage)}


def _per_patient(by_sex: dict[str, float], female: np.ndarray) -> np.ndarray:
    """A value given per sex, for each patient."""
    return np.where(female, by_sex["F"], by_sex["M"])


def draw(rng: np.random.Generator, site: str, group: int) -> ClinicalFacts:
    """One patient, as the header and manifest record it (age in years, height in cm, weight
    to 0.1 kg, clipped to plausible ranges)."""
    one = {key: value[0] for key, value in sample(rng, site, group, 1).items()}
    return ClinicalFacts(
        sex="F" if one["female"] else "M",
        age_y=int(np.clip(round(one["age"]), *AGE_RANGE_Y)),
        height_cm=float(np.clip(round(one["height"]), *HEIGHT_RANGE_CM)),
        weight_kg=float(np.clip(round(one["weight"], 1), *WEIGHT_RANGE_KG)),
        smoker=bool(one["smoker"]), family_history=bool(one["family"]),
        stage=STAGES[int(one["stage"])])


def log_ratio(facts: ClinicalFacts, site: str) -> float:
    """The Bayes score of the clinical facts: log P(facts | mutant) / P(facts | wild type)."""
    values = {"female": np.array([facts.sex == "F"]), "smoker": np.array([facts.smoker]),
              "age": np.array([facts.age_y]), "height": np.array([facts.height_cm]),
              "weight": np.array([facts.weight_kg]), "family": np.array([facts.family_history]),
              "stage": np.array([STAGES.index(facts.stage)])}
    return float(_log_ratios(site, values)[0])


def sample_log_ratios(rng: np.random.Generator, site: str, group: int, n: int) -> np.ndarray:
    """The Bayes scores of ``n`` patients of ``group`` at ``site``."""
    return _log_ratios(site, sample(rng, site, group, n))


def _log_ratios(site: str, values: dict[str, np.ndarray]) -> np.ndarray:
    return _log_density(site, MUTANT, values) - _log_density(site, WILD_TYPE, values)


def _log_density(site: str, group: int, values: dict[str, np.ndarray]) -> np.ndarray:
    """log P(facts | site, group): the discrete facts' probabilities times the continuous
    ones' normal densities."""
    rule = law(site, group)
    female = values["female"]
    p_smoker = _per_patient(rule.smoker, female)
    return (np.log(np.where(female, rule.female, 1 - rule.female))
            + np.log(np.where(values["smoker"], p_smoker, 1 - p_smoker))
            + np.log(np.where(values["family"], rule.family_history, 1 - rule.family_history))
            + np.log(np.asarray(rule.stage))[values["stage"]]
            + stats.norm.logpdf(values["age"], rule.age_mean_y, AGE_SD_Y)
            + stats.norm.logpdf(values["height"], _per_patient(rule.height_mean_cm, female),
                                HEIGHT_SD_CM)
            + stats.norm.logpdf(values["weight"], _per_patient(rule.weight_mean_kg, female),
                                WEIGHT_SD_KG))


def bayes_auc(site: str, n: int = 200_000, seed: int = 0) -> float:
    """AUC of the clinical Bayes score at ``site`` (Monte Carlo, ``n`` patients per group;
    standard error about 0.001 at n = 200 000)."""
    rng = np.random.default_rng(seed)
    mutant, wild = (sample_log_ratios(rng, site, g, n) for g in (MUTANT, WILD_TYPE))
    return float(stats.mannwhitneyu(mutant, wild).statistic / n ** 2)
