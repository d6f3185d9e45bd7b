"""Facts the pipeline reads from a CT header: the clinical inputs, the VOI window and whether
the pixels went through lossy compression.

Values that are absent, malformed or implausible become None (to be imputed and reported as
imputed), never an error: a radiology header is often incomplete.
"""

from __future__ import annotations

import re

from pydicom.dataset import Dataset

from cdss_node.pipeline.records import HeaderFacts

_AGE = re.compile(r"^(\d{3})([DWMY])$")
_AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}
_LIMITS = {"age_years": 130.0, "size_m": 3.0, "weight_kg": 500.0}
# Transfer syntaxes that are always lossy (JPEG Baseline, JPEG Extended), and those that may be
# (JPEG-LS near-lossless, JPEG 2000 and HTJ2K that are not "lossless only"): the latter count as
# lossy unless the header says Lossy Image Compression "00".
ALWAYS_LOSSY = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"})
MAYBE_LOSSY = frozenset({"1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91",
                         "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.203"})


def header_facts(ds: Dataset) -> HeaderFacts:
    return HeaderFacts(
        sex=_choice(ds.get("PatientSex"), ("M", "F", "O")),
        age_years=_plausible("age_years", _age_years(ds.get("PatientAge"))),
        size_m=_plausible("size_m", _number(ds.get("PatientSize"))),
        weight_kg=_plausible("weight_kg", _number(ds.get("PatientWeight"))),
        smoking_status=_choice(ds.get("SmokingStatus"), ("YES", "NO", "UNKNOWN")),
    )


def lossy_compressed(ds: Dataset) -> bool:
    """True when the image was, or as received may have been, lossy compressed: Lossy Image
    Compression (0028,2110) "01" (PS3.3 C.7.6.1.1.5: it stays "01" after decompression), or a
    lossy transfer syntax in the file meta."""
    said = str(ds.get("LossyImageCompression", "") or "").strip()
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    return said == "01" or syntax in ALWAYS_LOSSY or (syntax in MAYBE_LOSSY and said != "00")


def voi_window(ds: Dataset) -> tuple[float, float] | None:
    """The first (centre, width) of the VOI LUT module, classic or from a functional group."""
    source = ds
    if "WindowCenter" not in ds and "SharedFunctionalGroupsSequence" in ds:
        shared = ds.SharedFunctionalGroupsSequence[0]
        if "FrameVOILUTSequence" in shared:
            source = shared.FrameVOILUTSequence[0]
    centre, width = _first(source.get("WindowCenter")), _first(source.get("WindowWidth"))
    if centre is None or width is None or width <= 0:
        return None
    return centre, width


def _first(value: object) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = list(value)[0] if len(value) else None  # type: ignore[arg-type]
    return _number(value)


def _number(value: object) -> float | None:
    try:
        return float(value) if value not in (None, "") else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _plausible(name: str, value: float | None) -> float | None:
    return value if value is not None and 0 < value <= _LIMITS[name] else None


def _age_years(value: object) -> float | None:
    match = _AGE.match(str(value or "").strip())
    if not match:
        return None
    return int(match.group(1)) * _AGE_UNIT_YEARS[match.group(2)]


def _choice(value: object, allowed: tuple[str, ...]) -> str | None:
    text = str(value or "").strip().upper()
    return text if text in allowed else None
