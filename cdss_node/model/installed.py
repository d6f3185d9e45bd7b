"""Models installed on the node: ``<data_dir>/models/<name>/`` (a bundle each) and the file
``<data_dir>/models/ACTIVE`` naming the one in use.

``cdss-node model install PATH`` checks a bundle (every fold's sha256, the network it names)
and copies it in under ``<model_id>-<version>``; ``model use NAME`` checks it again and makes it
active; ``model list`` shows them. The analysis process takes the active model at its next
series, without a restart. ``[analysis] bundle`` in the config, when set, wins over ``ACTIVE``
(the config file is what IT checks); with neither, the built-in default bundle is used.

This module does not import torch: the node's own process only reads names and manifests.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

MODELS_DIR = "models"
MANIFEST = "manifest.json"      # as cdss_node.model.bundle names it (that module loads torch)
ACTIVE_FILE = "ACTIVE"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ModelStoreError(ValueError):
    """A model that cannot be installed or used; the message says why in one line."""


@dataclass(frozen=True)
class InstalledModel:
    name: str
    model_id: str
    version: str
    synthetic: bool
    active: bool
    sha256: str = "?"    # the model hash the SR names (its manifest in canonical JSON)


def models_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / MODELS_DIR


def active_bundle(data_dir: str | Path) -> Path | None:
    """The active installed model's folder, or None when none was made active."""
    folder = models_dir(data_dir)
    try:
        name = (folder / ACTIVE_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return folder / name if name else None


def installed_models(data_dir: str | Path) -> list[InstalledModel]:
    folder = models_dir(data_dir)
    active = active_bundle(data_dir)
    found = []
    for path in sorted(folder.iterdir() if folder.is_dir() else []):
        manifest = path / MANIFEST
        if not manifest.is_file():
            continue
        data = json.loads(manifest.read_text(encoding="utf-8"))
        found.append(InstalledModel(path.name, data.get("model_id", "?"),
                                    data.get("version", "?"),
                                    bool(data.get("training_data", {}).get("synthetic")),
                                    active is not None and path == active, canonical_sha256(data)))
    return found


def canonical_sha256(data: dict) -> str:
    """The model hash SRs name: sha256 of a manifest in canonical JSON (``bundle.bundle_sha256``
    hashes a loaded manifest this way; here, without torch, the one read from disk)."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                           allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def install(bundle: str | Path, data_dir: str | Path) -> str:
    """Check ``bundle`` and copy it in; returns its installed name."""
    source = Path(bundle)
    manifest = _checked(source)
    name = f"{manifest.description.model_id}-{manifest.description.version}"
    if not _NAME.match(name):
        raise ModelStoreError(f"model name {name!r}: expected letters, digits, '.', '_', '-'")
    target = models_dir(data_dir) / name
    if target.exists():
        raise ModelStoreError(f"{name}: already installed in {target}; give the bundle a new "
                              "version to install it beside the old one")
    partial = target.with_name(f".{name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    _checked(partial)                         # the copy is what was checked
    partial.rename(target)
    return name


def use(name: str, data_dir: str | Path) -> Path:
    """Make the installed model ``name`` active (checked again first); returns its folder."""
    folder = models_dir(data_dir) / name
    if not _NAME.match(name) or not (folder / MANIFEST).is_file():
        known = ", ".join(m.name for m in installed_models(data_dir)) or "none"
        raise ModelStoreError(f"{name!r}: no such installed model (installed: {known})")
    _checked(folder)
    partial = models_dir(data_dir) / f".{ACTIVE_FILE}.partial"
    partial.write_text(name + "\n", encoding="utf-8")
    partial.replace(models_dir(data_dir) / ACTIVE_FILE)
    return folder


def _checked(folder: Path):
    """The bundle's manifest once every fold's hash and weights check out (on the CPU)."""
    from cdss_node.model.bundle import load_bundle

    try:
        return load_bundle(folder, device="cpu").manifest
    except (OSError, ValueError) as error:
        raise ModelStoreError(f"{folder}: {error}") from None
