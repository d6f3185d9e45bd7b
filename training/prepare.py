"""``cdss-train prepare``: each case of a cohort through the node's own pipeline, once, into a
feature store.

Per case, with ``cdss_node.pipeline`` (so that training sees what the node computes):
``load_volume`` (a DICOM series; a NIfTI CT is read with SimpleITK) → the tumor mask (the
manifest's NIfTI, put on the CT's grid, or DICOM SEG; without one, the node's segmenter) →
``extract_radiomics`` → the clinical facts (the manifest's, else the CT header's; what neither
has stays unknown and is imputed at fit time with the training medians, as the node imputes)
→ ``ct_tumor_crop`` (the CNN's input, as the node makes it).

The store holds ``<case_id>.npz`` (radiomics values, the 1 x 64 x 112 x 112 crop) and
``<case_id>.json`` (label, site, facts, radiomics names, mask source, seconds, and ``key``).
The key is a sha256 of the manifest row, the bytes of the image and mask files and
``PIPELINE_VERSION``: a case whose key is in the store is not computed again, so an interrupted
run resumes, and a changed CT or mask is computed again. A case the pipeline cannot analyse is
stored with its coded reason and left out of fitting. Cases run in parallel processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import SimpleITK as sitk

from cdss_node import __version__
from cdss_node.analysis import make_segmenter, series_files
from cdss_node.dicom.seg import read_segment_mask
from cdss_node.jobs import AnalysisSettings
from cdss_node.model.network import network_image, uses_image
from cdss_node.pipeline.clinical import SuppliedFacts
from cdss_node.pipeline.crop import ct_tumor_crop
from cdss_node.pipeline.load import load_volume
from cdss_node.pipeline.radiomics import extract_radiomics
from cdss_node.pipeline.reasons import NotEvaluableReason
from cdss_node.pipeline.records import CTVolume, HeaderFacts, NotEvaluable, TumorMask
from training.cohort import CohortCase

PIPELINE_VERSION = f"cdss_node {__version__} prepare 1"


@dataclass(frozen=True)
class PreparedCase:
    """One case of the store: what ``fit`` needs, read back from disk."""

    case_id: str
    site: str
    egfr_mutant: bool
    header: HeaderFacts
    supplied: SuppliedFacts
    radiomics_names: tuple[str, ...]
    radiomics: np.ndarray             # float64
    crop: np.ndarray | None           # float32 (1, 64, 112, 112), or the part a CNN reads;
                                      # None when loaded for a model without an image


def case_key(case: CohortCase) -> str:
    """sha256 of the manifest row, the image and mask bytes, and the pipeline version."""
    digest = hashlib.sha256(PIPELINE_VERSION.encode())
    row = {**asdict(case), "image": case.image.name, "mask": case.mask and case.mask.name}
    digest.update(json.dumps(row, sort_keys=True, default=str).encode())
    for path in (case.image, case.mask):
        for file in ([] if path is None else _files(path)):
            digest.update(file.relative_to(path.parent).as_posix().encode())
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def _files(path: Path) -> list[Path]:
    return series_files(path) if path.is_dir() else [path]


def prepare(cases: list[CohortCase], store: Path, settings: AnalysisSettings = AnalysisSettings(),
            workers: int = 1, progress: Callable[[str, str], None] = lambda case, state: None
            ) -> dict[str, int]:
    """Every case into ``store``; returns how many were computed, reused and not evaluable."""
    store.mkdir(parents=True, exist_ok=True)
    todo = [(case, key) for case in cases
            if (key := case_key(case)) != _stored_key(store, case.case_id)]
    counts = {"reused": len(cases) - len(todo), "computed": 0, "not_evaluable": 0}
    for case_id, state in _run(todo, store, settings, workers):
        counts["computed" if state == "ok" else "not_evaluable"] += 1
        progress(case_id, state)
    return counts


def _run(todo: list, store: Path, settings: AnalysisSettings, workers: int
         ) -> Iterable[tuple[str, str]]:
    if workers <= 1:
        for case, key in todo:
            yield case.case_id, prepare_case(case, key, store, settings)
        return
    with ProcessPoolExecutor(workers, initializer=_one_thread) as pool:
        futures = {pool.submit(prepare_case, case, key, store, settings): case.case_id
                   for case, key in todo}
        for future in as_completed(futures):
            try:
                state = future.result()
            except Exception as error:  # a bug, not a defect of the case: stop, name the case
                raise RuntimeError(f"prepare {futures[future]}: {error!r}") from error
            yield futures[future], state


def _one_thread() -> None:
    import torch

    from cdss_node.pipeline.lungs import use_one_core

    use_one_core()
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


def prepare_case(case: CohortCase, key: str, store: Path, settings: AnalysisSettings) -> str:
    """Run the pipeline on one case and store the result; returns "ok" or "not_evaluable"."""
    started = time.perf_counter()
    record = {"case_id": case.case_id, "site": case.site, "egfr_mutant": case.egfr_mutant,
              "key": key, "pipeline": PIPELINE_VERSION}
    try:
        volume = case_volume(case.image)
        tumor = case_tumor(case, volume, settings)
        radiomics = extract_radiomics(volume, tumor)
        crop = ct_tumor_crop(volume, tumor)
    except NotEvaluable as rejected:
        record.update(state="not_evaluable", reason=rejected.reason.name, detail=rejected.detail)
        write_json(store / f"{case.case_id}.json", record)
        return "not_evaluable"
    header = merged_header(case.header, volume.header)
    np.savez_compressed(store / f"{case.case_id}.npz", radiomics=radiomics.values,
                        crop=crop.image)
    record.update(state="ok", header=asdict(header), supplied=asdict(case.supplied),
                  radiomics_names=list(radiomics.names), mask=tumor.segmenter,
                  tumor_ml=round(float(tumor.mask.sum() * np.prod(volume.spacing_mm)) / 1e3, 3),
                  seconds=round(time.perf_counter() - started, 2))
    write_json(store / f"{case.case_id}.json", record)
    return "ok"


def case_volume(image: Path) -> CTVolume:
    """A DICOM series folder as the node loads it, or a NIfTI CT in HU."""
    if image.is_dir():
        return load_volume(series_files(image))
    itk = sitk.ReadImage(str(image), sitk.sitkFloat32)
    hu = sitk.GetArrayFromImage(itk)
    direction = np.asarray(itk.GetDirection()).reshape(3, 3).T
    n = hu.shape[0]
    return CTVolume(hu=hu, spacing_mm=tuple(float(s) for s in reversed(itk.GetSpacing())),
                    origin_mm=tuple(float(v) for v in itk.GetOrigin()),
                    direction=tuple(tuple(float(v) for v in row) for row in direction),
                    source_instance_uids=("1.2",) * n, source_frame_numbers=(0,) * n,
                    study_uid="1.2", series_uid="1.2.3", window=None, header=HeaderFacts())


def case_tumor(case: CohortCase, volume: CTVolume, settings: AnalysisSettings) -> TumorMask:
    """The manifest's mask on the CT's grid, or what the node's segmenter finds."""
    tumor = (make_segmenter(settings).segment(volume) if case.mask is None
             else mask_tumor(case.mask, volume))
    if not tumor.found:
        raise NotEvaluable(NotEvaluableReason.NO_TUMOR_FOUND,
                           f"{tumor.segmenter}: no tumor voxel")
    return tumor


def mask_tumor(path: Path, volume: CTVolume) -> TumorMask:
    """A manifest's mask (DICOM SEG, or NIfTI put on the CT's voxels) as the tumor."""
    mask = (read_segment_mask(path, volume.source_instance_uids)
            if path.suffix.lower() == ".dcm" else nifti_mask_on(path, volume))
    return TumorMask(mask=mask, spacing_mm=volume.spacing_mm,
                     segmenter=f"manifest mask {path.name}", candidates=int(mask.any()))


def nifti_mask_on(path: Path, volume: CTVolume) -> np.ndarray:
    """A NIfTI mask resampled (nearest neighbour) onto the CT's voxels, as bool z, y, x."""
    reference = sitk.Image([int(n) for n in reversed(volume.shape)], sitk.sitkUInt8)
    reference.SetSpacing(tuple(float(s) for s in reversed(volume.spacing_mm)))
    reference.SetOrigin(tuple(float(v) for v in volume.origin_mm))
    reference.SetDirection(tuple(float(v) for v in np.asarray(volume.direction).T.ravel()))
    mask = sitk.ReadImage(str(path), sitk.sitkUInt8)
    resampled = sitk.Resample(mask, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(resampled) > 0


def merged_header(manifest: HeaderFacts, ct: HeaderFacts) -> HeaderFacts:
    """The manifest's facts, and the CT header's where the manifest has none."""
    return replace(manifest, **{name: getattr(ct, name) for name, value in asdict(manifest).items()
                                if value is None})


def load_store(store: Path, case_ids: Iterable[str], architecture: str | None = None
               ) -> list[PreparedCase]:
    """The prepared cases among ``case_ids`` (the not-evaluable ones are left out). For an
    ``architecture``, each crop as its network reads it: none for a tabular model (the crop is
    then not even decompressed), the window of a small CNN; without one, the whole crop."""
    prepared = []
    for case_id in case_ids:
        record = json.loads((store / f"{case_id}.json").read_text())
        if record["state"] != "ok":
            continue
        arrays = np.load(store / f"{case_id}.npz")
        prepared.append(PreparedCase(
            case_id, record["site"], record["egfr_mutant"], HeaderFacts(**record["header"]),
            SuppliedFacts(**record["supplied"]), tuple(record["radiomics_names"]),
            arrays["radiomics"], _crop(arrays, architecture)))
    return prepared


def _crop(arrays, architecture: str | None) -> np.ndarray | None:
    if architecture is None:
        return arrays["crop"]
    if not uses_image(architecture):
        return None
    return network_image(architecture, arrays["crop"])


def _stored_key(store: Path, case_id: str) -> str | None:
    try:
        return json.loads((store / f"{case_id}.json").read_text()).get("key")
    except (OSError, ValueError):
        return None


def write_json(path: Path, record) -> None:
    """``record`` as JSON in ``path``, replaced whole (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(record, indent=2))
    partial.replace(path)
