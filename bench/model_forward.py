"""Fivefold EGFR inference on one tumor crop: seconds, parameters and size per architecture.

    python bench/model_forward.py [--architectures efficientnet-b7 resnet34 densenet264]
                                  [--folds 5] [--repeats 1] [--threads 2]

For each architecture: parameters and float32 size (MB = 10^6 bytes, weights and buffers) of
one fold model; seconds to load a bundle of the fold models from disk (sha256 of every fold
file, strict load); wall seconds of one ``predict_egfr`` on a (1, 64, 112, 112) crop with the
folds run as a loop and as one vmap over stacked weights (the peer), after one warm-up call,
median of the repeats; and the ratio vmap / loop. Weights are MONAI's initialisation: speed does
not depend on training. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cdss_node.model.bundle import describe_network, load_bundle, save_bundle  # noqa: E402
from cdss_node.model.ensemble import FoldEnsemble  # noqa: E402
from cdss_node.model.manifest import (  # noqa: E402
    ClinicalInputs,
    ModelDescription,
    RadiomicsScaling,
    TrainingData,
)
from cdss_node.model.predict import predict_egfr  # noqa: E402
from cdss_node.pipeline.clinical import FEATURES, ClinicalScaling  # noqa: E402
from cdss_node.pipeline.records import ClinicalVector, RadiomicsFeatures, TumorCrop  # noqa: E402

CNN_ARCHITECTURES = ("efficientnet-b7", "resnet34", "densenet264")
RADIOMICS = tuple(f"original_bench_Feature{i:03d}" for i in range(107))


def bench_description(architecture: str) -> ModelDescription:
    zeros, ones = dict.fromkeys(FEATURES, 0.0), dict.fromkeys(FEATURES, 1.0)
    return ModelDescription(
        model_id=f"bench-{architecture}", name="EGFR multimodal (benchmark)", version="0",
        architecture=architecture, hidden_features=256, dropout=0.3,
        radiomics=RadiomicsScaling(RADIOMICS, (0.0,) * 107, (1.0,) * 107),
        clinical=ClinicalInputs(FEATURES, ClinicalScaling(zeros, zeros, ones)),
        decision_threshold=0.5, intended_use="Benchmark only.",
        training_data=TrainingData("Untrained (MONAI initialisation).", synthetic=True))


def inputs(seed: int = 0) -> tuple[TumorCrop, RadiomicsFeatures, ClinicalVector]:
    rng = np.random.default_rng(seed)
    crop = TumorCrop(rng.uniform(0, 1, (1, 64, 112, 112)).astype(np.float32), (0, 0, 0),
                     (0, 0, 0))
    radiomics = RadiomicsFeatures(RADIOMICS, rng.uniform(0, 1, 107))
    clinical = ClinicalVector(FEATURES, rng.uniform(0, 1, len(FEATURES)).astype(np.float32),
                              raw={}, imputed=())
    return crop, radiomics, clinical


def seconds(call, repeats: int) -> float:
    call()  # warm-up: oneDNN builds its kernels for the shapes on the first call
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(architecture: str, folds: int, repeats: int) -> dict:
    description = bench_description(architecture)
    networks = [describe_network(description).eval() for _ in range(folds)]
    state = networks[0].state_dict().values()
    row = {"architecture": architecture,
           "params": sum(p.numel() for p in networks[0].parameters()),
           "fp32_mb": sum(t.numel() * 4 for t in state if t.is_floating_point()) / 1e6}
    with tempfile.TemporaryDirectory() as tmp:
        save_bundle(Path(tmp) / "bundle", description, networks)
        started = time.perf_counter()
        bundle = load_bundle(Path(tmp) / "bundle", device="cpu", batching="loop")
        row["load_s"] = time.perf_counter() - started
    case = inputs()
    for batching in ("loop", "vmap"):
        ensemble = bundle.ensemble if batching == "loop" else FoldEnsemble(networks, "vmap")
        timed = replace(bundle, ensemble=ensemble)
        row[f"{batching}_s"] = seconds(lambda t=timed: predict_egfr(t, *case), repeats)
        del ensemble, timed
    return row


def print_table(rows: list[dict], folds: int, threads: int) -> None:
    print(f"\n{folds}-fold inference on one (1, 64, 112, 112) crop, CPU, "
          f"torch.set_num_threads({threads}), torch {torch.__version__}")
    header = ("architecture", "params/fold", "fp32 MB/fold", "load s", "loop s", "vmap s",
              "vmap/loop")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(f"| {r['architecture']} | {r['params'] / 1e6:.1f} M | {r['fp32_mb']:.4g} | "
              f"{r['load_s']:.3g} | {r['loop_s']:.3g} | {r['vmap_s']:.3g} | "
              f"{r['vmap_s'] / r['loop_s']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architectures", nargs="+", default=list(CNN_ARCHITECTURES))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for architecture in args.architectures:
        rows.append(measure(architecture, args.folds, args.repeats))
        print(rows[-1], flush=True)
    print_table(rows, args.folds, args.threads)


if __name__ == "__main__":
    main()
