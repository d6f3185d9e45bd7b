"""Seconds per pipeline stage for one chest CT of 244 slices of 512 x 512.

    python bench/analyze.py [--repeats 3] [--device auto] [--architecture efficientnet-b7]

Runs the analysis the node runs (``Analyzer``) on a synthetic 244 x 512 x 512 CT (0.75 mm
pixels, 1.25 mm slices) with two bundles: a five-fold bundle of the named CNN architecture
whose weights are UNTRAINED (seeded random initialisation: the work per inference is the same
as a trained model's, its answer means nothing), and the shipped default bundle (radiomics +
clinical only). Prints the median seconds of each stage over the repeats, after one warm-up.
Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from cdss_node.analysis import Analyzer, AnalysisSettings  # noqa: E402
from cdss_node.jobs import DEFAULT_BUNDLE  # noqa: E402
from cdss_node.dicom.ct_series import write_ct_series  # noqa: E402
from cdss_node.model.bundle import describe_network, read_manifest, save_bundle  # noqa: E402
from cdss_node.model.manifest import TrainingData  # noqa: E402
from cdss_node.synthetic.phantom import PhantomSpec, make_chest_phantom  # noqa: E402

OUT = REPO / "bench" / "out"
SPEC = PhantomSpec(rows=512, columns=512, slices=244, pixel_spacing_mm=0.75,
                   slice_spacing_mm=1.25, tumor_diameter_mm=30.0, seed=11)


def chest_ct() -> list[Path]:
    folder = OUT / "chest_512x512x244"
    marker = folder.with_name(folder.name + ".complete")
    if not marker.exists():
        started = time.monotonic()
        write_ct_series(make_chest_phantom(SPEC), folder, uid_seed="bench-analyze")
        marker.touch()
        print(f"generated the CT in {time.monotonic() - started:.0f} s")
    return sorted(folder.glob("*.dcm"))


def untrained_bundle(architecture: str, folds: int = 5) -> Path:
    """The default bundle's inputs and scaling, the named CNN, untrained weights."""
    folder = OUT / f"untrained_{architecture}_x{folds}"
    if (folder / "manifest.json").exists():
        return folder
    description = replace(
        read_manifest(DEFAULT_BUNDLE).description, architecture=architecture,
        model_id=f"untrained-{architecture}", name=f"UNTRAINED {architecture} (timing only)",
        training_data=TrainingData(description="UNTRAINED: seeded random weights, for timing "
                                   "only; inputs scaled as the synthetic default bundle.",
                                   synthetic=True))
    torch.manual_seed(0)
    save_bundle(folder, description, [describe_network(description) for _ in range(folds)])
    return folder


def time_stages(settings: AnalysisSettings, paths: list[Path], repeats: int) -> dict:
    started = time.monotonic()
    analyzer = Analyzer(settings)
    load_s = time.monotonic() - started
    runs = []
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        for i in range(repeats + 1):  # the first run warms up
            started = time.monotonic()
            outcome = analyzer.analyze(paths, Path(tmp) / str(i))
            total = time.monotonic() - started
            stages = _stage_seconds(Path(outcome.result_file))
            runs.append({**stages, "total (with result files)": total})
    if outcome.status != "ok":
        print(f"warning: {outcome.summary()}")
    table = {k: statistics.median(r[k] for r in runs[1:]) for k in runs[0]}
    return {"torch threads": torch.get_num_threads(), "bundle load (once per process)": load_s,
            **table}


def _stage_seconds(result_file: Path) -> dict:
    import json

    return json.loads(result_file.read_text())["stage_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--architecture", default="efficientnet-b7",
                        choices=("efficientnet-b7", "resnet34", "densenet264"))
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    paths = chest_ct()
    columns = {
        f"{args.architecture} x5": AnalysisSettings(
            bundle=str(untrained_bundle(args.architecture)), device=args.device),
        "default (radiomics-clinical) x5": AnalysisSettings(device=args.device),
    }
    tables = {name: time_stages(s, paths, args.repeats) for name, s in columns.items()}
    report(tables, args, len(paths))


def report(tables: dict, args, slices: int) -> None:
    device = "cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu"
    print(f"\nanalysis of one CT, {slices} slices of 512 x 512; device {device}; "
          f"median of {args.repeats} runs after a warm-up")
    names = list(tables)
    print(f"{'stage':<34}" + "".join(f"{n:>24}" for n in names))
    for stage in tables[names[0]]:
        print(f"{stage:<34}" + "".join(f"{tables[n].get(stage, float('nan')):>24.2f}"
                                       for n in names))


if __name__ == "__main__":
    main()
