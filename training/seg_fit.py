"""Train or fine-tune the node's LungTumorMask-shaped 3D U-Net on CTs with tumor masks.

Cases are CT volumes (HU, z-y-x) with a tumor mask: from a folder, NIfTI pairs
(``<case>_image.nii.gz`` + ``<case>_mask.nii.gz``) and sub-folders with a DICOM CT series and a
DICOM SEG of it (loaded as the node loads a series); and/or hybrid cases made on the fly from the
real thorax (``training.hybrid_lesions``). Each case becomes one network input per lung, made
by the node's own preprocessing (``cdss_node.pipeline.unet_segment``: lung boxes, HU clip,
z-score, 1 x 1 x 1.5 mm), so that what is trained is what the node runs. Training draws
patches with MONAI (``RandCropByPosNegLabeld``, flips, 90-degree turns), minimises Dice + cross
entropy (Dice over the whole batch, so a patch without tumor does not score 1) with AdamW
and a cosine learning rate, and after each epoch segments the validation cases exactly as the
node does (sliding windows over each lung, threshold, lesion-sized components in the lungs,
largest component) and reports their Dice. Every epoch writes a checkpoint; the best one by
validation Dice is ``best.pt``. The validation cases choose the checkpoint, so they are not a
test: ``bench/segmentation.py --segmenter lungtumormask`` measures the exported weights on
hybrid cases no run has seen (other seeds) and on the real tumors. ``export`` writes the bare
state dict that ``[analysis] unet_weights`` loads. GPU when present.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import DataLoader, Dataset
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.transforms import (
    Compose, RandCropByPosNegLabeld, RandFlipd, RandRotate90d, SpatialPadd)
from tqdm import tqdm

from cdss_node.analysis import series_files
from cdss_node.dicom.seg import read_segment_mask, split_segmentations
from cdss_node.pipeline.load import load_volume
from cdss_node.pipeline.unet_segment import (
    build_unet, choose_device, largest_component, lung_boxes, network_grid, normalise,
    tumor_voxels, zscore_parameters)
from training.real_ct import arrays
from training.segmentation_eval import dice, volume_of

PATCH_XYZ = (64, 64, 48)


@dataclass(frozen=True)
class Case:
    name: str
    hu: np.ndarray                              # float32 (z, y, x)
    spacing_mm: tuple[float, float, float]
    mask: np.ndarray                            # bool (z, y, x)


TRAINING_SEEDS, VALIDATION_SEEDS = 1000, 8000   # bench/segmentation.py uses seeds 1-96
HYBRID_DIAMETERS_MM = (8.0, 45.0)
HYBRID_SLICES_MM = (1.0, 5.0)


@dataclass(frozen=True)
class FitSettings:
    epochs: int = 10
    iterations: int = 30            # batches per epoch, each of ``batch`` patches
    batch: int = 2
    learning_rate: float = 5e-4     # the start of a cosine decay over the whole run
    device: str = "auto"
    seed: int = 0
    init: Path | None = None        # weights to fine-tune from (the node's layouts)


def network_inputs(case: Case) -> list[dict[str, np.ndarray]]:
    """One {"image", "label"} pair per lung, as the node's U-Net sees it (x, y, z)."""
    mean, std = zscore_parameters(case.hu)
    pairs = []
    for box in lung_boxes(case.hu, case.spacing_mm):
        image = network_grid(normalise(case.hu[box], mean, std), case.spacing_mm)
        label = network_grid(case.mask[box].astype(np.float32), case.spacing_mm) >= 0.5
        pairs.append({"image": image[None], "label": label[None].astype(np.float32)})
    return pairs


def nifti_cases(folder: Path) -> list[Case]:
    """``<case>_image.nii.gz`` with ``<case>_mask.nii.gz`` (same grid) from ``folder``."""
    cases = []
    for image_path in sorted(Path(folder).glob("*_image.nii.gz")):
        mask_path = image_path.with_name(image_path.name.replace("_image", "_mask"))
        if not mask_path.is_file():
            raise ValueError(f"{image_path}: no {mask_path.name} beside it")
        hu, spacing = arrays(sitk.ReadImage(str(image_path)))
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path))) > 0
        cases.append(Case(image_path.name.removesuffix("_image.nii.gz"), hu, spacing, mask))
    return cases


def dicom_seg_cases(folder: Path) -> list[Case]:
    """Each sub-folder of ``folder`` that holds a CT series and a DICOM SEG of it: the CT as
    the node loads it, the union of the SEG's segments as the mask."""
    cases = []
    for case_dir in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
        ct_files, seg_files = split_segmentations(series_files(case_dir))
        if ct_files and seg_files:
            volume = load_volume(ct_files)
            cases.append(Case(case_dir.name, volume.hu, volume.spacing_mm,
                              read_segment_mask(seg_files[0], volume.source_instance_uids)))
    return cases


def _transforms() -> Compose:
    keys = ["image", "label"]
    return Compose([
        SpatialPadd(keys, PATCH_XYZ),
        RandCropByPosNegLabeld(keys, "label", PATCH_XYZ, pos=1, neg=1, num_samples=2),
        RandFlipd(keys, prob=0.5, spatial_axis=0), RandFlipd(keys, prob=0.5, spatial_axis=1),
        RandFlipd(keys, prob=0.5, spatial_axis=2),
        RandRotate90d(keys, prob=0.5, spatial_axes=(0, 1))])


def fit(train: list[Case], validation: list[Case], out: Path, settings: FitSettings) -> dict:
    """Train; write ``last.pt``, ``best.pt`` (by validation Dice) and ``history.json`` into
    ``out``; return the history."""
    torch.manual_seed(settings.seed)
    device = choose_device(settings.device)
    network = _network(settings.init).to(device)
    inputs = [pair for case in train for pair in network_inputs(case)]
    loader = DataLoader(Dataset(inputs, _transforms()), batch_size=settings.batch // 2 or 1,
                        shuffle=True, num_workers=0)
    optimiser = torch.optim.AdamW(network.parameters(), lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimiser, T_max=settings.epochs * settings.iterations)
    loss = DiceCELoss(sigmoid=True, batch=True)
    out.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    for epoch in range(1, settings.epochs + 1):
        started = time.monotonic()
        mean_loss = _epoch(network, loader, (optimiser, schedule), loss, device, settings, epoch)
        scores = [_validation_dice(network, case, device) for case in validation]
        history.append({"epoch": epoch, "loss": mean_loss, "validation_dice": scores,
                        "learning_rate": schedule.get_last_lr()[0],
                        "seconds": round(time.monotonic() - started, 1)})
        _checkpoint(network, optimiser, history, out)
        tqdm.write(f"epoch {epoch}: loss {mean_loss:.3f}, validation Dice "
                   + ", ".join(f"{s:.2f}" for s in scores))
    return {"history": history}


def _network(init: Path | None) -> torch.nn.Module:
    if init is None:
        return build_unet()
    from cdss_node.pipeline.unet_segment import load_unet

    return load_unet(init, torch.device("cpu")).train()


def _epoch(network, loader, stepping, loss, device, settings: FitSettings, epoch: int) -> float:
    optimiser, schedule = stepping
    network.train()
    losses: list[float] = []
    bar = tqdm(total=settings.iterations, desc=f"epoch {epoch}/{settings.epochs}", unit="batch")
    while len(losses) < settings.iterations:
        for batch in loader:
            image, label = batch["image"].to(device), batch["label"].to(device)
            optimiser.zero_grad()
            value = loss(network(image), label)
            value.backward()
            optimiser.step()
            schedule.step()
            losses.append(value.item())
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
            if len(losses) >= settings.iterations:
                break
    bar.close()
    return float(np.mean(losses))


def _validation_dice(network, case: Case, device) -> float:
    """Segment the case as the node does and score the primary tumor against its mask."""
    network.eval()

    def predict(image: np.ndarray) -> torch.Tensor:
        inputs = torch.from_numpy(np.ascontiguousarray(image))[None, None].to(device)
        with torch.inference_mode():
            output = sliding_window_inference(inputs, PATCH_XYZ, 2,
                                              lambda w: torch.sigmoid(network(w)), overlap=0.25)
        return output[0, 0]

    found = tumor_voxels(volume_of(case.hu, case.spacing_mm), predict)
    primary, _ = largest_component(found)
    return dice(primary, case.mask)


def _checkpoint(network, optimiser, history: list[dict], out: Path) -> None:
    """``last.pt`` (to resume), ``best.pt`` when this epoch is the best so far, the history."""
    state = {"model": network.state_dict(), "optimiser": optimiser.state_dict(),
             "history": history}
    _save(state, out / "last.pt")
    best = max(history, key=lambda h: float(np.mean(h["validation_dice"] or [0.0])))
    if best is history[-1]:
        _save(state, out / "best.pt")
    (out / "history.json").write_text(json.dumps(history, indent=2))


def _save(state: dict, path: Path) -> None:
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    partial.replace(path)


def export(checkpoint: Path, weights: Path) -> str:
    """The checkpoint's network as the bare state dict the node loads; returns its sha256."""
    import hashlib

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    network = build_unet()
    network.load_state_dict(state["model"])  # checks the layout before anything is written
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), weights)
    return hashlib.sha256(weights.read_bytes()).hexdigest()


def hybrid_training_cases(count: int, first_seed: int) -> list[Case]:
    """``count`` hybrid cases on the real thorax: kinds in turn, 8-45 mm, 1 mm and 5 mm slices
    in turn, seeds from ``first_seed`` (``TRAINING_SEEDS`` or ``VALIDATION_SEEDS``)."""
    from training import real_ct
    from training.hybrid_lesions import host_from_image

    image, _ = real_ct.load("ts-thorax")
    hosts = {s: host_from_image(image, s) for s in HYBRID_SLICES_MM}
    return [_hybrid_case(hosts[HYBRID_SLICES_MM[k % len(HYBRID_SLICES_MM)]], first_seed + k)
            for k in range(count)]


def _hybrid_case(host, seed: int) -> Case:
    from training.hybrid_lesions import KINDS, insert

    kind = KINDS[seed % len(KINDS)]
    diameter = float(np.random.default_rng(seed).uniform(*HYBRID_DIAMETERS_MM))
    try:
        hu, lesion = insert(host, kind, diameter, seed)
    except ValueError:  # no room for this kind at this size: a solid one instead
        hu, lesion = insert(host, "solid", diameter, seed)
    return Case(f"hybrid-{seed}-{lesion.kind}-{diameter:.0f}mm-{host.spacing_mm[0]:.0f}mm",
                hu, host.spacing_mm, lesion.mask)
