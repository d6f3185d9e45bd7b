"""The model bundle's ``manifest.json``: what the model is, how to rebuild it, how to scale its
inputs, and the hash of every fold's weights.

The manifest is read into frozen dataclasses that check themselves, so a bundle that loaded is
complete and consistent. A missing, unknown or wrong field is refused with one line naming it,
e.g. ``manifest.json: decision_threshold: expected a number in (0, 1), found 1.5``.
"""

from __future__ import annotations

import datetime
import math
import re
from dataclasses import dataclass, field

from cdss_node.model.network import ARCHITECTURES
from cdss_node.pipeline.clinical import FEATURES, ClinicalScaling

FORMAT_VERSION = 1
FIELDS = ("format_version", "model_id", "name", "version", "architecture", "hidden_features",
          "dropout", "fold_count", "folds", "radiomics", "clinical", "decision_threshold",
          "intended_use", "training_data", "validation_metrics", "created")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """A manifest that is missing a field, has an unknown one, or holds a wrong value."""


def check(ok: bool, name: str, expected: str, found: object) -> None:
    if not ok:
        raise ManifestError(f"manifest.json: {name}: expected {expected}, found {found!r}")


def fold_file_name(k: int) -> str:
    """The weights of fold k (1-based, as the paper numbers its folds)."""
    return f"fold_{k}.safetensors"


def _text(value: object, name: str, limit: int = 64) -> None:
    check(isinstance(value, str) and 0 < len(value.strip()) and len(value) <= limit, name,
          f"a non-empty string of at most {limit} characters", value)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class FoldFile:
    """One fold model's weights: file name in the bundle folder and its sha256."""

    file: str
    sha256: str

    def __post_init__(self) -> None:
        check(isinstance(self.file, str) and bool(re.fullmatch(r"fold_[1-9]\d*\.safetensors",
                                                               self.file)),
              "folds.file", "fold_<k>.safetensors", self.file)
        check(isinstance(self.sha256, str) and bool(_SHA256.fullmatch(self.sha256)),
              "folds.sha256", "64 lowercase hex digits", self.sha256)


@dataclass(frozen=True)
class RadiomicsScaling:
    """The radiomics feature order and the training minimum / maximum of each (min-max)."""

    names: tuple[str, ...]
    minimums: tuple[float, ...]
    maximums: tuple[float, ...]

    def __post_init__(self) -> None:
        names = self.names
        check(len(names) >= 1 and all(isinstance(n, str) and n for n in names)
              and len(set(names)) == len(names), "radiomics.names",
              "a non-empty list of unique names", names)
        for side in ("minimums", "maximums"):
            values = getattr(self, side)
            check(len(values) == len(names) and all(_number(v) for v in values),
                  f"radiomics.{side}", f"{len(names)} finite numbers", values)
        check(all(hi >= lo for lo, hi in zip(self.minimums, self.maximums)),
              "radiomics.maximums", "each >= its minimum",
              [n for n, lo, hi in zip(names, self.minimums, self.maximums) if hi < lo])


@dataclass(frozen=True)
class ClinicalInputs:
    """The clinical feature order and the training medians, minimums and maximums."""

    names: tuple[str, ...]
    scaling: ClinicalScaling

    def __post_init__(self) -> None:
        check(tuple(self.names) == FEATURES, "clinical.names", f"the node's order {FEATURES}",
              self.names)


@dataclass(frozen=True)
class TrainingData:
    """What the model was trained on; a model trained on synthetic data says so."""

    description: str
    synthetic: bool

    def __post_init__(self) -> None:
        _text(self.description, "training_data.description", limit=2000)
        check(isinstance(self.synthetic, bool), "training_data.synthetic", "true or false",
              self.synthetic)


@dataclass(frozen=True)
class ModelDescription:
    """Everything the trainer decides about a model: identity, network, inputs, decision."""

    model_id: str
    name: str
    version: str
    architecture: str
    hidden_features: int
    dropout: float
    radiomics: RadiomicsScaling
    clinical: ClinicalInputs
    decision_threshold: float
    intended_use: str
    training_data: TrainingData
    validation_metrics: dict[str, float] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.date.today().isoformat())

    def __post_init__(self) -> None:
        check(isinstance(self.model_id, str) and bool(_ID.fullmatch(self.model_id)), "model_id",
              "1-64 letters, digits, '.', '_' or '-'", self.model_id)
        _text(self.name, "name")
        _text(self.version, "version")
        check(self.architecture in ARCHITECTURES, "architecture", f"one of {ARCHITECTURES}",
              self.architecture)
        check(isinstance(self.hidden_features, int) and not isinstance(self.hidden_features, bool)
              and self.hidden_features >= 1, "hidden_features", "a positive integer",
              self.hidden_features)
        check(_number(self.dropout) and 0 <= self.dropout < 1, "dropout", "a number in [0, 1)",
              self.dropout)
        self._check_decision_and_record()

    def _check_decision_and_record(self) -> None:
        check(_number(self.decision_threshold) and 0 < self.decision_threshold < 1,
              "decision_threshold", "a number in (0, 1)", self.decision_threshold)
        _text(self.intended_use, "intended_use", limit=2000)
        metrics = self.validation_metrics
        check(isinstance(metrics, dict) and all(isinstance(k, str) and _number(v)
                                                for k, v in metrics.items()),
              "validation_metrics", "an object of names to finite numbers", metrics)
        check(isinstance(self.created, str) and _is_date(self.created), "created",
              "an ISO date YYYY-MM-DD", self.created)


def _is_date(text: str) -> bool:
    try:
        return datetime.date.fromisoformat(text).isoformat() == text
    except ValueError:
        return False


@dataclass(frozen=True)
class Manifest:
    """A bundle's manifest: the model description and one weights file per fold."""

    description: ModelDescription
    folds: tuple[FoldFile, ...]
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        check(self.format_version == FORMAT_VERSION, "format_version", str(FORMAT_VERSION),
              self.format_version)
        expected = [fold_file_name(k) for k in range(1, len(self.folds) + 1)]
        check(len(self.folds) >= 1 and [f.file for f in self.folds] == expected, "folds",
              "fold_1.safetensors, fold_2.safetensors, ... in order",
              [f.file for f in self.folds])

    @property
    def fold_count(self) -> int:
        return len(self.folds)


def manifest_to_json(manifest: Manifest) -> dict:
    """The manifest as a JSON object (the fields of FIELDS, in that order)."""
    d = manifest.description
    scaling = d.clinical.scaling
    data = {
        "format_version": manifest.format_version, "model_id": d.model_id, "name": d.name,
        "version": d.version, "architecture": d.architecture,
        "hidden_features": d.hidden_features, "dropout": d.dropout,
        "fold_count": manifest.fold_count,
        "folds": [{"file": f.file, "sha256": f.sha256} for f in manifest.folds],
        "radiomics": {"names": list(d.radiomics.names), "minimums": list(d.radiomics.minimums),
                      "maximums": list(d.radiomics.maximums)},
        "clinical": {"names": list(d.clinical.names), "medians": dict(scaling.medians),
                     "minimums": dict(scaling.minimums), "maximums": dict(scaling.maximums)},
        "decision_threshold": d.decision_threshold, "intended_use": d.intended_use,
        "training_data": {"description": d.training_data.description,
                          "synthetic": d.training_data.synthetic},
        "validation_metrics": dict(d.validation_metrics), "created": d.created,
    }
    return {name: data[name] for name in FIELDS}


def manifest_from_json(data: object) -> Manifest:
    """The manifest read from its JSON object; ManifestError names the first wrong field."""
    if isinstance(data, dict) and "format_version" in data:
        check(data["format_version"] == FORMAT_VERSION, "format_version", str(FORMAT_VERSION),
              data["format_version"])
    top = _object(data, "", FIELDS)
    folds = tuple(_fold(item) for item in _list(top["folds"], "folds"))
    check(top["fold_count"] == len(folds), "fold_count", f"{len(folds)} (one per fold file)",
          top["fold_count"])
    description = ModelDescription(
        model_id=top["model_id"], name=top["name"], version=top["version"],
        architecture=top["architecture"], hidden_features=top["hidden_features"],
        dropout=top["dropout"], radiomics=_radiomics(top["radiomics"]),
        clinical=_clinical(top["clinical"]), decision_threshold=top["decision_threshold"],
        intended_use=top["intended_use"], training_data=_training_data(top["training_data"]),
        validation_metrics=top["validation_metrics"], created=top["created"])
    return Manifest(description=description, folds=folds, format_version=top["format_version"])


def _object(data: object, prefix: str, keys: tuple[str, ...]) -> dict:
    """A JSON object with exactly ``keys``; ``prefix`` is its place in the manifest."""
    check(isinstance(data, dict), prefix or "manifest", "a JSON object", type(data).__name__)
    missing = [k for k in keys if k not in data]  # type: ignore[operator]
    if missing:
        raise ManifestError(f"manifest.json: {_join(prefix, missing[0])}: missing")
    unknown = sorted(set(data) - set(keys))  # type: ignore[arg-type]
    check(not unknown, prefix or "manifest", f"only the fields {keys}", unknown)
    return data  # type: ignore[return-value]


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _list(value: object, name: str) -> list:
    check(isinstance(value, list), name, "a JSON list", type(value).__name__)
    return value  # type: ignore[return-value]


def _fold(item: object) -> FoldFile:
    fold = _object(item, "folds[]", ("file", "sha256"))
    return FoldFile(file=fold["file"], sha256=fold["sha256"])


def _radiomics(value: object) -> RadiomicsScaling:
    r = _object(value, "radiomics", ("names", "minimums", "maximums"))
    return RadiomicsScaling(*(tuple(_list(r[k], f"radiomics.{k}"))
                              for k in ("names", "minimums", "maximums")))


def _clinical(value: object) -> ClinicalInputs:
    c = _object(value, "clinical", ("names", "medians", "minimums", "maximums"))
    for key in ("medians", "minimums", "maximums"):
        check(isinstance(c[key], dict) and all(_number(v) for v in c[key].values()),
              f"clinical.{key}", "an object of feature names to finite numbers", c[key])
    try:
        scaling = ClinicalScaling(c["medians"], c["minimums"], c["maximums"])
    except ValueError as error:
        raise ManifestError(f"manifest.json: clinical.{error}") from None
    return ClinicalInputs(names=tuple(_list(c["names"], "clinical.names")), scaling=scaling)


def _training_data(value: object) -> TrainingData:
    t = _object(value, "training_data", ("description", "synthetic"))
    return TrainingData(description=t["description"], synthetic=t["synthetic"])
