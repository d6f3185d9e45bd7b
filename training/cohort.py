"""The cohort manifest: one CSV row per patient, the input of ``cdss-train prepare``.

Columns (a header row names them; order is free; unknown columns are an error):

=================  ========  ====================================================================
column             needed    values
=================  ========  ====================================================================
case_id            yes       unique; letters, digits, ``._-`` (it names files in the store)
site               yes       the hospital or scanner site; ``--cv-site``, ``--internal-site``
                             and ``--external-site`` give each site its role, as in the paper
egfr               yes       ``mutant`` or ``wild-type`` (also ``1`` / ``0``)
sex                no        ``M`` or ``F``
age                no        years, (0, 130]
height_m           no        metres, (0, 3]
weight_kg          no        kilograms, (0, 500]
smoking            no        ``yes`` (ever smoked) or ``no`` (never)
family_history     no        ``yes`` or ``no`` (of lung cancer)
stage              no        ``I``, ``II``, ``III`` or ``IV``
image              yes       a folder with the CT series (DICOM) or a NIfTI file; relative paths
                             start at the manifest's folder
mask               no        the tumor mask: NIfTI on the image's grid, or a DICOM SEG file;
                             empty: the node's segmenter finds the tumor
=================  ========  ====================================================================

An empty optional cell means unknown. Clinical facts in the manifest win over the CT header's;
what neither gives is imputed with the training medians, exactly as the node imputes it.
A bad row gives a ``ManifestError`` naming the file, row and column.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cdss_node.pipeline.clinical import STAGES, SuppliedFacts
from cdss_node.pipeline.records import HeaderFacts

COLUMNS = ("case_id", "site", "egfr", "sex", "age", "height_m", "weight_kg", "smoking",
           "family_history", "stage", "image", "mask")
REQUIRED = ("case_id", "site", "egfr", "image")
CASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
EGFR = {"mutant": True, "1": True, "wild-type": False, "wildtype": False, "0": False}
YES_NO = {"yes": True, "no": False}


class ManifestError(ValueError):
    """A manifest problem, as ``<file> row <n>, column <name>: <what>``."""


@dataclass(frozen=True)
class CohortCase:
    case_id: str
    site: str
    egfr_mutant: bool
    header: HeaderFacts          # the clinical facts a CT header can carry, from the manifest
    supplied: SuppliedFacts      # family history and stage
    image: Path
    mask: Path | None


@dataclass(frozen=True)
class SiteRoles:
    """Which site is cross-validated (training), which is internal and which external."""

    cross_validation: str
    internal: str | None = None
    external: str | None = None

    def role(self, site: str) -> str | None:
        return {self.cross_validation: "cross-validation", self.internal: "internal",
                self.external: "external"}.get(site)


def read_manifest(path: Path) -> list[CohortCase]:
    """Every row of the manifest as a ``CohortCase``; raises ``ManifestError``."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as stream:
        reader = csv.DictReader(stream)
        _check_header(path, reader.fieldnames)
        cases = [_case(path, n, row) for n, row in enumerate(reader, start=2)]
    if not cases:
        raise ManifestError(f"{path}: no cases (only a header row)")
    _check_unique(path, cases)
    return cases


def write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    """Rows (column -> text) as a manifest CSV with every column."""
    with Path(path).open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({column: row.get(column, "") for column in COLUMNS} for row in rows)


def check_roles(cases: list[CohortCase], roles: SiteRoles) -> None:
    """Each named site has cases, with both EGFR groups where it is cross-validated."""
    for role, site in (("--cv-site", roles.cross_validation), ("--internal-site", roles.internal),
                       ("--external-site", roles.external)):
        if site is None:
            continue
        labels = {c.egfr_mutant for c in cases if c.site == site}
        if not labels:
            known = ", ".join(sorted({c.site for c in cases}))
            raise ManifestError(f"{role} {site!r}: no case of that site (sites: {known})")
        if role == "--cv-site" and len(labels) < 2:
            raise ManifestError(f"{role} {site!r}: needs both mutant and wild-type cases")


def _check_header(path: Path, names: list[str] | None) -> None:
    names = names or []
    unknown = [n for n in names if n not in COLUMNS]
    missing = [n for n in REQUIRED if n not in names]
    if unknown or missing:
        raise ManifestError(f"{path} row 1: " + "; ".join(
            ([f"unknown column(s) {', '.join(unknown)} (known: {', '.join(COLUMNS)})"]
             if unknown else []) + ([f"missing column(s) {', '.join(missing)}"] if missing
                                    else [])))


def _check_unique(path: Path, cases: list[CohortCase]) -> None:
    seen: dict[str, int] = {}
    for n, case in enumerate(cases, start=2):
        if case.case_id in seen:
            raise ManifestError(f"{path} row {n}, column case_id: {case.case_id!r} is also "
                                f"on row {seen[case.case_id]}")
        seen[case.case_id] = n


def _case(path: Path, n: int, row: dict[str, str | None]) -> CohortCase:
    def cell(column: str, parse: Callable[[str], object], needed: bool = False):
        text = (row.get(column) or "").strip()
        if not text:
            if needed:
                raise ManifestError(f"{path} row {n}, column {column}: empty (needed)")
            return None
        try:
            return parse(text)
        except ValueError as error:
            raise ManifestError(f"{path} row {n}, column {column}: {error}") from None

    if None in row:
        raise ManifestError(f"{path} row {n}: more cells than columns")
    header = HeaderFacts(sex=cell("sex", _sex), age_years=cell("age", _number(130.0)),
                         size_m=cell("height_m", _number(3.0)),
                         weight_kg=cell("weight_kg", _number(500.0)),
                         smoking_status=cell("smoking", _smoking))
    supplied = SuppliedFacts(family_history=cell("family_history", _choice(YES_NO)),
                             stage=cell("stage", _choice({s: s for s in STAGES})))
    image = cell("image", lambda t: _file(path, t), needed=True)
    return CohortCase(case_id=cell("case_id", _case_id, needed=True),
                      site=cell("site", str, needed=True),
                      egfr_mutant=cell("egfr", _choice(EGFR), needed=True),
                      header=header, supplied=supplied, image=image,
                      mask=cell("mask", lambda t: _file(path, t)))


def _case_id(text: str) -> str:
    if not CASE_ID.fullmatch(text):
        raise ValueError(f"expected letters, digits and ._- (at most 64), found {text!r}")
    return text


def _choice(values: dict[str, object]) -> Callable[[str], object]:
    def parse(text: str) -> object:
        key = text if text in values else text.lower()
        if key not in values:
            raise ValueError(f"expected one of {', '.join(values)}, found {text!r}")
        return values[key]
    return parse


def _sex(text: str) -> str:
    return str(_choice({"M": "M", "F": "F"})(text.upper()))


def _smoking(text: str) -> str:
    return "YES" if _choice(YES_NO)(text) else "NO"


def _number(high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"expected a number, found {text!r}") from None
        if not 0 < value <= high:
            raise ValueError(f"expected a number in (0, {high:g}], found {text!r}")
        return value
    return parse


def _file(manifest: Path, text: str) -> Path:
    found = (manifest.parent / text).resolve()
    if not found.exists():
        raise ValueError(f"no such file or folder {text!r} (from {manifest.parent})")
    return found
