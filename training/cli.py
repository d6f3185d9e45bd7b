"""``cdss-train``: make data for, train and validate the node's models.

Today it makes synthetic chest CTs with a tumor of known mask (``synth-ct``); the cohort,
fitting, evaluation and export commands of the paper's experiment build on it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


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
    return parser


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
