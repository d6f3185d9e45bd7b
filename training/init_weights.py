"""``--init-weights``: start the CNN of a fold from weights an operator has on disk.

Two kinds of file (a PyTorch state dict, read with ``weights_only=True``; nothing is
downloaded):

* a 3D state dict of the same MONAI CNN (keys as in ``network.cnn``, with or without a
  ``cnn.`` prefix): tensors of the same shape are copied;
* a 2D ImageNet state dict of the same family (torchvision-style keys of the same names): each
  2D kernel (out, in, h, w) is inflated to 3D (out, in, d, h, w) by repeating it d times and
  dividing by d (I3D, Carreira & Zisserman 2017), and a first convolution for RGB is summed
  over its three input channels for the CT's one.

Keys whose shapes cannot be matched (the classifier, usually) keep their fresh values; how
many were taken is returned, and none taken is an error.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch


def load_cnn_weights(network: torch.nn.Module, path: Path) -> int:
    """Copy what fits from ``path`` into ``network.cnn``; returns how many tensors were taken."""
    cnn = getattr(network, "cnn", None)
    if cnn is None:
        raise ValueError("--init-weights: the radiomics-clinical and clinical networks have "
                         "no CNN to initialise")
    source = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(source, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(source).__name__}")
    source = {key.removeprefix("cnn."): value for key, value in source.items()}
    target = cnn.state_dict()
    taken = {key: fitted for key, value in target.items()
             if key in source and (fitted := fit_tensor(source[key], value)) is not None}
    if not taken:
        raise ValueError(f"{path}: no tensor fits the {type(cnn).__name__} of this network")
    cnn.load_state_dict({**target, **taken})
    return len(taken)


def fit_tensor(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """``source`` as ``target``'s shape: the same, or a 2D kernel inflated; None if neither."""
    if source.shape == target.shape:
        return source.to(target.dtype)
    if source.dim() == 4 and target.dim() == 5:
        kernel = source
        if kernel.shape[1] == 3 and target.shape[1] == 1:
            kernel = kernel.sum(dim=1, keepdim=True)
        if kernel.shape[:2] == target.shape[:2] and kernel.shape[2:] == target.shape[3:]:
            depth = target.shape[2]
            return (kernel.unsqueeze(2).repeat(1, 1, depth, 1, 1) / depth).to(target.dtype)
    return None


def load_tabular_weights(network: torch.nn.Module, path: Path) -> None:
    """``--init-tabular``: start a multimodal network as the radiomics + clinical fold model in
    ``path`` (its ``final.pt``): the tabular branch and the head are that model's, and the
    head's weights on the 512 image features are 0, so the network's first answer is that
    model's and training adds what the image is worth."""
    if getattr(network, "cnn", None) is None:
        raise ValueError("--init-tabular: only a network with a CNN starts from a radiomics + "
                         "clinical model")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError) as error:
        raise ValueError(f"{path}: not a saved fold model ({error})") from error
    tabular = {key.removeprefix("tabular."): value for key, value in state.items()
               if key.startswith("tabular.")}
    head = network.head
    expected = (head[0].out_features, head[0].in_features - network.tabular[0].out_features)
    found = tuple(state.get("head.0.weight", torch.empty(0, 0)).shape)
    inputs = tuple(state.get("tabular.0.weight", torch.empty(0, 0)).shape)
    if found != expected or inputs != tuple(network.tabular[0].weight.shape):
        raise ValueError(f"{path}: not a radiomics-clinical fold model of this size (head "
                         f"{found}, tabular {inputs}; expected {expected}, "
                         f"{tuple(network.tabular[0].weight.shape)}; give its fit folder)")
    network.tabular.load_state_dict(tabular)
    image_features = head[0].in_features - expected[1]
    with torch.no_grad():
        head[0].weight.zero_()
        head[0].weight[:, image_features:] = state["head.0.weight"]
        head[0].bias.copy_(state["head.0.bias"])
        head[2].weight.copy_(state["head.2.weight"])
        head[2].bias.copy_(state["head.2.bias"])
