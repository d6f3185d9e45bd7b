"""Where the image network looked: a 3D class activation map of the fold models' image branch,
the Grad-CAM the paper names as future work, in its HiResCAM form (Draelos & Carin 2020).

For each fold model, with the case's radiomics and clinical inputs held fixed: the gradient of
the EGFR logit (towards "mutant") with respect to the feature maps of one convolutional stage
(``TARGET_LAYER``) multiplies those maps voxel by voxel; their sum over the channels,
rectified, is the fold's map, resized to the network's image input and scaled to a maximum of
1. The ensemble's map is the mean of the folds' maps, as its probability is the mean of theirs.
Grad-CAM (Selvaraju et al. 2017) would first average each gradient over space, and so light up
every place where a channel is active, also where the logit does not read it. On the CPU
profile's bundle, HiResCAM put 6.0 times chance of its sum into the planted halo, Grad-CAM 2.5
times (``cdss-train attention``).

The maps go back onto the tumor crop (the window the network reads, ``image_window``) and from
there onto the CT's own voxels (the crop's in-plane zoom undone), so that a viewer overlays
them on the series. Attention below ``FLOOR`` is set to 0: the map then covers the region that
mattered, not the whole crop.

Written here rather than with ``monai.visualize.GradCAM``: that one registers hooks on the
network for good, and the fold models are the node's inference models; this one hooks a stage
for one call and asks autograd for that stage's gradient only (no parameter gradient is kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from cdss_node.model.network import image_window
from cdss_node.pipeline.crop import CROP_PIXELS, OUTPUT_PIXELS
from cdss_node.pipeline.records import TumorCrop, require

METHOD = "HiResCAM"
# The stage whose feature maps are weighed: the last one fine enough to place a 3 cm tumor
# (about 4 x 7 x 7 or more over the network's input).
TARGET_LAYER = {"resnet10-small": "cnn.layer2", "resnet34": "cnn.layer3",
                "efficientnet-b7": "cnn._blocks.4", "densenet264": "cnn.features.denseblock3"}
FLOOR = 0.1


@dataclass(frozen=True)
class AttentionMap:
    """The ensemble's Grad-CAM on the CT grid (z, y, x), float32 in [0, 1]."""

    values: np.ndarray
    layer: str
    inside_tumor_share: float          # of the map's sum, the part inside the tumor mask

    def __post_init__(self) -> None:
        require(self.values.ndim == 3 and self.values.dtype == np.float32, "values",
                "a 3D float32 map", (self.values.shape, self.values.dtype))
        require(0.0 <= float(self.values.min()) and float(self.values.max()) <= 1.0, "values",
                "values in [0, 1]", (float(self.values.min()), float(self.values.max())))
        require(0.0 <= self.inside_tumor_share <= 1.0, "inside_tumor_share", "a share in [0, 1]",
                self.inside_tumor_share)


def fold_grad_cam(network: nn.Module, layer: str, image: torch.Tensor,
                  radiomics: torch.Tensor, clinical: torch.Tensor) -> np.ndarray:
    """One fold model's map of one case (image (1, 1, Z, Y, X)): (Z, Y, X) in [0, 1]."""
    stage = dict(network.named_modules())[layer]
    seen: dict[str, torch.Tensor] = {}
    handle = stage.register_forward_hook(lambda module, inputs, output: seen.update(maps=output))
    try:
        with torch.enable_grad():   # the image asks for a gradient: frozen weights do not
            image = image.detach().requires_grad_(True)
            logit = network(image, radiomics, clinical).float().sum()
            (gradient,) = torch.autograd.grad(logit, seen["maps"])
    finally:
        handle.remove()
    maps = seen["maps"].detach().float()
    cam = torch.relu((gradient.float() * maps).sum(dim=1, keepdim=True))
    cam = nn.functional.interpolate(cam, size=tuple(image.shape[2:]), mode="trilinear",
                                    align_corners=False)[0, 0]
    peak = float(cam.max())
    return (cam / peak).cpu().numpy() if peak > 0 else np.zeros(cam.shape, dtype=np.float32)


def ensemble_grad_cam(networks: Sequence[nn.Module], architecture: str, image: np.ndarray,
                      radiomics: np.ndarray, clinical: np.ndarray,
                      device: torch.device) -> np.ndarray:
    """The mean of the fold models' Grad-CAMs on the network's image input (Z, Y, X)."""
    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None].to(device)

    inputs = (tensor(image), tensor(radiomics), tensor(clinical))
    layer = TARGET_LAYER[architecture]
    maps = [fold_grad_cam(network.eval(), layer, *inputs) for network in networks]
    return np.mean(maps, axis=0).astype(np.float32)


def on_crop(attention: np.ndarray, architecture: str, crop_shape: tuple[int, ...]
            ) -> np.ndarray:
    """The network-input map placed into the tumor crop (Z, Y, X of the crop), 0 outside the
    window the network reads."""
    placed = np.zeros(crop_shape[1:], dtype=np.float32)
    placed[image_window(architecture, crop_shape)[1:]] = attention
    return placed


def on_ct(crop_attention: np.ndarray, crop: TumorCrop, ct_shape: tuple[int, int, int]
          ) -> np.ndarray:
    """The crop's map on the CT's voxels: the in-plane zoom undone (linear), placed at the
    crop's corner, cut to the CT; values under ``FLOOR`` set to 0."""
    zoom = (1.0, CROP_PIXELS / OUTPUT_PIXELS, CROP_PIXELS / OUTPUT_PIXELS)
    block = np.clip(ndimage.zoom(crop_attention, zoom, order=1, grid_mode=True, mode="nearest"),
                    0.0, 1.0)
    block[block < FLOOR] = 0.0
    ct = np.zeros(ct_shape, dtype=np.float32)
    source, target = [], []
    for start, size, length in zip(crop.start_voxel, block.shape, ct_shape):
        lo, hi = max(start, 0), min(start + size, length)
        target.append(slice(lo, hi))
        source.append(slice(lo - start, hi - start))
    if all(t.stop > t.start for t in target):
        ct[tuple(target)] = block[tuple(source)]
    return ct


def inside_share(attention: np.ndarray, region: np.ndarray) -> float:
    """The part of the map's sum that lies in ``region`` (bool, same grid); 0 for an empty map."""
    total = float(attention.sum())
    return float(attention[region].sum()) / total if total > 0 else 0.0
