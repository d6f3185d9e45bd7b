"""The multimodal network of Kim et al. (Sci Rep 2024).

In the paper's words: the tumor image goes through a 3D CNN (EfficientNet-b7, ResNet34 or
DenseNet264, from MONAI) that extracts 512 image features; the radiomics and clinical features
go through a fully connected layer of 512 with batch normalization and dropout; the two are
concatenated (1024) and a fully connected layer with tanh and a last fully connected layer
give the EGFR logit. The "radiomics-clinical" variant is the paper's radiomics + clinical model:
the same tabular branch, then the tanh head, with no image. "clinical" is the same with the
clinical facts alone (the baseline every imaging model has to beat).

"resnet10-small" is not the paper's: the CPU profile of the multimodal experiment. MONAI's
ResNet10 at a quarter of its width (16 to 128 channels, no max pooling), reading the central
24 x 32 x 32 voxels of the paper's 64 x 112 x 112 crop (``image_window``): counted in voxels,
as the crop is, so 6 x 10 x 10 cm on the synthetic cohort's 2.5 mm slices and 1.5 mm pixels,
but 2.4 x 4.5 x 4.5 cm on a 1 mm, 0.7 mm CT. One training step costs about 10 ms per case on 2 CPU
cores (augmentation included), against several seconds for EfficientNet-b7.

Every network takes ``(image, radiomics, clinical)`` and returns one logit per case, shape (B,).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

IMAGE_FEATURES = 512       # the CNN's image features
TABULAR_FEATURES = 512     # the radiomics + clinical branch's width
DEFAULT_HIDDEN = 256       # the tanh layer of the classifier head
DEFAULT_DROPOUT = 0.3
RADIOMICS_CLINICAL = "radiomics-clinical"
CLINICAL = "clinical"
TABULAR_ARCHITECTURES = (RADIOMICS_CLINICAL, CLINICAL)


def _efficientnet_b7() -> nn.Module:
    from monai.networks.nets import EfficientNetBN

    return EfficientNetBN("efficientnet-b7", pretrained=False, spatial_dims=3, in_channels=1,
                          num_classes=IMAGE_FEATURES)


def _resnet34() -> nn.Module:
    from monai.networks.nets import resnet34

    return resnet34(pretrained=False, spatial_dims=3, n_input_channels=1,
                    num_classes=IMAGE_FEATURES)


def _densenet264() -> nn.Module:
    from monai.networks.nets import DenseNet264

    return DenseNet264(spatial_dims=3, in_channels=1, out_channels=IMAGE_FEATURES,
                       pretrained=False)


def _resnet10_small() -> nn.Module:
    from monai.networks.nets import resnet10

    return resnet10(spatial_dims=3, n_input_channels=1, num_classes=IMAGE_FEATURES,
                    widen_factor=0.25, conv1_t_stride=2, no_max_pool=True)


CNN_BACKBONES: dict[str, Callable[[], nn.Module]] = {
    "efficientnet-b7": _efficientnet_b7,
    "resnet34": _resnet34,
    "densenet264": _densenet264,
    "resnet10-small": _resnet10_small,
}
# The part of the tumor crop (1 x 64 x 112 x 112, cdss_node.pipeline.crop) a CNN reads: the
# whole crop, except for these (slices, rows, columns of the crop, centred).
IMAGE_INPUT_SHAPE: dict[str, tuple[int, int, int]] = {"resnet10-small": (24, 32, 32)}
ARCHITECTURES = (*CNN_BACKBONES, *TABULAR_ARCHITECTURES)


class TabularBranch(nn.Sequential):
    """Radiomics + clinical features → Linear(512) → BatchNorm → Dropout."""

    def __init__(self, n_inputs: int, dropout: float):
        super().__init__(nn.Linear(n_inputs, TABULAR_FEATURES),
                         nn.BatchNorm1d(TABULAR_FEATURES), nn.Dropout(dropout))


class ClassifierHead(nn.Sequential):
    """Linear → tanh → Linear → one EGFR logit."""

    def __init__(self, n_inputs: int, hidden: int):
        super().__init__(nn.Linear(n_inputs, hidden), nn.Tanh(), nn.Linear(hidden, 1))


class MultimodalNetwork(nn.Module):
    """CNN image features (512) and tabular features (512) concatenated (1024) → head → logit."""

    def __init__(self, cnn: nn.Module, n_tabular: int, hidden: int, dropout: float):
        super().__init__()
        self.cnn = cnn
        self.tabular = TabularBranch(n_tabular, dropout)
        self.head = ClassifierHead(IMAGE_FEATURES + TABULAR_FEATURES, hidden)

    def forward(self, image: torch.Tensor, radiomics: torch.Tensor,
                clinical: torch.Tensor) -> torch.Tensor:
        image_features = self.cnn(image)
        tabular_features = self.tabular(torch.cat([radiomics, clinical], dim=1))
        return self.head(torch.cat([image_features, tabular_features], dim=1)).squeeze(1)


class TabularNetwork(nn.Module):
    """The paper's radiomics + clinical model: tabular branch → head → logit; no image. With
    ``use_radiomics`` false, the clinical-only model (the radiomics input is ignored)."""

    def __init__(self, n_tabular: int, hidden: int, dropout: float, use_radiomics: bool = True):
        super().__init__()
        self.use_radiomics = use_radiomics
        self.tabular = TabularBranch(n_tabular, dropout)
        self.head = ClassifierHead(TABULAR_FEATURES, hidden)

    def forward(self, image: torch.Tensor | None, radiomics: torch.Tensor,
                clinical: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([radiomics, clinical], dim=1) if self.use_radiomics else clinical
        return self.head(self.tabular(inputs)).squeeze(1)


def uses_image(architecture: str) -> bool:
    """Whether the architecture has a CNN branch and so needs the tumor image."""
    _check_architecture(architecture)
    return architecture not in TABULAR_ARCHITECTURES


def image_window(architecture: str, crop_shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The slices of a tumor crop (C, Z, Y, X) that the architecture's CNN reads: the centre
    ``IMAGE_INPUT_SHAPE`` of it, or all of it."""
    _check_architecture(architecture)
    size = IMAGE_INPUT_SHAPE.get(architecture)
    if size is None:
        return tuple(slice(None) for _ in crop_shape)
    return (slice(None), *(slice((n - s) // 2, (n - s) // 2 + s)
                           for n, s in zip(crop_shape[1:], size)))


def network_image(architecture: str, crop: np.ndarray) -> np.ndarray:
    """The network's image input from a tumor crop (C, Z, Y, X) or a stack of them; a crop
    already cut to the window (``load_store`` for the architecture) is that input."""
    size = IMAGE_INPUT_SHAPE.get(architecture)
    if size is not None and tuple(crop.shape[-3:]) == size:
        return np.ascontiguousarray(crop)
    window = image_window(architecture, crop.shape[-4:])
    return np.ascontiguousarray(crop[(Ellipsis, *window)])


def build_network(architecture: str, n_radiomics: int, n_clinical: int,
                  hidden: int = DEFAULT_HIDDEN, dropout: float = DEFAULT_DROPOUT) -> nn.Module:
    """The paper's network for one fold, freshly initialised (nothing is downloaded)."""
    _check_architecture(architecture)
    for name, value in (("n_radiomics", n_radiomics), ("n_clinical", n_clinical),
                        ("hidden", hidden)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, found {value!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout: expected a number in [0, 1), found {dropout!r}")
    n_tabular = n_radiomics + n_clinical
    if architecture == RADIOMICS_CLINICAL:
        return TabularNetwork(n_tabular, hidden, dropout)
    if architecture == CLINICAL:
        return TabularNetwork(n_clinical, hidden, dropout, use_radiomics=False)
    return MultimodalNetwork(CNN_BACKBONES[architecture](), n_tabular, hidden, dropout)


def _check_architecture(architecture: str) -> None:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture: expected one of {ARCHITECTURES}, "
                         f"found {architecture!r}")
