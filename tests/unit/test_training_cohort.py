"""The cohort manifest (``training.cohort``) and the synthetic three-site cohort
(``training.synth_cohort``): clear errors naming row and column, cases that follow the
documented rule, masks on their CT's grid, and the Bayes AUC the generator documents."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk

from cdss_node.analysis import series_files
from cdss_node.pipeline.load import load_volume
from cdss_node.synthetic.phantom import make_chest_phantom
from training.cohort import ManifestError, SiteRoles, check_roles, read_manifest
from training import table1
from training.synth_cohort import (
    GROUND_GLASS_HALO, PREVALENCE, Halo, bayes_auc_clinical, bayes_auc_clinical_phenotype,
    case_log_ratios, draw_case, write_cohort)
from training.cli import main as cli_main
from training.metrics import auc

HEADER = "case_id,site,egfr,sex,age,height_m,weight_kg,smoking,family_history,stage,image,mask"


def manifest(tmp_path, *rows: str, header: str = HEADER):
    (tmp_path / "ct1").mkdir(exist_ok=True)
    path = tmp_path / "cohort.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_a_manifest_row_becomes_a_case(tmp_path):
    path = manifest(tmp_path, "P1,A,mutant,F,61,1.58,55.5,no,yes,IV,ct1,",
                    "P2,A,0,,,,,,,,ct1,")
    first, second = read_manifest(path)
    assert first.egfr_mutant and first.header.sex == "F" and first.header.age_years == 61
    assert first.header.smoking_status == "NO" and first.supplied.stage == "IV"
    assert first.supplied.family_history is True and first.image == tmp_path / "ct1"
    assert first.mask is None
    assert not second.egfr_mutant and second.header.sex is None and second.supplied.stage is None


@pytest.mark.parametrize("row, message", [
    ("P1,A,maybe,F,61,1.58,55,no,no,I,ct1,", "row 2, column egfr: expected one of mutant"),
    ("P1,A,mutant,F,sixty,1.58,55,no,no,I,ct1,", "row 2, column age: expected a number"),
    ("P1,A,mutant,F,61,158,55,no,no,I,ct1,", "row 2, column height_m: expected a number in (0, 3]"),
    ("P1,A,mutant,X,61,1.58,55,no,no,I,ct1,", "row 2, column sex: expected one of M, F"),
    ("P1,A,mutant,F,61,1.58,55,no,no,V,ct1,", "row 2, column stage: expected one of I, II"),
    ("P1,A,mutant,F,61,1.58,55,no,no,I,nowhere,", "row 2, column image: no such file"),
    ("P1,A,mutant,F,61,1.58,55,no,no,I,,", "row 2, column image: empty (needed)"),
    ("../P1,A,mutant,F,61,1.58,55,no,no,I,ct1,", "row 2, column case_id: expected letters"),
    ("P1,A,mutant,F,61,1.58,55,no,no,I,ct1,,extra", "row 2: more cells than columns"),
])
def test_a_bad_cell_names_its_row_and_column(tmp_path, row, message):
    with pytest.raises(ManifestError) as error:
        read_manifest(manifest(tmp_path, row))
    assert message in str(error.value) and str(tmp_path / "cohort.csv") in str(error.value)


def test_header_and_duplicate_problems(tmp_path):
    with pytest.raises(ManifestError, match="row 1: unknown column.*bmi.*missing column.*egfr"):
        read_manifest(manifest(tmp_path, "P1,A,ct1,22", header="case_id,site,image,bmi"))
    with pytest.raises(ManifestError, match="row 3, column case_id: 'P1' is also on row 2"):
        read_manifest(manifest(tmp_path, "P1,A,1,,,,,,,,ct1,", "P1,A,0,,,,,,,,ct1,"))
    with pytest.raises(ManifestError, match="no cases"):
        read_manifest(manifest(tmp_path))


def test_site_roles_are_checked_against_the_cases(tmp_path):
    cases = read_manifest(manifest(tmp_path, "P1,A,1,,,,,,,,ct1,", "P2,A,0,,,,,,,,ct1,",
                                   "P3,B,1,,,,,,,,ct1,"))
    check_roles(cases, SiteRoles("A", "B"))
    with pytest.raises(ManifestError, match="--external-site 'C': no case of that site"):
        check_roles(cases, SiteRoles("A", "B", "C"))
    with pytest.raises(ManifestError, match="--cv-site 'B': needs both"):
        check_roles(cases, SiteRoles("B"))


def test_the_generator_follows_its_documented_rule():
    assert draw_case("A", 3, seed=1) == draw_case("A", 3, seed=1)
    cases = [draw_case("C", k, seed=1) for k in range(3000)]
    mutant = np.array([c.egfr_mutant for c in cases])
    female = np.array([c.patient.sex == "F" for c in cases])
    assert abs(mutant.mean() - PREVALENCE["C"]) < 0.03
    assert abs(female[mutant].mean() - 84 / 130) < 0.05       # Table 1, external columns
    assert abs(female[~mutant].mean() - 61 / 303) < 0.04
    diameters = np.array([c.spec.tumor_diameter_mm for c in cases])
    assert diameters[mutant].mean() < diameters[~mutant].mean()


def test_the_documented_bayes_auc_is_what_the_drawn_cases_give():
    """The population AUC of the likelihood ratio equals its AUC on drawn (rounded) cases."""
    for site in ("A", "C"):
        cases = [draw_case(site, k, seed=7) for k in range(6000)]
        score = [case_log_ratios(c, halo=False)["clinical"] for c in cases]
        labels = np.array([c.egfr_mutant for c in cases], dtype=float)
        assert abs(auc(labels, np.array(score)) - bayes_auc_clinical(site)) < 0.02, site
    assert 0.74 < bayes_auc_clinical("A") < 0.79 and 0.78 < bayes_auc_clinical("C") < 0.83


COLUMNS = [("A", "internal"), ("C", "external")]


@pytest.mark.parametrize("site, column", COLUMNS)
@pytest.mark.parametrize("group", [table1.MUTANT, table1.WILD_TYPE])
def test_the_drawn_facts_have_table_1s_counts_and_means(site, column, group):
    """Every Table 1 row of the site's column, from 40 000 drawn patients: shares within 0.01,
    means within 0.2 (y, cm, kg); the stage shares as the printed counts' proportions."""
    n, male, female, age, height, weight, smokers, family, stage = table1.TABLE1[(column, group)]
    rng = np.random.default_rng(11)
    drawn = [table1.draw(rng, site, group) for _ in range(40_000)]
    share = lambda test: np.mean([test(f) for f in drawn])  # noqa: E731
    assert share(lambda f: f.sex == "F") == pytest.approx(female / n, abs=0.01)
    assert share(lambda f: f.smoker) == pytest.approx(smokers / n, abs=0.01)
    assert share(lambda f: f.family_history) == pytest.approx(family / n, abs=0.01)
    for k, stage_name in enumerate(("I", "II", "III", "IV")):
        assert share(lambda f: f.stage == stage_name) == pytest.approx(stage[k] / sum(stage),
                                                                        abs=0.01)
    for value, mean in ((lambda f: f.age_y, age), (lambda f: f.height_cm, height),
                        (lambda f: f.weight_kg, weight)):
        assert np.mean([value(f) for f in drawn]) == pytest.approx(mean, abs=0.2)


def test_women_are_drawn_shorter_lighter_and_smoking_less_than_men():
    rng = np.random.default_rng(3)
    drawn = [table1.draw(rng, "B", table1.WILD_TYPE) for _ in range(20_000)]
    women = [f for f in drawn if f.sex == "F"]
    men = [f for f in drawn if f.sex == "M"]
    mean = lambda facts, value: np.mean([value(f) for f in facts])  # noqa: E731
    assert mean(men, lambda f: f.height_cm) - mean(women, lambda f: f.height_cm) == \
        pytest.approx(table1.HEIGHT_SEX_GAP_CM, abs=0.4)
    assert mean(men, lambda f: f.weight_kg) - mean(women, lambda f: f.weight_kg) == \
        pytest.approx(table1.WEIGHT_SEX_GAP_KG, abs=0.6)
    assert mean(women, lambda f: f.smoker) == pytest.approx(
        table1.FEMALE_SMOKING_RATIO * mean(men, lambda f: f.smoker), abs=0.02)


def test_independent_facts_would_give_the_clinical_facts_far_more_power():
    """The reason for the joint draw: Table 1's marginals drawn independently (the issue's
    check) give a higher Bayes AUC than the joint law, at both sites."""
    saved = (table1.FEMALE_SMOKING_RATIO, table1.HEIGHT_SEX_GAP_CM, table1.WEIGHT_SEX_GAP_KG)
    try:
        table1.FEMALE_SMOKING_RATIO, table1.HEIGHT_SEX_GAP_CM, table1.WEIGHT_SEX_GAP_KG = \
            1.0, 0.0, 0.0
        independent = {s: table1.bayes_auc(s, n=50_000) for s in ("A", "C")}
    finally:
        table1.FEMALE_SMOKING_RATIO, table1.HEIGHT_SEX_GAP_CM, table1.WEIGHT_SEX_GAP_KG = saved
    for site in ("A", "C"):
        assert independent[site] > table1.bayes_auc(site, n=50_000) + 0.02, site


def test_the_planted_halo_changes_nothing_but_the_halo():
    """Same patients, labels and tumors with and without it; drawn at the documented rates."""
    plain = [draw_case("B", k, seed=5) for k in range(3000)]
    haloed = [draw_case("B", k, seed=5, halo=True) for k in range(3000)]
    assert all(p == replace(h, spec=replace(h.spec, halo_mm=0.0)) for p, h in zip(plain, haloed))
    mutant = np.array([c.egfr_mutant for c in haloed])
    present = np.array([c.spec.halo_mm > 0 for c in haloed])
    for group, members in enumerate((mutant, ~mutant)):
        assert abs(present[members].mean() - GROUND_GLASS_HALO.probability[group]) < 0.04
    score = np.array([case_log_ratios(c, halo=True)["all"] for c in haloed])
    all_auc = bayes_auc_clinical_phenotype("B", n=50_000, halo=True)
    assert abs(auc(mutant.astype(float), score) - all_auc) < 0.025
    assert all_auc > bayes_auc_clinical_phenotype("B", n=50_000) + 0.05


def test_the_halo_lies_outside_the_tumor_mask_so_radiomics_cannot_see_it():
    case = draw_case("A", 0, seed=3)
    spec = replace(case.spec, rows=160, columns=160, slices=48, tumor_diameter_mm=24.0)
    plain, haloed = (make_chest_phantom(replace(spec, halo_mm=w)) for w in (0.0, 6.0))
    assert np.array_equal(plain.tumor_mask, haloed.tumor_mask)
    inside = plain.tumor_mask
    assert np.array_equal(plain.hu[inside], haloed.hu[inside])     # radiomics' voxels
    changed = plain.hu != haloed.hu
    assert changed.sum() > inside.sum() / 2 and not (changed & inside).any()
    rim = haloed.hu[changed].astype(float) - plain.hu[changed]
    assert np.median(rim) > 200                                  # lung → ground glass


def test_a_written_cohort_reads_back_with_masks_on_the_tumor(tmp_path):
    path = write_cohort(tmp_path / "cohort", {"A": 2, "B": 0, "C": 1}, seed=3, halo=True,
                        workers=2)
    cases = read_manifest(path)
    assert [c.site for c in cases] == ["A", "A", "C"]
    facts = json.loads((tmp_path / "cohort" / "generator.json").read_text())
    assert facts["synthetic"] and facts["bayes_auc_clinical"]["C"] == round(
        bayes_auc_clinical("C"), 4)
    assert facts["ground_glass_halo"] == {"probability": [0.6, 0.15], "width_mm": [4.0, 10.0]}
    assert min(facts["bayes_auc_all"].values()) > 0.8
    with (tmp_path / "cohort" / "truth.csv").open() as stream:
        truth = {row["case_id"]: row for row in csv.DictReader(stream)}
    for case in cases:
        drawn = draw_case(case.site, int(case.case_id[-4:]), seed=3, halo=True)
        assert float(truth[case.case_id]["halo_mm"]) == drawn.spec.halo_mm
        assert float(truth[case.case_id]["bayes_log_ratio_all"]) == pytest.approx(
            case_log_ratios(drawn, halo=True)["all"], abs=1e-5)
        volume = load_volume(series_files(case.image))
        assert volume.header.sex == case.header.sex == drawn.patient.sex
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(case.mask))) > 0
        phantom = make_chest_phantom(drawn.spec)
        same_slice = [next(k for k in range(len(phantom.hu))   # noise makes each slice unique
                           if np.array_equal(phantom.hu[k], hu)) for hu in volume.hu]
        assert np.array_equal(mask, phantom.tumor_mask[same_slice]) and mask.any()


def test_evaluate_takes_the_population_auc_of_the_roles_site():
    from training.evaluate import _population_auc

    generator = {"roles": {"A": "cross-validation", "B": "internal", "C": "external"},
                 "bayes_auc_clinical": {"A": 0.77, "B": 0.76, "C": 0.81}}
    assert _population_auc(generator, "clinical", "external") == 0.81
    assert _population_auc(generator, "clinical", "internal") == 0.76
    assert _population_auc({"bayes_auc_clinical": 0.69}, "clinical", "external") == 0.69
    assert _population_auc(generator, "all", "external") is None


def test_a_stronger_halo_is_drawn_as_asked_and_the_bad_one_is_refused(tmp_path):
    strong = Halo(probability=(0.8, 0.1), width_mm=(6.0, 12.0))
    cases = [draw_case("A", k, seed=5, halo=strong) for k in range(2000)]
    plain = [draw_case("A", k, seed=5) for k in range(50)]
    assert [c.patient for c in cases[:50]] == [c.patient for c in plain]   # same patients
    for group, mutant in ((0, True), (1, False)):
        widths = np.array([c.spec.halo_mm for c in cases if c.egfr_mutant == mutant])
        assert abs((widths > 0).mean() - strong.probability[group]) < 0.04
        assert widths[widths > 0].min() >= 6.0 and widths.max() <= 12.0
    assert bayes_auc_clinical_phenotype("A", n=20_000, halo=strong) > \
        bayes_auc_clinical_phenotype("A", n=20_000, halo=True) + 0.03
    with pytest.raises(ValueError, match="halo probability"):
        Halo(probability=(1.0, 0.1))
    with pytest.raises(ValueError, match="halo width"):
        Halo(width_mm=(8.0, 4.0))
    assert cli_main(["synth-cohort", str(tmp_path / "x"), "--halo-width-mm", "0", "4"]) == 2
