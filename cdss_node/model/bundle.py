"""The model bundle: a folder with ``manifest.json`` and one ``fold_<k>.safetensors`` per fold.

Loading checks the sha256 of every fold file against the manifest before reading its weights,
builds the network the manifest names, and loads the weights with a strict key match; a bundle
that loaded is exactly the one that was exported. Nothing is ever downloaded.

The bundle's own hash (``ModelBundle.sha256``) is the sha256 of the manifest in canonical JSON;
the manifest holds the fold files' hashes, so it identifies weights and settings together and is
what the reports name as the model hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file
from torch import nn

from cdss_node.model.device import choose_device
from cdss_node.model.ensemble import FoldEnsemble, choose_batching
from cdss_node.model.installed import canonical_sha256
from cdss_node.model.manifest import (
    FoldFile,
    Manifest,
    ManifestError,
    ModelDescription,
    fold_file_name,
    manifest_from_json,
    manifest_to_json,
)
from cdss_node.model.network import build_network

MANIFEST = "manifest.json"


class BundleError(ValueError):
    """A bundle whose files are missing, altered or do not fit the network it names."""


@dataclass(frozen=True)
class ModelBundle:
    """A loaded bundle: its manifest, hash, device and the fold models ready for inference."""

    folder: Path
    manifest: Manifest
    sha256: str
    device: torch.device
    ensemble: FoldEnsemble

    @property
    def description(self) -> ModelDescription:
        return self.manifest.description

    @property
    def model_id(self) -> str:
        return self.manifest.description.model_id


def bundle_sha256(manifest: Manifest) -> str:
    """The model hash: sha256 of the manifest (with its fold hashes) in canonical JSON."""
    return canonical_sha256(manifest_to_json(manifest))


def describe_network(description: ModelDescription) -> nn.Module:
    """A freshly initialised fold network of the architecture the description names."""
    return build_network(description.architecture, len(description.radiomics.names),
                         len(description.clinical.names), hidden=description.hidden_features,
                         dropout=description.dropout)


def save_bundle(folder: str | Path, description: ModelDescription,
                networks: Sequence[nn.Module]) -> Manifest:
    """Write a new bundle folder (one file per fold model, then the manifest) atomically."""
    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(f"bundle: {folder} already exists; export to a new folder")
    if not networks:
        raise BundleError("networks: expected at least one fold model, found none")
    reference = _shapes(describe_network(description).state_dict())
    partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    partial.mkdir(parents=True)
    try:
        folds = tuple(_save_fold(partial, k, net, reference, description)
                      for k, net in enumerate(networks, start=1))
        manifest = Manifest(description=description, folds=folds)
        text = json.dumps(manifest_to_json(manifest), indent=2, allow_nan=False)
        (partial / MANIFEST).write_text(text + "\n", encoding="utf-8")
        partial.rename(folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state.items()}


def _save_fold(folder: Path, k: int, network: nn.Module, reference: dict,
               description: ModelDescription) -> FoldFile:
    state = {key: value.detach().to("cpu", copy=True).contiguous()
             for key, value in network.state_dict().items()}
    if _shapes(state) != reference:
        raise BundleError(f"networks[{k - 1}]: expected a {description.architecture} network "
                          f"as described, found different weights (keys or shapes)")
    path = folder / fold_file_name(k)
    # One metadata key: safetensors writes several in a random order, so the file (and its
    # sha256) would differ between two saves of the same weights.
    save_file(state, str(path), metadata={
        "cdss": f"model_id={description.model_id};fold={k};"
                f"architecture={description.architecture}"})
    return FoldFile(file=path.name, sha256=hashlib.sha256(path.read_bytes()).hexdigest())


def read_manifest(folder: str | Path) -> Manifest:
    """The bundle's manifest, checked; ManifestError names the first wrong field."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise BundleError(f"bundle: expected {path}, found no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"manifest.json: expected JSON, found an error: {error}") from None
    return manifest_from_json(data)


def load_bundle(folder: str | Path, device: str = "auto", batching: str = "auto"
                ) -> ModelBundle:
    """Load a bundle: check every fold file's sha256, build its networks, strict-load weights.

    ``device``: ``auto`` (CUDA when present), ``cpu`` or ``cuda``. ``batching``: how the fold
    models share one inference (see ``cdss_node.model.ensemble``).
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    target = choose_device(device)
    mode = choose_batching(batching, target)
    networks = [_load_fold(folder, fold, manifest.description).to(target).eval()
                for fold in manifest.folds]
    return ModelBundle(folder=folder, manifest=manifest, sha256=bundle_sha256(manifest),
                       device=target, ensemble=FoldEnsemble(networks, mode))


def _load_fold(folder: Path, fold: FoldFile, description: ModelDescription) -> nn.Module:
    path = folder / fold.file
    if not path.is_file():
        raise BundleError(f"{fold.file}: expected the fold's weights in {folder}, found none")
    data = path.read_bytes()
    found = hashlib.sha256(data).hexdigest()
    if found != fold.sha256:
        raise BundleError(f"{fold.file}: expected sha256 {fold.sha256}, found {found} "
                          f"(the file was altered or damaged; refusing to load it)")
    network = describe_network(description)
    try:
        network.load_state_dict(load_safetensors(data), strict=True)
    except (RuntimeError, KeyError) as error:
        first = str(error).strip().splitlines()
        raise BundleError(f"{fold.file}: expected the weights of a {description.architecture} "
                          f"network, found: {' '.join(first[:3])[:300]}") from None
    return network
