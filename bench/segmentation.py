"""The node's segmenter on real chest CT: the variant table, hybrid lesions by kind, real
tumors, lesion-free CT.

    python bench/segmentation.py [--segmenter default|lungtumormask] [--weights FILE]
                                 [--quick] [--variants-only | --no-variants]

The variant table: every real CT the project has (lung1, lung2 with their masks, Lung_Dx-A0001
with its mass's region, the lesion-free thorax, and that thorax with a solid and a
juxta-mediastinal lesion inserted) made into each acquisition variant of
``training.ct_variants`` (slice spacing 1-5 mm, pixel spacing 0.5/0.98 mm, one-lung field of
view, apex and base cut, noise, contrast, off-centre). For each: found?, Dice against the label
carried through the same transform, the quality flags, seconds; then the rate of right answers
by case and by variant.

Needs the real CTs (``cdss-train real-ct``). Hybrid cases: the lesion-free TotalSegmentator
thorax at 1 mm and 5 mm slices, each lesion kind at 6-60 mm (``training.segmentation_eval``).
Real cases: the PyRadiomics lung1/lung2 tumors (their masks) and Lung_Dx-A0001 (a mass without
mask: found when at least half the mask lies on slices 40-54, where the mass is). Prints
detection and median Dice by kind for lesions of at least 10 mm, every case, "no tumor found" on the
lesion-free thorax, and the seconds per CT. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from cdss_node.analysis import make_segmenter  # noqa: E402
from cdss_node.jobs import AnalysisSettings  # noqa: E402
from training import real_ct  # noqa: E402
from training.hybrid_lesions import KINDS, host_from_image  # noqa: E402
from training.segmentation_eval import (  # noqa: E402
    DIAMETERS_MM, SLICES_MM, dice, evaluate, hybrid_cases, summary_rows, volume_of)

LUNGDX_MASS_SLICES = (40, 54)


def hybrid(segmenter, quick: bool) -> list:
    image, _ = real_ct.load("ts-thorax")
    hosts = {s: host_from_image(image, s) for s in SLICES_MM}
    diameters = (10.0, 30.0) if quick else DIAMETERS_MM
    results = []
    for host, kind, diameter, seed in hybrid_cases(hosts, KINDS, diameters):
        try:
            result = evaluate(segmenter, host, kind, diameter, seed)
        except ValueError as no_room:
            print(f"  {kind:<18} {diameter:4.0f} mm  {host.spacing_mm[0]:.0f} mm slices  "
                  f"skipped: {no_room}")
            continue
        results.append(result)
        print(f"  {kind:<18} {diameter:4.0f} mm  {result.slice_mm:.0f} mm slices  "
              f"{'found' if result.detected else 'MISSED':<6}  Dice {result.dice:.2f}  "
              f"{result.found_ml:7.2f} ml of {result.true_ml:7.2f}  "
              f"{result.candidates:3d} candidates  {result.seconds:.1f} s",
              flush=True)
    return results


def real_cases(segmenter) -> list[str]:
    lines = []
    for name in ("pyrad-lung1", "pyrad-lung2", "lungdx-a0001"):
        image, truth = real_ct.load(name)
        hu, spacing = real_ct.arrays(image)
        started = time.perf_counter()
        mask = segmenter.segment(volume_of(hu, spacing)).mask
        seconds = time.perf_counter() - started
        slices = np.flatnonzero(mask.any(axis=(1, 2)))
        where = f"slices {slices.min()}-{slices.max()}" if len(slices) else "no tumor found"
        if truth is not None:
            lines.append(f"  {name:<14} Dice {dice(mask, truth):.2f}  {where}  {seconds:.1f} s")
        else:
            low, high = LUNGDX_MASS_SLICES
            on_mass = mask.any() and mask[low:high + 1].sum() >= 0.5 * mask.sum()
            lines.append(f"  {name:<14} {'found' if on_mass else 'MISSED'} (mass on slices "
                         f"{low}-{high})  {where}  {seconds:.1f} s")
    return lines


def lesion_free(segmenter) -> list[str]:
    image, _ = real_ct.load("ts-thorax")
    lines = []
    for slice_mm in SLICES_MM:
        host = host_from_image(image, slice_mm)
        mask = segmenter.segment(volume_of(host.hu, host.spacing_mm)).mask
        ml = mask.sum() * np.prod(host.spacing_mm) / 1000
        lines.append(f"  ts-thorax {slice_mm:.0f} mm slices: "
                     + ("no tumor found" if not mask.any() else f"FALSE TUMOR of {ml:.1f} ml"))
    return lines


def variant_table(segmenter) -> list:
    from training.ct_variants import real_cases, variants
    from training.segmentation_eval import score_variant
    results = []
    print(f"  {'case':<24} {'variant':<13} {'shape':<16} {'outcome':<12} {'Dice':>5} "
          f"{'ml':>6}  {'flags':<12} {'s':>5}")
    for case in real_cases():
        for name, make in variants().items():
            r = score_variant(segmenter, make(case), name)
            results.append(r)
            shape = "x".join(str(n) for n in r.shape)
            score = "" if r.dice is None else f"{r.dice:.2f}"
            print(f"  {r.case:<24} {r.variant:<13} {shape:<16} {r.outcome:<12} {score:>5} "
                  f"{r.found_ml:6.1f}  {','.join(r.flags):<12} {r.seconds:5.1f}", flush=True)
    return results


def variant_summary(results: list) -> None:
    print("\nright answers (labelled tumor found / lesion-free: no tumor), by case:")
    for case in dict.fromkeys(r.case for r in results):
        mine = [r for r in results if r.case == case]
        dices = [r.dice for r in mine if r.dice is not None]
        median = f", Dice median {statistics.median(dices):.2f} min {min(dices):.2f}" \
            if dices else ""
        print(f"  {case:<24} {sum(r.right for r in mine):>3}/{len(mine)}{median}")
    print("by variant:")
    for variant in dict.fromkeys(r.variant for r in results):
        mine = [r for r in results if r.variant == variant]
        print(f"  {variant:<14} {sum(r.right for r in mine):>3}/{len(mine)}")
    big = [r.seconds for r in results if np.prod(r.shape) >= 40e6]
    print(f"seconds per CT: median {statistics.median(r.seconds for r in results):.1f}, "
          f"CTs of 40 M voxels and more: median {statistics.median(big):.1f} max {max(big):.1f}"
          if big else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segmenter", default="default", choices=("default", "lungtumormask"))
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="10 and 30 mm lesions only")
    parser.add_argument("--variants-only", action="store_true", help="only the variant table")
    parser.add_argument("--no-variants", action="store_true", help="without the variant table")
    args = parser.parse_args()
    segmenter = make_segmenter(AnalysisSettings(
        segmenter=args.segmenter, unet_weights=str(args.weights or ""), device="auto"))
    print(f"segmenter: {segmenter.name} {segmenter.version}")
    if not args.no_variants:
        print("variant table:")
        variant_summary(variant_table(segmenter))
        if args.variants_only:
            return
    print("hybrid cases:")
    results = hybrid(segmenter, args.quick)
    print("\nreal tumors:", *real_cases(segmenter), sep="\n")
    print("\nlesion-free real CT:", *lesion_free(segmenter), sep="\n")
    print("\nby kind, lesions >= 10 mm (both slice spacings):")
    print(f"  {'kind':<18} {'cases':>5} {'detected':>9} {'median Dice':>12}")
    for kind, n, found, median in summary_rows(results):
        print(f"  {kind:<18} {n:>5} {found:>8.0f}% {median:>12.2f}")
    print(f"seconds per CT: median {statistics.median(r.seconds for r in results):.1f}")


if __name__ == "__main__":
    main()
