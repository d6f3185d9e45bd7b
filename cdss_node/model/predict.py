"""The paper's prediction: the tumor image, the min-max scaled radiomics and the clinical vector
go through the five fold models in one inference; the EGFR probability is the mean of the
folds' sigmoid probabilities, and the label follows the bundle's decision threshold.
"""

from __future__ import annotations

import numpy as np
import torch

from cdss_node.model.attention import (
    TARGET_LAYER, AttentionMap, ensemble_grad_cam, inside_share, on_crop, on_ct)
from cdss_node.model.bundle import ModelBundle
from cdss_node.model.device import inference_precision
from cdss_node.model.manifest import RadiomicsScaling
from cdss_node.model.network import network_image, uses_image
from cdss_node.pipeline.records import (
    ClinicalVector,
    EgfrPrediction,
    RadiomicsFeatures,
    TumorCrop,
    TumorMask,
    require,
)


def predict_egfr(bundle: ModelBundle, crop: TumorCrop | None, radiomics: RadiomicsFeatures,
                 clinical: ClinicalVector) -> EgfrPrediction:
    """EGFR mutation status of one tumor, as the mean of the bundle's fold models."""
    description = bundle.description
    image = _image(crop, description.architecture)
    scaled = scale_radiomics(radiomics, description.radiomics)
    _check_names(clinical.names, description.clinical.names, "clinical.names")
    logits = _fold_logits(bundle, image, scaled, clinical.values)
    probabilities = torch.sigmoid(logits.float())[:, 0].cpu().tolist()
    return EgfrPrediction.from_folds(tuple(probabilities), description.decision_threshold,
                                     bundle.model_id, bundle.sha256)


def explain_egfr(bundle: ModelBundle, crop: TumorCrop, radiomics: RadiomicsFeatures,
                 clinical: ClinicalVector, tumor: TumorMask) -> AttentionMap | None:
    """Where the image network of the fold models looked (Grad-CAM), on the CT's grid; None
    where the map is empty (no image feature raised the mutant logit)."""
    architecture = bundle.description.architecture
    image = _image(crop, architecture)
    scaled = scale_radiomics(radiomics, bundle.description.radiomics)
    attention = ensemble_grad_cam(bundle.ensemble.fold_networks(), architecture, image, scaled,
                                  clinical.values, bundle.device)
    values = on_ct(on_crop(attention, architecture, crop.image.shape), crop, tumor.mask.shape)
    if not values.any():
        return None
    return AttentionMap(values=values, layer=TARGET_LAYER[architecture],
                        inside_tumor_share=round(inside_share(values, tumor.mask), 4))


def scale_radiomics(radiomics: RadiomicsFeatures, scaling: RadiomicsScaling) -> np.ndarray:
    """Min-max scaling with the training ranges, clipped to [0, 1]; float32 in bundle order."""
    _check_names(radiomics.names, scaling.names, "radiomics.names")
    low = np.asarray(scaling.minimums, dtype=np.float64)
    span = np.asarray(scaling.maximums, dtype=np.float64) - low
    safe = np.where(span > 0, span, 1.0)
    scaled = np.where(span > 0, (radiomics.values - low) / safe, 0.0)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def _check_names(found: tuple[str, ...], expected: tuple[str, ...], field: str) -> None:
    """The features must come in the bundle's order; name the first place they differ."""
    if tuple(found) == tuple(expected):
        return
    require(len(found) == len(expected), field, f"{len(expected)} features in the bundle's "
            "order", len(found))
    k = next(i for i, (a, b) in enumerate(zip(found, expected)) if a != b)
    require(False, field, f"{expected[k]!r} at position {k} (the bundle's order)", found[k])


def _image(crop: TumorCrop | None, architecture: str) -> np.ndarray | None:
    if not uses_image(architecture):
        return None
    require(crop is not None, "crop", f"a TumorCrop for the {architecture} network", crop)
    return network_image(architecture, crop.image)  # type: ignore[union-attr]


def _fold_logits(bundle: ModelBundle, image: np.ndarray | None, radiomics: np.ndarray,
                 clinical: np.ndarray) -> torch.Tensor:
    """Logits of shape (folds, 1): one batched inference over all fold models."""
    device = bundle.device

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None].to(device)

    inputs = (None if image is None else tensor(image), tensor(radiomics), tensor(clinical))
    with torch.inference_mode(), inference_precision(device):
        return bundle.ensemble.fold_logits(*inputs)
