"""The paper's experiment end to end on a small synthetic cohort, through the commands a
hospital runs: synth-cohort → prepare → fit (radiomics + clinical, and ResNet34, few epochs)
→ evaluate → export → ``cdss-node analyze``, whose probability must equal the one ``fit``
reported for the same case (train/serve parity)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from training.cohort import COLUMNS
from training.metrics import auc

pytestmark = pytest.mark.slow
FOLDS = "5"


def run(*args: str, timeout: int = 1800) -> str:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """The cohort, its store, a fit of each family and the evaluation, made once."""
    root = tmp_path_factory.mktemp("experiment")
    run("-m", "training", "synth-cohort", str(root / "cohort"), "--cv-cases", "12",
        "--internal-cases", "4", "--external-cases", "6", "--seed", "5", "--ground-glass-halo")
    manifest = without_masks(root / "cohort" / "manifest.csv")
    run("-m", "training", "prepare", str(manifest), str(root / "store"), "--workers", "2")
    sites = ["--cv-site", "A", "--internal-site", "B", "--external-site", "C", "--folds", FOLDS]
    run("-m", "training", "fit", str(manifest), str(root / "store"),
        str(root / "radiomics-clinical"), *sites, "--epochs", "60", "--lr", "3e-3")
    run("-m", "training", "fit", str(manifest), str(root / "store"), str(root / "resnet34"),
        *sites, "--architecture", "resnet34", "--epochs", "1", "--batch-size", "8",
        "--lr", "1e-4")
    run("-m", "training", "evaluate", str(root / "radiomics-clinical"), str(root / "resnet34"),
        "--out", str(root / "evaluation"))
    return root, manifest


def without_masks(manifest):
    """The manifest without its masks: prepare then segments as the node does, so that
    ``cdss-node analyze`` sees the same tumor."""
    rows = list(csv.DictReader(manifest.open()))
    out = manifest.with_name("manifest-segmented.csv")
    with out.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({**row, "mask": ""} for row in rows)
    return out


def test_evaluate_writes_the_papers_tables_and_figures(experiment):
    root, _ = experiment
    evaluation = root / "evaluation"
    report = (evaluation / "report.md").read_text()
    for table in ("table2_internal", "table3_external", "table4_external_folds",
                  "delong_external", "calibration_external", "decision_curve_external"):
        assert f"## {table}" in report and (evaluation / f"{table}.csv").is_file()
    external = list(csv.DictReader((evaluation / "table3_external.csv").open()))
    assert [r["model"].split()[0] for r in external] == ["radiomics-clinical", "resnet34"]
    assert all(r["cases"] == "6" and 0.0 <= float(r["auc"]) <= 1.0 for r in external)
    assert [r["paper_acc_prec_rec_f1_auc"][-6:] for r in external] == ["0.7038", "0.7679"]
    assert (evaluation / "figures_external.png").stat().st_size > 10_000


def test_evaluate_sets_the_generators_bayes_score_beside_the_models(experiment):
    root, _ = experiment
    generator = json.loads((root / "cohort" / "generator.json").read_text())
    truth = {r["case_id"]: r for r in csv.DictReader((root / "cohort" / "truth.csv").open())}
    bayes = list(csv.DictReader((root / "evaluation" / "bayes_external.csv").open()))
    assert [r["bayes_score_of"] for r in bayes] == ["clinical", "clinical_phenotype", "all"]
    external = sorted((r for r in truth.values() if r["site"] == "C"), key=lambda r: r["case_id"])
    labels = np.array([int(r["egfr_mutant"]) for r in external])
    for row in bayes:
        scores = np.array([float(r[f"bayes_log_ratio_{row['bayes_score_of']}"]) for r in external])
        assert float(row["auc_these_cases"]) == pytest.approx(auc(labels, scores), abs=1e-4)
        population = generator[f"bayes_auc_{row['bayes_score_of']}"]["C"]
        assert float(row["auc_population"]) == population


@pytest.mark.parametrize("family", ["radiomics-clinical", "resnet34"])
def test_the_exported_bundle_gives_the_node_the_probability_fit_reported(experiment, family):
    root, manifest = experiment
    bundle = root / f"bundle-{family}"
    run("-m", "training", "export", str(root / family), str(bundle), "--model-id",
        f"test-{family}", "--name", f"test {family}")
    description = json.loads((bundle / "manifest.json").read_text())
    assert description["training_data"]["synthetic"]
    assert "SYNTHETIC" in description["intended_use"]
    reported = {r["case_id"]: r for r in csv.DictReader((root / family / "predictions.csv").open())}
    cases = {r["case_id"]: r for r in csv.DictReader(manifest.open())}
    for case_id in ("SYN-B-0000", "SYN-C-0001"):
        case = cases[case_id]
        out = root / f"analyzed-{family}-{case_id}"
        run("-m", "cdss_node", "analyze", str(manifest.parent / case["image"]), "--out", str(out),
            "--bundle", str(bundle), "--device", "cpu", "--stage", case["stage"],
            "--family-history", case["family_history"])
        result = json.loads((out / "result.json").read_text())
        probability = result["prediction"]["probability"]
        assert abs(probability - float(reported[case_id]["ensemble"])) <= 1e-5, case_id
