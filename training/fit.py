"""``cdss-train fit``: the paper's fivefold training on the cross-validation site.

Inputs come from the feature store (``training.prepare``) and are scaled by the node's own
functions (``scale_radiomics``, ``clinical_vector``) with ranges and medians of the whole
training site, the scaling the exported bundle carries (so the cross-validation estimate has
seen the held-out folds' ranges, not their labels). Folds are stratified by EGFR label. Each
fold trains the paper's network (``cdss_node.model.network``) with AdamW, a cosine learning
rate over the epochs, and, for the CNNs, MONAI 3D augmentation of the tumor crop (rotation,
scaling and shift, Gaussian noise, Gaussian blur). Every epoch writes ``fold_<k>/last.pt``;
``fold_<k>/history.json`` has each epoch's loss, seconds, cases per second (and peak GPU memory);
a run that stops resumes at the next epoch with the same result, because every epoch's
shuffling, augmentation and dropout are seeded from (seed, fold, epoch). ``fold_<k>/final.pt``
holds the fold's trained weights (and replaces ``last.pt``, which carries the optimiser too).
Mixed precision (bfloat16) on CUDA; several GPUs under ``torchrun`` (``training.distributed``).

After the folds: each fold model predicts its held-out cases (out-of-fold) and every case of
the internal and external sites; ``predictions.csv`` has them and, for the internal and
external cases, the ensemble (the mean of the fold probabilities, as the node computes it), ``fit.json`` the settings, scalings, the
decision threshold (Youden on the out-of-fold probabilities) and the case counts.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from cdss_node.model.manifest import RadiomicsScaling
from cdss_node.model.network import (
    DEFAULT_DROPOUT, DEFAULT_HIDDEN, RADIOMICS_CLINICAL, build_network, network_image,
    uses_image)
from cdss_node.model.predict import scale_radiomics
from cdss_node.pipeline.clinical import FEATURES, ClinicalScaling, clinical_vector, encode
from cdss_node.pipeline.records import RadiomicsFeatures
from cdss_node.pipeline.unet_segment import choose_device
from training.cohort import SiteRoles
from training.distributed import Process, barrier, device_of, join, leave, shard, wrap
from training.metrics import fold_of_case, youden_threshold
from training.prepare import PreparedCase, write_json


@dataclass(frozen=True)
class FitSettings:
    architecture: str = RADIOMICS_CLINICAL
    folds: int = 5
    epochs: int = 30
    batch_size: int = 16
    learning_rate: float = 1e-5          # the paper's
    weight_decay: float = 1e-2
    hidden: int = DEFAULT_HIDDEN
    dropout: float = DEFAULT_DROPOUT
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    init_weights: str = ""               # see training.init_weights
    init_tabular: str = ""               # a radiomics-clinical fit folder (load_tabular_weights)
    freeze_tabular: bool = False         # the tabular branch keeps its initial weights


@dataclass(frozen=True)
class ScaledInputs:
    """The network inputs of a set of cases, scaled as the node scales them."""

    case_ids: tuple[str, ...]
    sites: tuple[str, ...]
    labels: np.ndarray                   # float32, 1 = mutant
    radiomics: np.ndarray                # float32 (n, 107)
    clinical: np.ndarray                 # float32 (n, 10)
    crops: np.ndarray | None             # float32 (n, 1, 64, 112, 112) for the CNNs (or
                                         # the window of it the CNN reads: network_image)

    def subset(self, chosen: np.ndarray) -> "ScaledInputs":
        return ScaledInputs(tuple(np.asarray(self.case_ids)[chosen]),
                            tuple(np.asarray(self.sites)[chosen]), self.labels[chosen],
                            self.radiomics[chosen], self.clinical[chosen],
                            None if self.crops is None else self.crops[chosen])


def training_scalings(cases: list[PreparedCase]) -> tuple[RadiomicsScaling, ClinicalScaling]:
    """Radiomics ranges and clinical medians and ranges of the training cases."""
    radiomics = np.stack([c.radiomics for c in cases])
    raw = np.array([[np.nan if (v := encode(c.header, c.supplied)[name]) is None else v
                     for name in FEATURES] for c in cases], dtype=np.float64)

    def per_feature(stat) -> dict[str, float]:
        return {name: float(stat(raw[:, k])) if np.isfinite(raw[:, k]).any() else 0.0
                for k, name in enumerate(FEATURES)}

    return (RadiomicsScaling(names=cases[0].radiomics_names,
                             minimums=tuple(float(v) for v in radiomics.min(axis=0)),
                             maximums=tuple(float(v) for v in radiomics.max(axis=0))),
            ClinicalScaling(medians=per_feature(np.nanmedian), minimums=per_feature(np.nanmin),
                            maximums=per_feature(np.nanmax)))


def scaled_inputs(cases: list[PreparedCase], radiomics: RadiomicsScaling,
                  clinical: ClinicalScaling, architecture: str) -> ScaledInputs:
    """The cases' inputs to ``architecture``: the crops (the part of them the CNN reads) only
    for an architecture with an image branch."""
    return ScaledInputs(
        case_ids=tuple(c.case_id for c in cases), sites=tuple(c.site for c in cases),
        labels=np.array([c.egfr_mutant for c in cases], dtype=np.float32),
        radiomics=np.stack([scale_radiomics(RadiomicsFeatures(c.radiomics_names, c.radiomics),
                                            radiomics) for c in cases]),
        clinical=np.stack([clinical_vector(c.header, clinical, c.supplied).values
                           for c in cases]),
        crops=np.stack([network_image(architecture, c.crop) for c in cases])
        if uses_image(architecture) else None)


def fit(prepared: list[PreparedCase], roles: SiteRoles, out: Path, settings: FitSettings,
        progress: Callable[[str], None] = tqdm.write, manifest: Path | None = None) -> dict:
    """Train the folds into ``out``; write ``predictions.csv`` and ``fit.json``. Under
    ``torchrun``, every process trains and the first writes (the others return {})."""
    process = join()
    try:
        return _fit(prepared, roles, out, settings, progress, manifest, process)
    finally:
        leave(process)


def _fit(prepared: list[PreparedCase], roles: SiteRoles, out: Path, settings: FitSettings,
         progress: Callable[[str], None], manifest: Path | None, process: Process) -> dict:
    training = [c for c in prepared if c.site == roles.cross_validation]
    radiomics_scaling, clinical_scaling = training_scalings(training)
    sets = {role: scaled_inputs(cases, radiomics_scaling, clinical_scaling,
                                settings.architecture)
            for role, cases in _by_role(prepared, roles).items() if cases}
    fold = fold_of_case(sets["cross-validation"].labels, settings.folds, settings.seed)
    check_tabular_start(settings, sets["cross-validation"].case_ids, fold)
    networks = []
    for k in range(settings.folds):
        train = sets["cross-validation"].subset(fold != k)
        networks.append(train_fold(k + 1, train, settings, out / f"fold_{k + 1}", process))
        if process.main:
            progress(f"fold {k + 1}/{settings.folds} trained")
    if not process.main:
        return {}
    rows = prediction_rows(networks, sets, fold, settings)
    summary = _summary(rows, settings, roles, radiomics_scaling, clinical_scaling)
    summary["manifest"] = None if manifest is None else str(Path(manifest).resolve())
    _write_predictions(out / "predictions.csv", rows, settings.folds)
    write_json(out / "fit.json", summary)
    return summary


def _by_role(prepared: list[PreparedCase], roles: SiteRoles) -> dict[str, list[PreparedCase]]:
    found: dict[str, list[PreparedCase]] = {"cross-validation": [], "internal": [],
                                             "external": []}
    for case in prepared:
        role = roles.role(case.site)
        if role:
            found[role].append(case)
    return found


def train_fold(k: int, data: ScaledInputs, settings: FitSettings, folder: Path,
               process: Process = Process(), say: Callable[[str], None] = tqdm.write
               ) -> torch.nn.Module:
    """One fold's network, trained (or resumed) and saved as ``folder/final.pt``; ``say``
    tells when a finished fold is reused or a stopped one resumed."""
    device = choose_device(device_of(process, settings.device))
    torch.manual_seed(settings.seed * 1000 + k)        # the fold's initial weights
    trained = (folder / "final.pt").is_file()          # then its starting weights are moot
    network = new_network(replace(settings, init_weights="", init_tabular="") if trained
                          else settings, data, k).to(device)
    barrier(process)                                   # final.pt is rank 0's to write
    if (folder / "final.pt").is_file():
        network.load_state_dict(torch.load(folder / "final.pt", weights_only=True,
                                           map_location=device))
        if process.main:
            say(f"fold {k}: reused, already trained ({folder / 'final.pt'}; delete the "
                "folder to train it again)")
        return network.eval()
    optimiser = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad],
                                  lr=settings.learning_rate,
                                  weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=settings.epochs)
    first = _resume(folder / "last.pt", network, optimiser, schedule)
    if first and process.main:
        say(f"fold {k}: resumed after epoch {first} of {settings.epochs} ({folder / 'last.pt'})")
    trained = wrap(network, process, device)
    history = _history(folder / "history.json", first)
    for epoch in tqdm(range(first, settings.epochs), desc=f"fold {k}", unit="epoch",
                      initial=first, total=settings.epochs, disable=not process.main):
        started = time.monotonic()
        loss = _train_epoch(trained, optimiser, data, settings, (k, epoch), device, process)
        schedule.step()
        if process.main:
            history.append(_epoch_record(epoch + 1, loss, time.monotonic() - started,
                                         len(data.labels), device))
            write_json(folder / "history.json", history)
            _save(folder / "last.pt", {"epoch": epoch + 1, "model": network.state_dict(),
                                       "optimiser": optimiser.state_dict(),
                                       "schedule": schedule.state_dict()})
    if process.main:
        _save(folder / "final.pt", network.state_dict())
        (folder / "last.pt").unlink(missing_ok=True)   # only resuming needs it (3x the weights)
    barrier(process)
    return network.eval()


def check_tabular_start(settings: FitSettings, case_ids: tuple[str, ...], fold: np.ndarray
                        ) -> None:
    """``--init-tabular``: the fit it names must have held out the same cases in each fold,
    else a fold would start from a model that saw its own held-out cases; ``--freeze-tabular``
    needs it (a frozen branch of random weights is no model)."""
    if settings.freeze_tabular and not settings.init_tabular:
        raise ValueError("--freeze-tabular: give --init-tabular too (the branch to keep)")
    if not settings.init_tabular:
        return
    path = Path(settings.init_tabular) / "predictions.csv"
    if not path.is_file():
        raise ValueError(f"--init-tabular: {path} not found (a finished radiomics-clinical "
                         "fit folder?)")
    with path.open(newline="") as stream:
        held_out = {r["case_id"]: r["held_out_fold"] for r in csv.DictReader(stream)
                    if r["role"] == "cross-validation"}
    wrong = [case_id for case_id, k in zip(case_ids, fold) if held_out.get(case_id) != str(k + 1)]
    if wrong or len(held_out) != len(case_ids):
        raise ValueError(f"--init-tabular: {settings.init_tabular} held out other cases per fold "
                         f"(e.g. {(wrong or ['a case not here'])[0]}); fit it on the same "
                         "cohort with the same --folds and --seed")


def _history(path: Path, first_epoch: int) -> list[dict]:
    """The epochs already recorded before ``first_epoch`` (a resumed run goes on from them)."""
    if not path.is_file():
        return []
    return [r for r in json.loads(path.read_text()) if r["epoch"] <= first_epoch]


def _epoch_record(epoch: int, loss: float, seconds: float, cases: int, device: torch.device
                  ) -> dict:
    record = {"epoch": epoch, "loss": round(loss, 6), "seconds": round(seconds, 3),
              "cases_per_second": round(cases / seconds, 2) if seconds > 0 else None}
    if device.type == "cuda":
        record["cuda_max_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return record


def new_network(settings: FitSettings, data: ScaledInputs, k: int = 1) -> torch.nn.Module:
    """Fold ``k``'s network, freshly initialised, or from the weights the settings name."""
    network = build_network(settings.architecture, data.radiomics.shape[1],
                            data.clinical.shape[1], settings.hidden, settings.dropout)
    if settings.init_weights:
        from training.init_weights import load_cnn_weights

        load_cnn_weights(network, Path(settings.init_weights))
    if settings.init_tabular:
        from training.init_weights import load_tabular_weights

        load_tabular_weights(network, Path(settings.init_tabular) / f"fold_{k}" / "final.pt")
    if settings.freeze_tabular:
        for parameter in network.tabular.parameters():
            parameter.requires_grad_(False)
    return network


def _resume(path: Path, network, optimiser, schedule) -> int:
    if not path.is_file():
        return 0
    state = torch.load(path, weights_only=True, map_location=next(network.parameters()).device)
    network.load_state_dict(state["model"])
    optimiser.load_state_dict(state["optimiser"])
    schedule.load_state_dict(state["schedule"])
    return int(state["epoch"])


def _train_epoch(network, optimiser, data: ScaledInputs, settings: FitSettings,
                 fold_epoch: tuple[int, int], device: torch.device,
                 process: Process = Process()) -> float:
    """One pass over the cases in batches (this process's share of them); shuffling,
    augmentation and dropout seeded by the epoch."""
    rng = np.random.default_rng([settings.seed, *fold_epoch])
    torch.manual_seed(int(rng.integers(0, 2**31)) + process.rank)     # dropout
    order = rng.permutation(len(data.labels))
    batches = [order[i:i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
    batches = shard([b for b in batches if len(b) > 1], process)  # batch norm needs two cases
    augment = _augmentation(rng) if settings.augment and data.crops is not None else None
    network.train()
    if settings.freeze_tabular:          # frozen: its batch norm statistics too, dropout off
        _module(network).tabular.eval()
    losses = []
    shown = process.main and data.crops is not None   # a CNN's epoch takes minutes on a CPU
    for batch in tqdm(batches, desc=f"fold {fold_epoch[0]} epoch {fold_epoch[1] + 1}",
                      unit="batch", leave=False, disable=not shown):
        image = None if data.crops is None else _crops(data.crops[batch], augment)
        inputs = [None if image is None else torch.from_numpy(image).to(device),
                  torch.from_numpy(data.radiomics[batch]).to(device),
                  torch.from_numpy(data.clinical[batch]).to(device)]
        optimiser.zero_grad()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = network(*inputs)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits.float(), torch.from_numpy(data.labels[batch]).to(device))
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return float(np.mean(losses)) if losses else float("nan")


def _module(network: torch.nn.Module) -> torch.nn.Module:
    """The network itself, also when wrapped for several processes (DDP)."""
    return getattr(network, "module", network)


def _augmentation(rng: np.random.Generator):
    """MONAI's 3D augmentation of the paper: rotation, scaling/shift, noise, blur."""
    from monai.transforms import Compose, RandAffine, RandGaussianNoise, RandGaussianSmooth

    transform = Compose([
        RandAffine(prob=0.8, rotate_range=(0.26, 0.26, 0.26), scale_range=(0.1, 0.1, 0.1),
                   translate_range=(4, 8, 8), padding_mode="zeros"),
        RandGaussianNoise(prob=0.3, std=0.02),
        RandGaussianSmooth(prob=0.3, sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0),
                           sigma_z=(0.25, 1.0))])
    transform.set_random_state(seed=int(rng.integers(0, 2**31)))
    return transform


def _crops(crops: np.ndarray, augment) -> np.ndarray:
    if augment is None:
        return np.ascontiguousarray(crops)
    return np.stack([np.clip(np.asarray(augment(crop)), 0.0, 1.0) for crop in crops]
                    ).astype(np.float32)


def predict(network: torch.nn.Module, data: ScaledInputs, device: torch.device | None = None
            ) -> np.ndarray:
    """Sigmoid probabilities of one fold model, case by case in float32 (as the node)."""
    device = device or next(network.parameters()).device
    network.eval()
    out = []
    with torch.inference_mode():
        for i in range(len(data.labels)):
            image = None if data.crops is None else torch.from_numpy(data.crops[i:i + 1])
            inputs = [None if image is None else image.to(device),
                      torch.from_numpy(data.radiomics[i:i + 1]).to(device),
                      torch.from_numpy(data.clinical[i:i + 1]).to(device)]
            out.append(float(torch.sigmoid(network(*inputs).float())[0]))
    return np.array(out)


def prediction_rows(networks, sets: dict[str, ScaledInputs], fold: np.ndarray,
                    settings: FitSettings) -> list[dict]:
    """Internal and external cases: each fold's probability and the ensemble mean; training
    site cases: the probability of the fold model that did not see them (out-of-fold)."""
    rows = []
    for role, data in sets.items():
        if role == "cross-validation":
            rows.extend(_out_of_fold_rows(networks, data, fold))
            continue
        probabilities = np.stack([predict(net, data) for net in networks], axis=1)
        for i, case_id in enumerate(data.case_ids):
            rows.append({"case_id": case_id, "site": data.sites[i], "role": role,
                         "egfr_mutant": int(data.labels[i]),
                         **{f"fold_{k + 1}": float(p) for k, p in enumerate(probabilities[i])},
                         "ensemble": float(probabilities[i].mean())})
    return rows


def _out_of_fold_rows(networks, data: ScaledInputs, fold: np.ndarray) -> list[dict]:
    out_of_fold = np.zeros(len(data.labels))
    for k, network in enumerate(networks):
        out_of_fold[fold == k] = predict(network, data.subset(fold == k))
    return [{"case_id": case_id, "site": data.sites[i], "role": "cross-validation",
             "egfr_mutant": int(data.labels[i]), "held_out_fold": int(fold[i]) + 1,
             "out_of_fold": float(out_of_fold[i])} for i, case_id in enumerate(data.case_ids)]


def _summary(rows: list[dict], settings: FitSettings, roles: SiteRoles,
             radiomics: RadiomicsScaling, clinical: ClinicalScaling) -> dict:
    cv = [r for r in rows if r["role"] == "cross-validation"]
    labels = np.array([r["egfr_mutant"] for r in cv])
    oof = np.array([r["out_of_fold"] for r in cv])
    return {"settings": asdict(settings), "roles": asdict(roles),
            "cases": {role: sum(r["role"] == role for r in rows)
                      for role in ("cross-validation", "internal", "external")},
            "decision_threshold": youden_threshold(labels, oof),
            "radiomics_scaling": asdict(radiomics), "clinical_scaling": asdict(clinical)}


def _write_predictions(path: Path, rows: list[dict], folds: int) -> None:
    columns = ["case_id", "site", "role", "egfr_mutant", *(f"fold_{k + 1}" for k in range(folds)),
               "ensemble", "held_out_fold", "out_of_fold"]
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _save(path: Path, state) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    torch.save(state, partial)
    partial.replace(path)
