"""Tumor segmentation with LungTumorMask's 3D U-Net, from weights an operator installs.

LungTumorMask (Fredriksen et al., PLOS ONE 2022; github.com/VemundFredriksen/LungTumorMask,
v1.3.1, MIT) is the tumor segmenter Kim et al. used. Its weights (``dc_student.pth``, a release
asset) cannot be downloaded here, so the node reads them from a local path. What this module
follows, learnt from that repository's public source (no code of theirs is copied):

Network (``lungtumormask/mask.py`` ``load_model``, ``lungtumormask/network.py``)
    ``UNet_double(3, 1, 1, (64, 128, 256, 512, 1024), (2, 2, 2, 2), num_res_units=0)`` with its
    defaults kernel_size=3, up_kernel_size=3, act PReLU, norm instance, dropout 0.0, built from
    MONAI's ``Convolution`` and ``SkipConnection`` blocks (``setup.py`` pins ``monai<=0.8.1``).
    It has one encoder and two decoders: ``model1`` and ``model2`` share every down-path block
    and the bottom block; each has its own up-path blocks. ``forward`` returns
    ``sigmoid(model1(x))``; ``model2`` is not used at inference. ``model1`` is, block for
    block, MONAI's ``UNet(spatial_dims=3, in_channels=1, out_channels=1, channels=(64, 128,
    256, 512, 1024), strides=(2, 2, 2, 2), num_res_units=0)`` (PReLU, instance norm, dropout
    0.0, kernel 3): this module builds that UNet and gives it the ``model1`` weights.

Checkpoint (``lungtumormask/mask.py``)
    ``torch.hub.load_state_dict_from_url(...dc_student.pth)`` then ``load_state_dict`` (strict):
    the file is a bare state dict, no wrapping dict and no ``module.`` prefix. Its keys are
    ``model1.<k>`` and ``model2.<k>`` for every key ``<k>`` of the UNet above (a shared block is
    saved under both prefixes), e.g. ``model1.0.conv.weight`` (64, 1, 3, 3, 3),
    ``model1.0.adn.A.weight`` (1,) (PReLU), ``model1.2.conv.weight`` (128, 1, 3, 3, 3) (the last
    transposed convolution, no norm/activation). Instance norm has no affine parameters.

Preprocessing (``lungtumormask/dataprocessing.py`` ``preprocess``, ``process_lung_scan``)
    Lungs by lungmask R231 (label 1 right, 2 left); each lung's bounding box is cropped on its
    own (``calculate_extremes``). Per lung: HU clipped to [-1024, 1000] (two
    ``ThresholdIntensityd``), z-score over the whole clipped CT (``NormalizeIntensityd``:
    mean and population standard deviation of every voxel, computed *before* the crop), crop,
    ``Spacingd(pixdim=(1, 1, 1.5))`` on the NIfTI axes (x, y, z): bilinear, border padding,
    the first voxel centre kept, ``round((n - 1) * s / s_new) + 1`` voxels per axis. Then
    ``DivisiblePadd(k=16, mode="constant")``: zeros, split evenly with the odd voxel after. The
    same crop and resampling are in ``training/Utils/crop_lungs.py``; ``training/Engine/
    train.py`` augments with random flips on all three axes and 90-degree rotations.

Inference and post-processing (``mask.py`` ``mask``, ``dataprocessing.py`` ``post_process``)
    One forward pass over each whole padded lung crop. The padding is removed, the probability
    map is resized (trilinear) to the crop box, thresholded with ``>= 0.5`` (CLI default), put
    back into a zero volume of the CT's shape, left and right fused by maximum, and closed
    slice by slice (axial) with a disk of radius 1 voxel. The lung filter is off by default.
    No primary-tumor rule: every component is kept. Their optional lung filter (off by
    default) drops predictions outside the lungs.

Differences here, each said: the lungs come from the node's ``lung_fields`` (connected lung
regions stand for lungmask's left/right labels), crop boxes are exact (theirs start one voxel
late in x and y and end one slice early in z), the padding is removed by its known extent
(theirs by searching for non-zero planes), inference is ``sliding_window_inference`` (with
``roi_size=None``, one window over the whole padded crop: their forward pass), the lung filter
is on and works on components (one that lies mostly outside the lung fields is dropped, one
that bulges out of them is kept whole), components smaller than a ball of
``MIN_DIAMETER_MM`` are dropped, and the primary tumor is the largest component left, as the
``TumorMask`` record asks for one tumor.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet
from scipy import ndimage

from cdss_node.pipeline.records import CTVolume, TumorMask, require
from cdss_node.pipeline.lungs import bounding_box, lung_fields

HU_CLIP = (-1024.0, 1000.0)
NETWORK_SPACING_MM = (1.5, 1.0, 1.0)   # z, y, x: their pixdim (1, 1, 1.5) on NIfTI x, y, z
DIVISOR = 16                            # four stride-2 levels
THRESHOLD = 0.5
CLOSING_RADIUS = 1                      # voxels, in each axial slice
MIN_DIAMETER_MM = 5.0                   # smaller components are not lesion candidates
MIN_INSIDE_LUNGS = 0.5                  # the lung filter: share of a component in the lungs
UNET_ARGS = dict(spatial_dims=3, in_channels=1, out_channels=1,
                 channels=(64, 128, 256, 512, 1024), strides=(2, 2, 2, 2), kernel_size=3,
                 up_kernel_size=3, num_res_units=0, act="PRELU", norm="INSTANCE", dropout=0.0)
PUBLISHED_DECODERS = ("model1", "model2")  # model1 is the one LungTumorMask's forward uses
# What torch.load(weights_only=True) raises for a foreign, damaged or object-carrying file.
UNREADABLE = (RuntimeError, pickle.UnpicklingError, EOFError, KeyError, ValueError)

Box = tuple[slice, slice, slice]


def build_unet() -> UNet:
    """MONAI's UNet with LungTumorMask's arguments: its ``model1`` path, block for block."""
    return UNet(**UNET_ARGS)


def unet_state_dict_keys() -> dict[str, tuple[int, ...]]:
    """The UNet's state-dict keys (``model.<k>``) and tensor shapes, in order."""
    return {key: tuple(value.shape) for key, value in build_unet().state_dict().items()}


def published_state_dict_keys() -> dict[str, tuple[int, ...]]:
    """The keys and shapes of LungTumorMask's ``dc_student.pth``: ``model1.<k>``, ``model2.<k>``."""
    inner = {key.removeprefix("model."): shape for key, shape in unet_state_dict_keys().items()}
    return {f"{decoder}.{key}": shape for decoder in PUBLISHED_DECODERS
            for key, shape in inner.items()}


def load_unet(weights_path: Path, device: torch.device) -> UNet:
    """The UNet with the weights of a local file, in eval mode on ``device``."""
    state = _read_state_dict(Path(weights_path))
    network = build_unet()
    network.load_state_dict(_unet_weights(state, Path(weights_path)))
    return network.to(device).eval()


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"LungTumorMask weights file not found: {path} "
                                "(install dc_student.pth there or configure another path)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except UNREADABLE as error:
        raise ValueError(f"{path}: not a PyTorch weights file ({error})") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors, found {type(state).__name__}")
    return state


def _unet_weights(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The ``model.*`` weights from LungTumorMask's layout, or from a plain MONAI UNet's."""
    published = any(key.startswith(f"{PUBLISHED_DECODERS[0]}.") for key in state)
    expected = published_state_dict_keys() if published else unet_state_dict_keys()
    layout = "LungTumorMask dc_student.pth" if published else "MONAI UNet"
    _check_layout(state, expected, path, layout)
    if not published:
        return state
    prefix = f"{PUBLISHED_DECODERS[0]}."
    return {"model." + key.removeprefix(prefix): value
            for key, value in state.items() if key.startswith(prefix)}


def _check_layout(state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]],
                  path: Path, layout: str) -> None:
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        raise ValueError(f"{path}: keys do not match the {layout} layout of LungTumorMask's "
                         f"U-Net: {len(missing)} missing (first: {missing[:3]}), "
                         f"{len(unexpected)} unexpected (first: {unexpected[:3]})")
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise ValueError(f"{path}: {key}: expected shape {shape}, "
                             f"found {tuple(state[key].shape)}")


def choose_device(device: str) -> torch.device:
    """``"auto"``: CUDA when present, else CPU; otherwise the named torch device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def zscore_parameters(hu: np.ndarray) -> tuple[float, float]:
    """Mean and population standard deviation of the whole CT after the HU clip."""
    clipped = np.clip(hu, *HU_CLIP)
    mean = float(clipped.mean(dtype=np.float64))
    std = float(clipped.std(dtype=np.float64))
    return mean, (std if std > 0 else 1.0)


def normalise(hu: np.ndarray, mean: float, std: float) -> np.ndarray:
    """HU clipped to [-1024, 1000], then (value - mean) / std, as float32."""
    return ((np.clip(hu, *HU_CLIP) - mean) / std).astype(np.float32)


def resampled_shape(shape: tuple[int, ...], spacing_mm: tuple[float, ...],
                    new_spacing_mm: tuple[float, ...]) -> tuple[int, ...]:
    """Voxels per axis after resampling with the first voxel centre kept (MONAI ``Spacing``)."""
    return tuple(int(np.round((n - 1) * s / t)) + 1
                 for n, s, t in zip(shape, spacing_mm, new_spacing_mm))


def resample(image: np.ndarray, spacing_mm: tuple[float, float, float],
             new_spacing_mm: tuple[float, float, float] = NETWORK_SPACING_MM) -> np.ndarray:
    """Trilinear resampling to ``new_spacing_mm``, edge values repeated beyond the border."""
    ratio = np.asarray(new_spacing_mm, float) / np.asarray(spacing_mm, float)
    shape = resampled_shape(image.shape, spacing_mm, new_spacing_mm)
    return ndimage.affine_transform(image, ratio, output_shape=shape, order=1, mode="nearest")


def resize(probability: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Trilinear resize of a 3-D map to ``shape`` (their way back to the crop box)."""
    resized = torch.nn.functional.interpolate(probability[None, None], size=shape,
                                              mode="trilinear", align_corners=False)
    return resized[0, 0]


def divisible_padding(shape: tuple[int, ...], k: int = DIVISOR) -> list[tuple[int, int]]:
    """Zero padding to a multiple of ``k`` per axis, split evenly, the odd voxel after."""
    totals = [-n % k for n in shape]
    return [(total // 2, total - total // 2) for total in totals]


def lung_boxes(hu: np.ndarray, spacing_mm: tuple[float, float, float]) -> list[Box]:
    """The bounding box of each connected lung region (each lung, or both when they touch)."""
    return boxes_of(lung_fields(hu, spacing_mm))


def boxes_of(fields: np.ndarray) -> list[Box]:
    labels, _ = ndimage.label(fields)
    return [box for box in ndimage.find_objects(labels) if box is not None]


def lesion_components(found: np.ndarray, fields: np.ndarray,
                      spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """``found`` without components smaller than a ``MIN_DIAMETER_MM`` ball or lying mostly
    outside the lung ``fields`` (LungTumorMask's lung filter, by component)."""
    labels, count = ndimage.label(found)
    if count == 0:
        return found
    index = np.arange(1, count + 1)
    voxels = ndimage.sum_labels(found, labels, index)
    inside = ndimage.sum_labels(fields, labels, index)
    min_voxels = np.pi / 6 * MIN_DIAMETER_MM ** 3 / float(np.prod(spacing_mm))
    keep = index[(voxels >= min_voxels) & (inside >= MIN_INSIDE_LUNGS * voxels)]
    return np.isin(labels, keep)


def close_axial(mask: np.ndarray, radius: int = CLOSING_RADIUS) -> np.ndarray:
    """Closing of each axial slice with a disk; the image border does not erode (as
    scikit-image's ``binary_closing``). Only the region around the mask is processed."""
    if radius <= 0 or not mask.any():
        return mask
    axes = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    disk = (axes[0] ** 2 + axes[1] ** 2 <= radius ** 2)[None]
    region = bounding_box(mask, [2 * radius] * mask.ndim)
    dilated = ndimage.binary_dilation(mask[region], disk)
    closed = mask.copy()
    closed[region] = ndimage.binary_erosion(dilated, disk, border_value=1)
    return closed


def largest_component(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The largest connected component (the primary tumor) and how many there were."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return np.zeros(mask.shape, dtype=bool), 0
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    return labels == int(np.argmax(sizes)) + 1, count


Predictor = Callable[[np.ndarray], torch.Tensor]


def tumor_voxels(volume: CTVolume, predict: Predictor,
                 threshold: float = THRESHOLD) -> np.ndarray:
    """Every voxel of the CT the network calls tumor, lung by lung, after axial closing,
    in components of lesion size in the lungs (``lesion_components``).

    ``predict`` maps a lung crop as the network sees it (x, y, z at 1 x 1 x 1.5 mm, z-scored,
    zero-padded to multiples of 16) to the tumor probability on the same grid.
    """
    mean, std = zscore_parameters(volume.hu)
    fields = lung_fields(volume.hu, volume.spacing_mm)
    found = np.zeros(volume.shape, dtype=bool)
    for box in boxes_of(fields):
        probability = _lung_probability(volume, box, mean, std, predict)
        found[box] |= probability.numpy() >= threshold
    return lesion_components(close_axial(found), fields, volume.spacing_mm)


def _lung_probability(volume: CTVolume, box: Box, mean: float, std: float,
                      predict: Predictor) -> torch.Tensor:
    """The tumor probability on the CT grid inside one lung box (z, y, x)."""
    crop = normalise(volume.hu[box], mean, std)
    image = network_grid(crop, volume.spacing_mm)
    padding = divisible_padding(image.shape)
    probability = predict(np.pad(image, padding, mode="constant")).float().cpu()
    inner = tuple(slice(before, n - after) for (before, after), n
                  in zip(padding, probability.shape))
    return resize(probability[inner].contiguous(), crop.shape[::-1]).permute(2, 1, 0)


def network_grid(crop: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """A crop of the CT grid (z, y, x) on the network's: x, y, z as in NIfTI, at 1 x 1 x
    1.5 mm (also how ``cdss-train seg-fit`` puts its masks there)."""
    return resample(crop.transpose(2, 1, 0), spacing_mm[::-1], NETWORK_SPACING_MM[::-1])


class LungTumorMaskSegmenter:
    """LungTumorMask's 3D U-Net on each lung crop; the largest tumor is the primary."""

    name = "LungTumorMask 3D U-Net"

    def __init__(self, weights_path: Path, device: str = "auto",
                 roi_size: tuple[int, int, int] | None = None, overlap: float = 0.25,
                 threshold: float = THRESHOLD):
        """``roi_size``: sliding-window size in voxels (z, y, x) at 1.5 x 1 x 1 mm, each a
        multiple of 16; ``None`` puts each whole padded lung crop in one window, as
        LungTumorMask does (needs the memory for it)."""
        require(roi_size is None or (len(roi_size) == 3 and all(
            isinstance(n, int) and n > 0 and n % DIVISOR == 0 for n in roi_size)),
            "roi_size", f"None or 3 positive multiples of {DIVISOR}", roi_size)
        require(0.0 <= overlap < 1.0, "overlap", "a fraction in [0, 1)", overlap)
        require(0.0 < threshold < 1.0, "threshold", "a probability in (0, 1)", threshold)
        self.device = choose_device(device)
        self.network = load_unet(Path(weights_path), self.device)
        self.version = f"weights sha256:{_sha256(Path(weights_path))[:16]}"
        self.roi_size_xyz = None if roi_size is None else tuple(roi_size[::-1])
        self.overlap = overlap
        self.threshold = threshold

    def segment(self, volume: CTVolume) -> TumorMask:
        found = tumor_voxels(volume, self.probability, self.threshold)
        primary, count = largest_component(found)
        return TumorMask(mask=primary, spacing_mm=volume.spacing_mm,
                         segmenter=f"{self.name} {self.version}", candidates=count)

    def probability(self, image: np.ndarray) -> torch.Tensor:
        """Sigmoid of the network over a padded lung crop (x, y, z), window by window."""
        inputs = torch.from_numpy(np.ascontiguousarray(image))[None, None].to(self.device)
        roi = self.roi_size_xyz or tuple(image.shape)
        with torch.inference_mode():
            output = sliding_window_inference(inputs, roi, 1, self._sigmoid,
                                              overlap=self.overlap, mode="constant")
        return output[0, 0]

    def _sigmoid(self, window: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.network(window))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
