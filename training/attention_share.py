"""``cdss-train attention``: where a multimodal bundle's image network looks, measured on a
synthetic cohort with the planted ground-glass halo (``synth-cohort --ground-glass-halo``).

For each case of a site whose truth has a halo (``truth.csv``: ``halo_mm`` > 0), up to
``--cases`` of them: the node's own analysis of the case's CT (``analyze_series``: the bundle,
its Grad-CAM) with the cohort's tumor mask, as ``prepare`` gave it to training (the node's
default segmenter takes the ground-glass halo into the tumor, as one outlines a part-solid
nodule, so its radiomics would see the halo); then the part of the Grad-CAM's sum that lies
in the halo ring (the phantom's, outside the tumor: the planted signal radiomics cannot see),
in the tumor (the phantom's), and in the two together (the lesion). Beside each share, the part of the network's
field of view that region covers: the share an attention spread evenly would give.

Writes ``attention.csv`` (per case) and ``attention.json`` (medians, means, and the median
ratio of share to field-of-view fraction) into OUT. SYNTHETIC cohort: the numbers say whether
the explanation points at the signal that was planted, nothing about real tumors.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cdss_node.analysis import series_files
from cdss_node.model.attention import inside_share, on_ct
from cdss_node.model.bundle import ModelBundle, load_bundle
from cdss_node.model.network import image_window, uses_image
from cdss_node.pipeline.analyze import Analysis, analyze_series
from cdss_node.pipeline.clinical import SuppliedFacts
from cdss_node.pipeline.records import CTVolume, TumorMask
from cdss_node.synthetic.phantom import ground_glass_halo_mask, make_chest_phantom
from training.prepare import mask_tumor
from training.synth_cohort import SITES, Halo, SynthCase, draw_case, volume_order

REGIONS = ("halo", "tumor", "lesion")


def halo_cases(cohort: Path, site: str, limit: int) -> list[SynthCase]:
    """The first ``limit`` cases of ``site`` with a planted halo, drawn again from the seed."""
    generator = json.loads((cohort / "generator.json").read_text())
    if not generator.get("ground_glass_halo"):
        raise ValueError(f"{cohort}: no planted halo (made without --ground-glass-halo)")
    if site not in SITES:
        raise ValueError(f"site: expected one of {SITES}, found {site!r}")
    with (cohort / "truth.csv").open(newline="") as stream:
        rows = [r for r in csv.DictReader(stream)
                if r["site"] == site and float(r["halo_mm"]) > 0]
    planted = Halo(**{k: tuple(v) for k, v in generator["ground_glass_halo"].items()})
    cases = [draw_case(site, int(r["case_id"].rsplit("-", 1)[1]), generator["seed"], planted)
             for r in rows[:limit]]
    for case, row in zip(cases, rows):
        if case.case_id != row["case_id"] or abs(case.spec.halo_mm - float(row["halo_mm"])) > 0.01:
            raise ValueError(f"{row['case_id']}: the generator draws another case than truth.csv")
    return cases


@dataclass(frozen=True)
class CohortMask:
    """A segmenter that gives the cohort's tumor mask, as ``prepare`` does (``mask_tumor``)."""

    path: Path
    name: str = "cohort mask"
    version: str = "1"

    def segment(self, volume: CTVolume) -> TumorMask:
        return mask_tumor(self.path, volume)


def case_shares(case: SynthCase, cohort: Path, bundle: ModelBundle) -> dict:
    """One case through the node; the Grad-CAM's shares in halo, tumor and lesion."""
    folder = cohort / "cases" / case.case_id
    analysis = analyze_series(series_files(folder / "ct"), CohortMask(folder / "mask.nii.gz"),
                              bundle, SuppliedFacts(family_history=case.family_history,
                                                    stage=case.stage))
    row = {"case_id": case.case_id, "egfr_mutant": int(case.egfr_mutant),
           "halo_mm": case.spec.halo_mm, "status": analysis.status}
    if analysis.attention is None:
        return row
    regions = _regions(case, analysis)
    view = _field_of_view(analysis, bundle.description.architecture)
    row["probability"] = round(analysis.prediction.probability, 4)
    for name, region in regions.items():
        row[f"share_{name}"] = round(inside_share(analysis.attention.values, region), 4)
        row[f"field_of_view_{name}"] = round(float((region & view).sum() / view.sum()), 5)
    return row


def _regions(case: SynthCase, analysis: Analysis) -> dict[str, np.ndarray]:
    """The phantom's halo ring and tumor, in the volume's slice order, and the two together."""
    phantom = make_chest_phantom(case.spec)
    order = volume_order(case, phantom, analysis.volume.source_instance_uids)
    halo, tumor = ground_glass_halo_mask(case.spec)[order], phantom.tumor_mask[order]
    return {"halo": halo, "tumor": tumor, "lesion": halo | tumor}


def _field_of_view(analysis: Analysis, architecture: str) -> np.ndarray:
    """The CT voxels the network's image input covers."""
    crop = analysis.crop
    window = np.zeros(crop.image.shape[1:], dtype=np.float32)
    window[image_window(architecture, crop.image.shape)[1:]] = 1.0
    return on_ct(window, crop, analysis.tumor.mask.shape) > 0


def measure(bundle_path: Path, cohort: Path, site: str, limit: int, out: Path,
            progress: Callable[[dict], None] = lambda row: None) -> dict:
    """Every chosen case; ``attention.csv`` and ``attention.json`` in ``out``."""
    bundle = load_bundle(bundle_path, device="cpu")
    if not uses_image(bundle.description.architecture):
        raise ValueError(f"{bundle_path}: {bundle.description.architecture} has no image "
                         "network, so no Grad-CAM")
    rows = []
    for case in halo_cases(cohort, site, limit):
        rows.append(case_shares(case, cohort, bundle))
        progress(rows[-1])
    summary = summarise(rows, bundle, site)
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "attention.csv", rows)
    (out / "attention.json").write_text(json.dumps(summary, indent=2))
    return summary


def summarise(rows: list[dict], bundle: ModelBundle, site: str) -> dict:
    measured = [r for r in rows if "share_halo" in r]
    summary = {"synthetic": True, "bundle": bundle.model_id, "sha256": bundle.sha256,
               "site": site, "cases": len(rows), "measured": len(measured)}
    for name in REGIONS:
        shares = np.array([r[f"share_{name}"] for r in measured])
        fractions = np.array([r[f"field_of_view_{name}"] for r in measured])
        if not len(shares):
            continue
        summary[name] = {"median_share": round(float(np.median(shares)), 4),
                         "mean_share": round(float(shares.mean()), 4),
                         "cases_with_share_over_half": int((shares > 0.5).sum()),
                         "median_field_of_view_fraction": round(float(np.median(fractions)), 5),
                         "median_lift": round(float(np.median(shares / np.maximum(fractions,
                                                                                   1e-9))), 2)}
    return summary


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
