"""Small model descriptions, randomised fold networks and inputs for the model tests."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cdss_node.model.manifest import (
    ClinicalInputs,
    ModelDescription,
    RadiomicsScaling,
    TrainingData,
)
from cdss_node.pipeline.clinical import FEATURES, ClinicalScaling
from cdss_node.pipeline.records import ClinicalVector, RadiomicsFeatures, TumorCrop

RADIOMICS_NAMES = tuple(f"original_firstorder_Feature{i:03d}" for i in range(107))
RADIOMICS_MIN = tuple(float(-i) for i in range(107))
RADIOMICS_MAX = tuple(float(i + 1) for i in range(107))
CLINICAL_SCALING = ClinicalScaling(
    medians={**{k: 0.0 for k in FEATURES}, "age_years": 62.0, "height_m": 1.65,
             "weight_kg": 64.0},
    minimums={**{k: 0.0 for k in FEATURES}, "age_years": 30.0, "height_m": 1.4,
              "weight_kg": 40.0},
    maximums={**{k: 1.0 for k in FEATURES}, "age_years": 90.0, "height_m": 1.9,
              "weight_kg": 100.0})


def description(architecture: str = "radiomics-clinical", threshold: float = 0.5,
                **changes) -> ModelDescription:
    values = dict(
        model_id="egfr-test-1", name="EGFR multimodal (test)", version="0.0.1",
        architecture=architecture, hidden_features=16, dropout=0.3,
        radiomics=RadiomicsScaling(RADIOMICS_NAMES, RADIOMICS_MIN, RADIOMICS_MAX),
        clinical=ClinicalInputs(FEATURES, CLINICAL_SCALING), decision_threshold=threshold,
        intended_use="Research use only: EGFR mutation status of a lung tumor on chest CT.",
        training_data=TrainingData("Random weights for tests; no training data.",
                                   synthetic=True),
        validation_metrics={"internal_auc": 0.5}, created="2025-01-02")
    values.update(changes)
    return ModelDescription(**values)


def randomise(network: nn.Module, seed: int) -> nn.Module:
    """Random weights and BatchNorm running statistics, so that every fold differs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in network.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 1.5 + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.3)
    return network.eval()


def radiomics(seed: int = 0, names: tuple[str, ...] = RADIOMICS_NAMES) -> RadiomicsFeatures:
    rng = np.random.default_rng(seed)
    return RadiomicsFeatures(names=names, values=rng.uniform(-120, 120, len(names)))


def clinical(seed: int = 0) -> ClinicalVector:
    values = np.random.default_rng(seed).uniform(0, 1, len(FEATURES)).astype(np.float32)
    return ClinicalVector(names=FEATURES, values=values, raw={}, imputed=())


def crop(seed: int = 0) -> TumorCrop:
    image = np.random.default_rng(seed).uniform(0, 1, (1, 64, 112, 112)).astype(np.float32)
    return TumorCrop(image=image, centre_voxel=(10, 50, 50), start_voxel=(-22, -6, -6))
