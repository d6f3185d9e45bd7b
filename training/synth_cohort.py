"""``cdss-train synth-cohort``: a synthetic three-site cohort on disk, shaped like the paper's.

SYNTHETIC: invented patients, chest CT phantoms and EGFR labels drawn from a rule written here.
A model trained on it learns this rule and nothing about real tumors.

Sites and roles, as in Kim et al. (Sci Rep 2024): site ``A`` is cross-validated fivefold
(training), ``B`` is the internal validation and ``C`` the external validation. Each site has
its own scanner (pixel spacing, slice thickness, noise), so the external site is shifted in
image as a real one is. The label is drawn first (``PREVALENCE`` per site), then everything else
given the label:

* clinical facts: from the paper's Table 1 per EGFR group, the internal columns for sites A
  and B and the external ones for C (``training.table1``: counts and means as printed, SDs and
  how the facts go together, women shorter, lighter and smoking less, as documented
  assumptions). The prevalence is Table 1's too: 38 % internal, 30 % external.
* the tumor phenotype (``PHENOTYPE``): mutant tumors are a little smaller and less dense (more
  often part-solid), as in the literature. Radiomics measures both.

The clinical facts alone give a Bayes AUC of 0.766 (sites A, B) and 0.808 (C), above what the
paper's radiomics + clinical model reached (0.737 internal, 0.704 external, its Table 2): the
differences Table 1 prints carry that much even with the facts drawn jointly. The phenotype
adds to it.

Every clinical fact is written both into the manifest and into the CT header (sex, age, size,
weight, smoking), so training and the node read the same values; family history and stage are
in the manifest only. Nothing is missing: the Bayes AUCs below assume complete facts.

``bayes_auc_clinical(site)`` is the AUC of the Bayes-optimal score (the likelihood ratio) for
the site's clinical facts; ``bayes_auc_clinical_phenotype`` adds tumor diameter and density
(Monte Carlo, 200 000 cases per group, fixed seed). Both go into ``generator.json`` beside the
manifest, per site, with the paper's Table 2 AUCs beside them.

Planted image signal (``--ground-glass-halo``, off by default): a ground-glass rim around the
tumor (``GROUND_GLASS_HALO``: more often in mutant tumors, as a ground-glass component is in
the literature), drawn outside the tumor mask. Radiomics, computed inside the mask, cannot see
it; the CNN's crop, which holds the tumor's surroundings, can. ``bayes_auc_all`` adds it to the
Monte Carlo. The halo is drawn from its own random stream, so a cohort with it has the same
patients, labels and tumors as one without. ``Halo`` sets its strength (``--halo-probability``,
``--halo-width-mm``): the CPU profile of the multimodal experiment plants a stronger one, which
a small CNN trained from scratch on 240 cases can learn.

``truth.csv`` beside the manifest holds each case's drawn tumor diameter, density and halo and
the Bayes log likelihood ratios, so that ``cdss-train evaluate`` can show the Bayes classifier's
AUC on the very cases a model was tested on (a finite site's AUC scatters around the
population value: about ±0.02 for 500 cases).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from concurrent.futures import ProcessPoolExecutor
from typing import Callable

import numpy as np
from scipy import stats

from cdss_node.dicom.ct_series import PatientFacts, series_uids, write_ct_series
from cdss_node.pipeline.load import load_volume
from cdss_node.pipeline.records import TumorMask
from cdss_node.results import write_mask
from cdss_node.synthetic.phantom import PhantomSpec, make_chest_phantom
from training import table1
from training.cohort import write_manifest

SITES = ("A", "B", "C")
ROLES = {"A": "cross-validation", "B": "internal", "C": "external"}
PREVALENCE = {site: table1.prevalence(site) for site in ("A", "B", "C")}
SCANNER = {  # pixel spacing mm, slice thickness mm, noise HU
    "A": (1.5, 2.5, 12.0), "B": (1.5, 2.5, 15.0), "C": (2.0, 4.0, 20.0)}
FIELD_OF_VIEW_MM = (384.0, 200.0)
PHENOTYPE = {  # (mean, sd) for mutant, wild type; clipped to the phantom's limits
    "diameter_mm": ((27.0, 7.0), (30.0, 8.0), (10.0, 60.0)),
    "tumor_hu": ((-25.0, 70.0), (0.0, 50.0), (-500.0, 80.0)),
}


@dataclass(frozen=True)
class Halo:
    """The planted ground-glass halo: P(halo | mutant), P(halo | wild type); rim width in mm,
    drawn uniformly between the two values."""

    probability: tuple[float, float] = (0.60, 0.15)
    width_mm: tuple[float, float] = (4.0, 10.0)

    def __post_init__(self) -> None:
        if not all(0.0 < p < 1.0 for p in self.probability):
            raise ValueError(f"halo probability: expected two values in (0, 1), found "
                             f"{self.probability}")
        low, high = self.width_mm
        if not 0.0 < low <= high <= 20.0:
            raise ValueError(f"halo width: expected 0 < min <= max <= 20 mm, found "
                             f"{self.width_mm}")


GROUND_GLASS_HALO = Halo()   # --ground-glass-halo; --halo-probability, --halo-width-mm change it


def _halo_of(halo: "bool | Halo | None") -> Halo | None:
    """``True`` is the default halo, ``False`` or None none."""
    if isinstance(halo, Halo):
        return halo
    return GROUND_GLASS_HALO if halo else None


MONTE_CARLO_CASES = 200_000
TRUTH_COLUMNS = ("case_id", "site", "egfr_mutant", "tumor_diameter_mm", "tumor_hu", "halo_mm",
                 "bayes_log_ratio_clinical", "bayes_log_ratio_clinical_phenotype",
                 "bayes_log_ratio_all")


@dataclass(frozen=True)
class SynthCase:
    case_id: str
    site: str
    egfr_mutant: bool
    patient: PatientFacts
    family_history: bool
    stage: str
    spec: PhantomSpec

    def manifest_row(self, image: str, mask: str) -> dict[str, str]:
        p = self.patient
        return {"case_id": self.case_id, "site": self.site,
                "egfr": "mutant" if self.egfr_mutant else "wild-type", "sex": p.sex,
                "age": str(p.age_years), "height_m": f"{p.size_m:.2f}",
                "weight_kg": f"{p.weight_kg:.1f}",
                "smoking": "yes" if p.smoking_status == "YES" else "no",
                "family_history": "yes" if self.family_history else "no", "stage": self.stage,
                "image": image, "mask": mask}


def draw_case(site: str, index: int, seed: int, halo: "bool | Halo" = False) -> SynthCase:
    """Case ``index`` of ``site``: the same arguments give the same case; ``halo`` plants the
    ground-glass halo (from a stream of its own, so nothing else changes)."""
    stream = np.random.SeedSequence([seed, SITES.index(site), index])
    rng = np.random.default_rng(stream)
    mutant = bool(rng.random() < PREVALENCE[site])
    group = 0 if mutant else 1
    case_id = f"SYN-{site}-{index:04d}"
    facts = table1.draw(rng, site, group)
    spec = _phantom_spec(rng, site, group)
    if (planted := _halo_of(halo)) is not None:
        spec = replace(spec, halo_mm=_halo_mm(np.random.default_rng(stream.spawn(1)[0]), group,
                                              planted))
    return SynthCase(case_id, site, mutant, _patient(facts, case_id), facts.family_history,
                     facts.stage, spec)


def _halo_mm(rng: np.random.Generator, group: int, halo: Halo) -> float:
    present = rng.random() < halo.probability[group]
    width = float(rng.uniform(*halo.width_mm))
    return round(width, 2) if present else 0.0


def _patient(facts: table1.ClinicalFacts, case_id: str) -> PatientFacts:
    return PatientFacts(name=f"SYNTHETIC^{case_id}", patient_id=case_id, sex=facts.sex,
                        age_years=facts.age_y, size_m=round(facts.height_cm / 100, 2),
                        weight_kg=facts.weight_kg,
                        smoking_status="YES" if facts.smoker else "NO")


def clinical_facts(case: SynthCase) -> table1.ClinicalFacts:
    """The case's clinical facts as drawn (height back in cm)."""
    p = case.patient
    return table1.ClinicalFacts(p.sex, p.age_years, round(p.size_m * 100), p.weight_kg,
                                p.smoking_status == "YES", case.family_history, case.stage)


def _phantom_spec(rng: np.random.Generator, site: str, group: int) -> PhantomSpec:
    pixel, thickness, noise = SCANNER[site]
    rows = int(round(FIELD_OF_VIEW_MM[0] / pixel))
    return PhantomSpec(rows=rows, columns=rows, slices=int(round(FIELD_OF_VIEW_MM[1] / thickness)),
                       pixel_spacing_mm=pixel, slice_spacing_mm=thickness, noise_hu=noise,
                       seed=int(rng.integers(0, 2**31)),
                       tumor_diameter_mm=_phenotype(rng, "diameter_mm", group),
                       tumor_hu=_phenotype(rng, "tumor_hu", group))


def _phenotype(rng: np.random.Generator, name: str, group: int) -> float:
    (mean, sd), (low, high) = PHENOTYPE[name][group], PHENOTYPE[name][2]
    return float(np.clip(rng.normal(mean, sd), low, high))


def write_cohort(out: Path, counts: dict[str, int], seed: int, halo: "bool | Halo" = False,
                 progress: Callable[[int, int], None] = lambda done, total: None,
                 workers: int = 1) -> Path:
    """Every case's CT (DICOM) and tumor mask (NIfTI) under ``out/cases``, ``manifest.csv``,
    ``truth.csv`` and ``generator.json``; returns the manifest's path. ``workers`` processes
    write the cases."""
    cases = [draw_case(site, k, seed, halo) for site in SITES for k in range(counts.get(site, 0))]
    folders = [out / "cases" / case.case_id for case in cases]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        rows = []
        for done, row in enumerate(pool.map(_write_case, folders, cases), start=1):
            rows.append(row)
            progress(done, len(cases))
    write_manifest(out / "manifest.csv", rows)
    _write_truth(out / "truth.csv", cases, halo)
    (out / "generator.json").write_text(json.dumps(generator_facts(counts, seed, halo), indent=2))
    return out / "manifest.csv"


def _write_truth(path: Path, cases: list[SynthCase], halo: "bool | Halo") -> None:
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=TRUTH_COLUMNS)
        writer.writeheader()
        for case in cases:
            writer.writerow({"case_id": case.case_id, "site": case.site,
                             "egfr_mutant": int(case.egfr_mutant),
                             "tumor_diameter_mm": case.spec.tumor_diameter_mm,
                             "tumor_hu": case.spec.tumor_hu, "halo_mm": case.spec.halo_mm,
                             **{f"bayes_log_ratio_{name}": f"{value:.6f}"
                                for name, value in case_log_ratios(case, halo).items()}})


def _write_case(folder: Path, case: SynthCase) -> dict[str, str]:
    phantom = make_chest_phantom(case.spec)
    files = write_ct_series(phantom, folder / "ct", case.patient, uid_seed=case.case_id)
    volume = load_volume(files)
    mask = phantom.tumor_mask[volume_order(case, phantom, volume.source_instance_uids)]
    write_mask(folder / "mask.nii.gz", TumorMask(mask=mask, spacing_mm=volume.spacing_mm,
                                                 segmenter="phantom truth", candidates=1), volume)
    return case.manifest_row(f"cases/{case.case_id}/ct", f"cases/{case.case_id}/mask.nii.gz")


def volume_order(case: SynthCase, phantom, slice_uids) -> list[int]:
    """The phantom's slice of each of the volume's slices (the node sorts slices as it
    loads them, not as the phantom drew them)."""
    slice_of = {uid: k for k, uid in enumerate(
        series_uids(phantom, case.patient, case.case_id).instances)}
    return [slice_of[uid] for uid in slice_uids]


def generator_facts(counts: dict[str, int], seed: int, halo: "bool | Halo" = False) -> dict:
    """What the cohort was drawn from; the Bayes AUCs per site (``bayes_auc_<inputs>``: {site:
    AUC}) beside the paper's radiomics + clinical AUCs."""
    per_site = lambda auc_of: {site: round(auc_of(site), 4) for site in SITES}  # noqa: E731
    halo = _halo_of(halo)
    return {"synthetic": True, "seed": seed, "cases": counts, "roles": ROLES,
            "prevalence": PREVALENCE, "scanner_pixel_slice_noise": SCANNER,
            "clinical_table1": {"columns_by_site": table1.COLUMN,
                                "table1": {f"{c} {'mutant' if g == 0 else 'wild type'}": v
                                           for (c, g), v in table1.TABLE1.items()},
                                "assumptions": table1.assumptions()},
            "phenotype": PHENOTYPE, "ground_glass_halo": asdict(halo) if halo else None,
            "paper_table2_auc_radiomics_clinical": table1.PAPER_TABLE2_AUC,
            "bayes_auc_clinical": per_site(bayes_auc_clinical),
            "bayes_auc_clinical_phenotype": per_site(bayes_auc_clinical_phenotype),
            **({"bayes_auc_all": per_site(lambda s: bayes_auc_clinical_phenotype(s, halo=halo))}
               if halo else {})}


def case_log_ratios(case: SynthCase, halo: "bool | Halo") -> dict[str, float]:
    """The Bayes score, log P(facts | mutant) / P(facts | wild type), of one drawn case for
    the clinical facts, with the tumor phenotype, and (with a planted halo) with everything."""
    clinical = table1.log_ratio(clinical_facts(case), case.site)
    phenotype = sum(float(_log_density(np.array(value), name, 0)
                          - _log_density(np.array(value), name, 1))
                    for name, value in (("diameter_mm", case.spec.tumor_diameter_mm),
                                        ("tumor_hu", case.spec.tumor_hu)))
    ratios = {"clinical": clinical, "clinical_phenotype": clinical + phenotype}
    if (planted := _halo_of(halo)) is not None:
        ratios["all"] = clinical + phenotype + float(_halo_log_ratio(case.spec.halo_mm > 0,
                                                                     planted))
    return ratios


def _halo_log_ratio(present, halo: Halo):
    p_mutant, p_wild = halo.probability
    return np.where(present, np.log(p_mutant / p_wild), np.log((1 - p_mutant) / (1 - p_wild)))


def bayes_auc_clinical(site: str) -> float:
    """AUC of the likelihood ratio of the site's clinical facts (``table1.bayes_auc``)."""
    return table1.bayes_auc(site, MONTE_CARLO_CASES)


def bayes_auc_clinical_phenotype(site: str, n: int = MONTE_CARLO_CASES, seed: int = 0,
                                 halo: "bool | Halo" = False) -> float:
    """AUC of the likelihood ratio of the site's clinical facts, tumor diameter and density
    (Monte Carlo), with the clipping at the phantom's limits in the densities
    (``_log_density``); ``halo`` adds the ground-glass halo."""
    rng = np.random.default_rng(seed)
    scores = [_log_ratios(rng, site, group, n, halo) for group in (0, 1)]
    return float(stats.mannwhitneyu(scores[0], scores[1]).statistic / n ** 2)


def _log_ratios(rng: np.random.Generator, site: str, group: int, n: int,
                halo: "bool | Halo" = False) -> np.ndarray:
    log_ratio = table1.sample_log_ratios(rng, site, group, n)
    for name in PHENOTYPE:
        low, high = PHENOTYPE[name][2]
        value = np.clip(rng.normal(*PHENOTYPE[name][group], size=n), low, high)
        log_ratio += _log_density(value, name, 0) - _log_density(value, name, 1)
    if (planted := _halo_of(halo)) is not None:
        log_ratio += _halo_log_ratio(rng.random(n) < planted.probability[group], planted)
    return log_ratio


def _log_density(value: np.ndarray, name: str, group: int) -> np.ndarray:
    """Log density of a clipped normal: the tail's mass at each limit, the pdf between."""
    (mean, sd), (low, high) = PHENOTYPE[name][group], PHENOTYPE[name][2]
    inner = stats.norm.logpdf(value, mean, sd)
    return np.where(value <= low, stats.norm.logcdf(low, mean, sd),
                    np.where(value >= high, stats.norm.logsf(high, mean, sd), inner))
