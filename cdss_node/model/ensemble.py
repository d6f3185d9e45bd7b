"""The paper's fivefold ensemble: the fold models see the same inputs in one inference call.

Two ways give the same logits (a test checks it):

- ``vmap``: the folds' weights are stacked (``torch.func.stack_module_state``) and one
  ``functional_call`` is vectorised over the fold axis, so every layer runs once for all folds;
- ``loop``: each fold model runs in turn on the shared input tensors.

On this project's 2-core CPU the loop is as fast or faster (``bench/model_forward.py``
measures both), so ``auto`` picks ``loop`` on the CPU and ``vmap`` on CUDA.
All fold models are in eval mode: BatchNorm uses its running statistics, Dropout is off.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state

BATCHING_CHOICES = ("auto", "vmap", "loop")


def choose_batching(choice: str, device: torch.device) -> str:
    """``auto``: ``vmap`` on CUDA, ``loop`` on the CPU; otherwise exactly the choice."""
    if choice not in BATCHING_CHOICES:
        raise ValueError(f"batching: expected one of {BATCHING_CHOICES}, found {choice!r}")
    if choice == "auto":
        return "vmap" if device.type == "cuda" else "loop"
    return choice


class FoldEnsemble:
    """The fold models of one bundle; ``fold_logits`` gives one logit per fold and case."""

    def __init__(self, networks: Sequence[nn.Module], batching: str):
        if not networks:
            raise ValueError("networks: expected at least one fold model, found none")
        if batching not in ("vmap", "loop"):
            raise ValueError(f"batching: expected 'vmap' or 'loop', found {batching!r}")
        for network in networks:
            network.eval()
        self.batching = batching
        self.fold_count = len(networks)
        self._networks: tuple[nn.Module, ...] = ()
        if batching == "vmap":
            self._params, self._buffers = stack_module_state(list(networks))
            self._skeleton = copy.deepcopy(networks[0]).to("meta")
        else:
            self._networks = tuple(networks)

    def fold_networks(self) -> tuple[nn.Module, ...]:
        """Each fold's model as a module of its own (Grad-CAM runs them one by one): the ones
        the loop runs, or, under vmap, rebuilt from the stacked weights for this call only."""
        if self.batching == "loop":
            return self._networks
        device = next(iter(self._params.values())).device
        rebuilt = []
        for k in range(self.fold_count):
            network = copy.deepcopy(self._skeleton).to_empty(device=device)
            network.load_state_dict({**{name: value[k] for name, value in self._params.items()},
                                     **{name: value[k] for name, value in self._buffers.items()}})
            rebuilt.append(network.eval())
        return tuple(rebuilt)

    def fold_logits(self, image: torch.Tensor | None, radiomics: torch.Tensor,
                    clinical: torch.Tensor) -> torch.Tensor:
        """Logits of shape (folds, cases) for the same batch of cases."""
        if self.batching == "loop":
            return torch.stack([net(image, radiomics, clinical) for net in self._networks])
        return torch.vmap(self._one_fold, in_dims=(0, 0, None, None, None))(
            self._params, self._buffers, image, radiomics, clinical)

    def _one_fold(self, params: dict, buffers: dict, image: torch.Tensor | None,
                  radiomics: torch.Tensor, clinical: torch.Tensor) -> torch.Tensor:
        return functional_call(self._skeleton, (params, buffers), (image, radiomics, clinical))
