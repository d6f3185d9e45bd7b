"""The files an analysis leaves behind: ``result.json`` and ``tumor_mask.nii.gz`` (and, for a
model with an image network, ``attention_map.nii.gz``: its Grad-CAM on the same grid).

``result.json`` says everything the SR will say, in plain JSON: status (or the coded reason it
is not evaluable), the EGFR probability of the fold ensemble, the tumor, the radiomics, the
clinical inputs and which were imputed, the model's identity, hash and training data, and the
seconds of each stage. The mask lies on the CT's own grid with its geometry (LPS, as DICOM),
so a viewer overlays it on the series. Both are written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from cdss_node.jobs import ATTENTION_FILE
from cdss_node.model.attention import METHOD
from cdss_node.model.bundle import ModelBundle
from cdss_node.pipeline.analyze import Analysis
from cdss_node.pipeline.reasons import CODING_SCHEME
from cdss_node.pipeline.records import CTVolume, TumorMask

RESULT_FILE = "result.json"
MASK_FILE = "tumor_mask.nii.gz"
ATTENTION_MAP_FILE = "attention_map.nii.gz"
FORMAT = "cdss-egfr-result/1"


def write_result(out_dir: Path, analysis: Analysis, bundle: ModelBundle) -> Path:
    """Write the result files into ``out_dir``; returns the path of ``result.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if analysis.volume is not None and analysis.tumor is not None:
        write_mask(out_dir / MASK_FILE, analysis.tumor, analysis.volume)
    if analysis.attention is not None:
        write_volume(out_dir / ATTENTION_MAP_FILE, analysis.attention.values, analysis.volume)
    path = out_dir / RESULT_FILE
    _write_atomic(path, json.dumps(result_document(analysis, bundle), indent=2,
                                   allow_nan=False) + "\n")
    return path


def result_document(analysis: Analysis, bundle: ModelBundle) -> dict:
    return {
        "format": FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": analysis.status,
        "reason": _reason(analysis),
        "quality_flags": quality_flags(analysis),
        "series": _series(analysis.volume),
        "tumor": _tumor(analysis.tumor, analysis.volume),
        "prediction": _prediction(analysis),
        "attention": _attention(analysis),
        "radiomics": analysis.radiomics.as_dict() if analysis.radiomics else None,
        "clinical": _clinical(analysis),
        "model": model_identity(bundle),
        "stage_seconds": analysis.stage_seconds,
    }


def model_identity(bundle: ModelBundle) -> dict:
    description = bundle.description
    return {
        "id": description.model_id, "name": description.name, "version": description.version,
        "architecture": description.architecture, "sha256": bundle.sha256,
        "folds": bundle.manifest.fold_count, "decision_threshold":
        description.decision_threshold, "intended_use": description.intended_use,
        "trained_on_synthetic_data": description.training_data.synthetic,
        "training_data": description.training_data.description,
        "validation_metrics": description.validation_metrics,
    }


def _reason(analysis: Analysis) -> dict | None:
    if analysis.reason is None:
        return None
    reason = analysis.reason
    return {"code": reason.code, "scheme": CODING_SCHEME, "meaning": reason.meaning,
            "sentence": reason.sentence, "detail": analysis.detail}


def quality_flags(analysis: Analysis) -> list[dict]:
    """What the radiologist should know of the case (``QualityFlag``), coded."""
    return [{"code": f.code, "scheme": CODING_SCHEME, "meaning": f.meaning,
             "sentence": f.sentence} for f in analysis.quality_flags]


def _series(volume: CTVolume | None) -> dict | None:
    if volume is None:
        return None
    return {"study_uid": volume.study_uid, "series_uid": volume.series_uid,
            "shape_zyx": list(volume.shape), "spacing_mm_zyx": list(volume.spacing_mm),
            "lossy_compressed": volume.lossy_compressed}


def _tumor(tumor: TumorMask | None, volume: CTVolume | None) -> dict | None:
    if tumor is None or volume is None:
        return None
    centre = tumor.centre_voxel
    return {"found": tumor.found, "segmenter": tumor.segmenter, "candidates": tumor.candidates,
            "volume_mm3": round(tumor.volume_mm3, 3), "mask_file": MASK_FILE,
            "centre_voxel_zyx": list(centre) if centre else None,
            "centre_mm_lps": patient_position(volume, centre) if centre else None,
            "other_candidates": tumor.other_candidates,
            "lung_volume_ml": None if tumor.lung_volume_ml is None
            else round(tumor.lung_volume_ml, 1)}


def patient_position(volume: CTVolume, voxel_zyx: tuple[int, int, int]) -> list[float]:
    """The patient coordinates (LPS, mm) of a voxel: origin + i dx row + j dy col + k dz n."""
    steps = np.asarray(voxel_zyx[::-1], dtype=float) * np.asarray(volume.spacing_mm[::-1])
    position = np.asarray(volume.origin_mm) + np.asarray(volume.direction).T @ steps
    return [round(float(v), 3) for v in position]


def _prediction(analysis: Analysis) -> dict | None:
    p = analysis.prediction
    if p is None:
        return None
    return {"probability": p.probability, "fold_probabilities": list(p.fold_probabilities),
            "threshold": p.threshold, "label": p.label}


def _attention(analysis: Analysis) -> dict | None:
    a = analysis.attention
    if a is None:
        return None
    return {"method": METHOD, "layer": a.layer, "file": ATTENTION_MAP_FILE,
            "dicom_file": ATTENTION_FILE, "inside_tumor_share": a.inside_tumor_share}


def _clinical(analysis: Analysis) -> dict | None:
    c = analysis.clinical
    if c is None:
        return None
    return {"inputs": c.raw, "imputed": list(c.imputed),
            "scaled": dict(zip(c.names, (float(v) for v in c.values)))}


def write_mask(path: Path, tumor: TumorMask, volume: CTVolume) -> None:
    """The mask as NIfTI on the CT's grid (ITK keeps LPS and converts for the file)."""
    write_volume(path, tumor.mask.astype(np.uint8), volume)


def write_volume(path: Path, values: np.ndarray, volume: CTVolume) -> None:
    """A (z, y, x) array on the CT's grid as NIfTI, with the CT's geometry."""
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(tuple(float(s) for s in reversed(volume.spacing_mm)))
    image.SetOrigin(tuple(float(v) for v in volume.origin_mm))
    image.SetDirection(tuple(float(v) for v in np.asarray(volume.direction).T.ravel()))
    partial = path.with_name(f".{path.name}.partial.nii.gz")
    sitk.WriteImage(image, str(partial), useCompression=True)
    os.replace(partial, path)


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
