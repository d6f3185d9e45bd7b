"""The CPU profile of the multimodal experiment (``make multimodal-cpu``,
bench/multimodal_cpu.sh), run end to end with a few cases and one epoch: every step runs,
every table, the DeLong row, the exported multimodal bundle and the Grad-CAM shares are there
and say what they are. The full run's numbers are in the README; at this size they mean
nothing, and nothing here asserts them."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
STEPS = ("synth-cohort", "prepare", "fit-radiomics-clinical", "fit-resnet10-small", "evaluate",
         "export", "attention", "total")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    out = tmp_path_factory.mktemp("cpu") / "multimodal-cpu"
    env = {**os.environ, "VENV": str(Path(sys.executable).parent.parent),
           "CASES": "--cv-cases 20 --internal-cases 8 --external-cases 16",
           "CNN_ARGS": "--epochs 1 --batch-size 8 --lr 1e-3",
           "TABULAR_ARGS": "--epochs 3 --batch-size 8 --lr 1e-3", "ATTENTION_CASES": "2",
           "SEED": "11"}
    run = subprocess.run(["bash", str(REPO / "bench" / "multimodal_cpu.sh"), str(out)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stderr[-3000:]
    return out, run.stdout


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream, delimiter="\t" if path.suffix == ".tsv" else ","))


def test_every_step_ran_and_was_timed(experiment):
    out, stdout = experiment
    seconds = {r["step"]: int(r["seconds"]) for r in rows(out / "wall_seconds.tsv")}
    assert tuple(seconds) == STEPS and all(v >= 0 for v in seconds.values())
    assert seconds["total"] >= sum(v for k, v in seconds.items() if k != "total")
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("SYNTHETIC cohort") and "wall time:" in summary
    assert stdout.endswith(summary)


def test_the_tables_compare_both_models_with_delong_and_the_paper(experiment):
    out, stdout = experiment
    external = rows(out / "evaluation" / "table3_external.csv")
    assert [r["model"] for r in external] == ["radiomics-clinical (radiomics-clinical)",
                                              "resnet10-small (resnet10-small)"]
    assert all(0.0 <= float(r["auc"]) <= 1.0 for r in external)
    delong = rows(out / "evaluation" / "delong_external.csv")
    assert len(delong) == 1 and 0.0 <= float(delong[0]["p"]) <= 1.0
    assert f"p {delong[0]['p']}" in stdout
    assert "SYNTHETIC" in (out / "evaluation" / "report.md").read_text()


def test_the_exported_bundle_is_the_multimodal_one_and_says_synthetic(experiment):
    out, _ = experiment
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["architecture"] == "resnet10-small"
    assert manifest["training_data"]["synthetic"] is True


def test_the_grad_cam_shares_are_measured_on_halo_cases(experiment):
    out, _ = experiment
    summary = json.loads((out / "attention" / "attention.json").read_text())
    assert summary["synthetic"] and summary["site"] == "C" and summary["measured"] >= 1
    measured = [r for r in rows(out / "attention" / "attention.csv") if r.get("share_halo")]
    for row in measured:
        assert float(row["halo_mm"]) > 0
        shares = {name: float(row[f"share_{name}"]) for name in ("halo", "tumor", "lesion")}
        assert all(0.0 <= v <= 1.0 for v in shares.values())
        assert shares["lesion"] == pytest.approx(shares["halo"] + shares["tumor"], abs=2e-4)
        # the phantom's halo ring lies around its tumor, both in the network's field of view
        assert 0.0 < float(row["field_of_view_halo"]) < float(row["field_of_view_lesion"]) < 1.0
