"""The committed sample series in ``sample_dicom/``: a default phantom written as DICOM.

Run ``python -m cdss_node.synthetic.sample OUT_DIR`` to write ``OUT_DIR/series/CT*.dcm`` and
``OUT_DIR/truth/{tumor_mask.npz,truth.json}``. The output depends only on ``SAMPLE_SPEC``,
``SAMPLE_PATIENT`` and ``SAMPLE_UID_SEED``, so running it again gives the same files.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cdss_node.dicom.ct_series import PatientFacts, write_ct_series, write_truth
from cdss_node.synthetic.phantom import PhantomSpec, make_chest_phantom

SAMPLE_SPEC = PhantomSpec(rows=256, columns=256, slices=80, pixel_spacing_mm=1.5,
                          slice_spacing_mm=2.5, tumor_diameter_mm=30.0, noise_hu=12.0, seed=0)
SAMPLE_PATIENT = PatientFacts()
SAMPLE_UID_SEED = "cdss-sample"


def write_sample(out_dir: Path) -> list[Path]:
    """Write the sample series and its truth under ``out_dir``; returns the series' paths."""
    out_dir = Path(out_dir)
    phantom = make_chest_phantom(SAMPLE_SPEC)
    paths = write_ct_series(phantom, out_dir / "series", SAMPLE_PATIENT, uid_seed=SAMPLE_UID_SEED)
    write_truth(phantom, out_dir / "truth", SAMPLE_PATIENT, uid_seed=SAMPLE_UID_SEED)
    return paths


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m cdss_node.synthetic.sample OUT_DIR", file=sys.stderr)
        return 2
    paths = write_sample(Path(args[0]))
    print(f"wrote {len(paths)} CT slices to {Path(args[0]) / 'series'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
