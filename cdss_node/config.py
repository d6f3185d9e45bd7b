"""The node's configuration: one TOML file, read once into a frozen, validated object.

Every key has a default, so the node runs with no file at all. Environment variables named
``CDSS_<SECTION>_<KEY>`` (for example ``CDSS_NODE_PORT=11113``) override the file. Problems are
collected, not raised one at a time, so that ``cdss-node check-config`` can list them all.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import reprlib
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

ENV_PREFIX = "CDSS_"


class ConfigError(ValueError):
    """The configuration has problems; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def _key(default: Any, help: str, **kw: Any) -> Any:
    """A config key: its default and the comment that ``config-default`` prints above it."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class NodeSection:
    ae_title: str = _key("CDSS_EGFR", "The node's own AE title (1-16 characters).")
    host: str = _key("0.0.0.0", "Address to listen on; 0.0.0.0 listens on every interface.")
    port: int = _key(11112, "DICOM port (C-ECHO, C-STORE).", min=1, max=65535)
    data_dir: str = _key("./var", "Folder for the spool, the SQLite index and results.")
    max_pdu_bytes: int = _key(
        1048576, "Largest P-DATA PDU the node accepts (its Maximum Length Received); a peer "
        "that sends a longer one is aborted.", min=4096, max=16 * 1024 * 1024
    )
    max_associations: int = _key(16, "Associations served at once; one more is rejected "
                                 "'local limit exceeded'.", min=1, max=256)
    max_pending_connections: int = _key(
        32, "Connections that have not (yet) asked for an association, counted apart from "
        "max_associations; one more closes the oldest of them.", min=1, max=1024)
    max_dataset_mb: int = _key(
        2048, "Largest dataset one C-STORE may carry; a larger one is read to its end, "
        "discarded and refused 0xA700. Datasets over 4 MB go to disk as they arrive.",
        min=1, max=65536)
    network_timeout_s: float = _key(
        60.0, "Seconds a silent peer is waited for; also the most one PDU may take to arrive "
        "once it has begun.", min=1.0, max=3600.0)


@dataclass(frozen=True)
class SecuritySection:
    allowed_calling_aets: list = _key(
        [],
        "Calling AE titles allowed to connect, optionally bound to a host as 'AET@host'. "
        "An empty list accepts any calling AE.",
    )
    tls_cert: str = _key("", "PEM certificate of the node; with tls_key, turns TLS on.")
    tls_key: str = _key("", "PEM private key of the node.")
    tls_ca: str = _key("", "PEM CA bundle; when set, peers must present a certificate it signed.")


@dataclass(frozen=True)
class StoreSection:
    reserve_mb: int = _key(
        1024, "Free disk (MB) kept in reserve; below it C-STORE answers 0xA700.", min=0
    )
    fsync: bool = _key(
        False,
        "true: every instance file reaches the disk before success is answered, and index "
        "rows are committed with synchronous=FULL (survives power loss, slower). false: "
        "survives a crash of the node, not of the machine.",
    )
    retention_days: int = _key(
        30, "Days the spool keeps instances of series whose analysis has finished.", min=1
    )
    results_retention_days: int = _key(
        30, "Days the result files of an analysis (SEG, SR, result.json, mask) are kept once "
        "every destination took them; the PACS holds SEG and SR.", min=1)


@dataclass(frozen=True)
class SeriesSection:
    grace_s: float = _key(
        1.9, "Seconds after the association's release with no new instance: series complete.",
        min=0.0,
    )
    quiet_s: float = _key(
        30.0, "Fallback: seconds with no new instance, association still open: complete.",
        min=1.0,
    )
    check_interval_s: float = _key(
        0.5, "Seconds between completion checks.", min=0.05, max=60.0
    )


@dataclass(frozen=True)
class LoggingSection:
    level: str = _key("info", "debug, info, warning or error.",
                      choices=("debug", "info", "warning", "error"))
    format: str = _key("auto", "auto (console on a terminal, JSON lines otherwise), json, console.",
                       choices=("auto", "json", "console"))


@dataclass(frozen=True)
class AnalysisSection:
    bundle: str = _key(
        "", "Folder of the model bundle (manifest.json + fold weights). Empty: the built-in "
        "default bundle, trained on synthetic data and not for clinical use.")
    segmenter: str = _key(
        "default", "Tumor segmenter: default (the node's own, no weights) or lungtumormask "
        "(a 3D U-Net; needs unet_weights).", choices=("default", "lungtumormask"))
    unet_weights: str = _key(
        "", "Local file of LungTumorMask-compatible weights (dc_student.pth); nothing is "
        "ever downloaded.")
    unet_window: str = _key(
        "48x64x64", "The U-Net's sliding window in voxels, z x y x x at 1.5 x 1 x 1 mm, each a "
        "multiple of 16 (48x64x64: the patches seg-fit trains on), or 'whole' for one window "
        "per lung as LungTumorMask runs (needs many GB of memory).")
    device: str = _key("auto", "auto (CUDA when present, else CPU), cpu or cuda.",
                       choices=("auto", "cpu", "cuda"))
    job_timeout_s: float = _key(
        900.0, "Seconds one analysis may take before its worker process is stopped.", min=10.0)
    max_attempts: int = _key(
        2, "Attempts per series before it is marked failed (a crash or timeout retries).",
        min=1, max=10)
    workers: int = _key(
        1, "Analysis processes: 1, or 0 to only receive (complete series then wait in state "
        "queued until a node with a worker runs).", min=0, max=1)
    ahead_of_completion: bool = _key(
        True, "Analyse a series during the grace period after its association ends; the "
        "result is used only if no instance arrived or changed before completion (false: "
        "start at completion).")


@dataclass(frozen=True)
class OutputsSection:
    result_image: bool = _key(
        True, "Also send a result image (DICOM Secondary Capture, a series of its own): the "
        "tumor's key slice with its outline and the result burned in, for PACS viewers that "
        "show neither SR nor SEG. A not-evaluable series gets one that says why.")
    attention_map: bool = _key(
        True, "With a model that has an image network: also send where it looked (Grad-CAM of "
        "the image network as a fractional DICOM Segmentation, a series of its own, referenced "
        "from the SR) and write it as attention_map.nii.gz beside result.json. A model without "
        "an image network has none.")


@dataclass(frozen=True)
class OutboxSection:
    retry_initial_s: float = _key(
        10.0, "Seconds before the first retry of a result a destination did not take; each "
        "further retry waits twice as long.", min=1.0)
    retry_max_s: float = _key(600.0, "Longest wait between two retries.", min=1.0)
    give_up_after_h: float = _key(
        24.0, "Hours of retries before a result is dead (cdss-node status shows it, "
        "cdss-node resend tries again).", min=0.01)
    check_interval_s: float = _key(2.0, "Seconds between looks at the outbox.", min=0.1,
                                   max=600.0)
    probe_interval_s: float = _key(
        30.0, "Seconds between C-ECHOs to a destination that could not be reached while "
        "results wait for their next retry; when it answers they are sent at once. 0: off.",
        min=0.0, max=3600.0)


@dataclass(frozen=True)
class HttpSection:
    enabled: bool = _key(
        True, "Serve /healthz, /metrics (Prometheus) and the status page on a port of its own.")
    host: str = _key(
        "127.0.0.1", "Address of the HTTP port. 127.0.0.1 keeps it on this machine; 0.0.0.0 "
        "opens it to the network (plain HTTP: put it behind the hospital's proxy).")
    port: int = _key(8080, "HTTP port (not the DICOM port); 0 takes a free port and logs it.",
                     min=0, max=65535)
    show_patient_identity: bool = _key(
        False, "true: the status page shows each series' patient name and ID (read from its "
        "first instance). false: UIDs only.")


@dataclass(frozen=True)
class RetrieveSection:
    source: str = _key(
        "", "Name of the [[destinations]] entry to fetch CT series back from (the PACS) when "
        "a radiologist's mark or cdss-node analyze-study needs a series the spool no longer "
        "holds. Empty: no retrieval (such a mark gets a not-evaluable SR).")
    method: str = _key(
        "move", "move: C-MOVE, the PACS sends the series to this node's AE title (the PACS "
        "must know the node as a modality); get: C-GET, on the node's own association.",
        choices=("move", "get"))
    timeout_s: float = _key(
        600.0, "Seconds the PACS may stay silent during a retrieval (each wait for it; a PACS "
        "that keeps answering may take longer).", min=10.0, max=86400.0)


@dataclass(frozen=True)
class Destination:
    name: str
    ae_title: str
    host: str
    port: int
    tls: bool = False       # DICOM over TLS; the peer's certificate must name ``host``
    tls_ca: str = ""        # PEM CA bundle that signed the peer's certificate; "": the system's
    tls_cert: str = ""      # PEM certificate the node presents, for a peer that requires one
    tls_key: str = ""


DESTINATION_KEYS = {"name": str, "ae_title": str, "host": str, "port": int}
DESTINATION_TLS_KEYS = {"tls": bool, "tls_ca": str, "tls_cert": str, "tls_key": str}
KIND_WORDS = {str: "a string", int: "an integer", bool: "true or false"}


@dataclass(frozen=True)
class Config:
    node: NodeSection = field(default_factory=NodeSection)
    security: SecuritySection = field(default_factory=SecuritySection)
    store: StoreSection = field(default_factory=StoreSection)
    series: SeriesSection = field(default_factory=SeriesSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    analysis: AnalysisSection = field(default_factory=AnalysisSection)
    outputs: OutputsSection = field(default_factory=OutputsSection)
    outbox: OutboxSection = field(default_factory=OutboxSection)
    http: HttpSection = field(default_factory=HttpSection)
    retrieve: RetrieveSection = field(default_factory=RetrieveSection)
    destinations: tuple[Destination, ...] = ()

    @property
    def data_path(self) -> Path:
        return Path(self.node.data_dir)

    @property
    def tls_enabled(self) -> bool:
        return bool(self.security.tls_cert)

    @property
    def retrieve_source(self) -> Destination | None:
        """The destination ``[retrieve] source`` names, or None (no retrieval)."""
        return next((d for d in self.destinations if d.name == self.retrieve.source), None)


SECTIONS: dict[str, type] = {
    "node": NodeSection,
    "security": SecuritySection,
    "store": StoreSection,
    "series": SeriesSection,
    "logging": LoggingSection,
    "analysis": AnalysisSection,
    "outputs": OutputsSection,
    "outbox": OutboxSection,
    "http": HttpSection,
    "retrieve": RetrieveSection,
}

_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable ASCII without backslash


SHOWN_CHARS = 80     # a value quoted in a problem is cut here: one line, whatever the file holds
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, SHOWN_CHARS, SHOWN_CHARS
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = 6


def shown(value: Any) -> str:
    """``repr(value)`` for a problem's line, cut to about 80 characters: a string longer than
    that as its start and ``…(N characters)``; lists and tables nested or long abbreviated."""
    if isinstance(value, str) and len(value) > SHOWN_CHARS:
        return f"{value[:SHOWN_CHARS]!r}…({len(value)} characters)"
    text = _SHORT.repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…"


def shown_name(name: str) -> str:
    """A key or section name as the file spells it, cut like ``shown``."""
    return name if len(name) <= SHOWN_CHARS else f"{name[:SHOWN_CHARS]}…({len(name)} characters)"


def ae_title_problem(value: Any) -> str | None:
    """Why ``value`` is not a valid AE title, or None."""
    if not isinstance(value, str) or not _AE_RE.match(value) or not value.strip():
        return ("expected an AE title (1-16 printable ASCII characters, no backslash), "
                f"found {shown(value)}")
    return None


# ---------------------------------------------------------------- loading


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None, *,
                probe_data_dir: bool = False) -> Config:
    """Read ``path`` (or nothing), apply ``CDSS_*`` overrides, validate; raise ConfigError.
    ``probe_data_dir``: also prove that the node can keep its files in ``node.data_dir``
    (``check-config`` and ``serve``; it writes and deletes a probe there)."""
    raw = _read_toml(Path(path)) if path else {}
    problems: list[str] = []
    _apply_env(raw, os.environ if env is None else env, problems)
    config = _build(raw, problems)
    if probe_data_dir and (problem := data_dir_problem(config.node.data_dir)):
        problems.append(f"node.data_dir: {problem}")
    if problems:
        raise ConfigError(problems)
    return config


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(["no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot be read: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"]) from None
    except RecursionError:      # tomllib recurses once per level of [ and {
        raise ConfigError(["not valid TOML: arrays or inline tables nested too deeply"]) from None
    except MemoryError:
        raise ConfigError(["cannot be read: too large for the memory"]) from None


def data_dir_problem(data_dir: str) -> str | None:
    """Why the node cannot keep its spool, index and results in ``data_dir``, or None. Really
    tried, since permission bits say nothing to root (a read-only mount, /proc, a file): the
    missing folders are made, a file is created in the last, and all of it is removed again."""
    if "\0" in data_dir:
        return f"expected a path without NUL characters, found {shown(data_dir)}"
    folder = Path(os.path.abspath(data_dir))      # ".." resolved as the text says
    chain = (folder, *folder.parents)
    existing = next(p for p in chain if os.path.lexists(p))
    if not existing.is_dir():
        return f"{shown(str(existing))} is not a folder"
    try:
        _probe(list(reversed(chain[:chain.index(existing)])), folder)
    except OSError as error:
        return f"cannot create or write in {shown(data_dir)}: {error.strerror or error}"
    return None


def _probe(missing: list[Path], folder: Path) -> None:
    """Make the ``missing`` folders (outermost first), create and delete a file in ``folder``,
    remove the folders made."""
    made: list[Path] = []
    try:
        for path in missing:
            path.mkdir()
            made.append(path)
        fd, name = tempfile.mkstemp(prefix=".cdss-probe-", dir=folder)
        os.close(fd)
        os.unlink(name)
    finally:
        for path in reversed(made):
            path.rmdir()


def _apply_env(raw: dict, env: Mapping[str, str], problems: list[str]) -> None:
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            name = f"{ENV_PREFIX}{section}_{f.name}".upper()
            if name in env:
                value = _parse_env(env[name], f.default if f.default is not dataclasses.MISSING
                                   else [], name, problems)
                raw.setdefault(section, {})[f.name] = value


def _parse_env(text: str, default: Any, name: str, problems: list[str]) -> Any:
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        problems.append(f"{name}: expected true or false, found {shown(text)}")
        return default
    if isinstance(default, list):
        return [item.strip() for item in text.split(",") if item.strip()]
    if isinstance(default, (int, float)):
        try:
            value = type(default)(text)
        except ValueError:
            problems.append(f"{name}: expected a number, found {shown(text)}")
            return default
        if not math.isfinite(value):    # float() reads nan and inf
            problems.append(f"{name}: expected a finite number, found {shown(text)}")
            return default
        return value
    return text


def _build(raw: dict, problems: list[str]) -> Config:
    for unknown in sorted(set(raw) - set(SECTIONS) - {"destinations"}):
        problems.append(f"{shown_name(unknown)}: unknown section "
                        f"(known: {', '.join(SECTIONS)}, destinations)")
    sections = {}
    for name, cls in SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            problems.append(f"{name}: expected a table [{name}], found {shown(table)}")
            table = {}
        sections[name] = _build_section(name, cls, table, problems)
    destinations = _build_destinations(raw.get("destinations", []), problems)
    config = Config(destinations=destinations, **sections)
    problems.extend(_cross_checks(config))
    return config


def _build_section(section: str, cls: type, table: dict, problems: list[str]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for unknown in sorted(set(table) - set(fields)):
        problems.append(f"{section}.{shown_name(unknown)}: unknown key "
                        f"(known: {', '.join(fields)})")
    values = {}
    for name, f in fields.items():
        if name in table:
            problem = _check_value(table[name], f)
            if problem:
                problems.append(f"{section}.{name}: {problem}")
            else:
                values[name] = _coerce(table[name], f)
    return cls(**values)


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def _check_value(value: Any, f: dataclasses.Field) -> str | None:
    default = field_default(f)
    meta = f.metadata
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"expected true or false, found {shown(value)}"
    if isinstance(default, (int, float)):
        return _check_number(value, default, meta)
    if isinstance(default, list):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return None if ok else f"expected a list of strings, found {shown(value)}"
    if not isinstance(value, str):
        return f"expected a string, found {shown(value)}"
    if "choices" in meta and value not in meta["choices"]:
        return f"expected one of {', '.join(meta['choices'])}, found {shown(value)}"
    return None


def _check_number(value: Any, default: Any, meta: Mapping) -> str | None:
    kind = "an integer" if isinstance(default, int) else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected {kind}, found {shown(value)}"
    if isinstance(default, int) and not isinstance(value, int):
        return f"expected {kind}, found {shown(value)}"
    if not math.isfinite(value):        # TOML has nan and inf; no key means either
        return f"expected a finite number, found {shown(value)}"
    low, high = meta.get("min"), meta.get("max")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"{low if low is not None else '-inf'}..{high if high is not None else 'inf'}"
        return f"expected {kind} in {bounds}, found {shown(value)}"
    return None


def _coerce(value: Any, f: dataclasses.Field) -> Any:
    default = field_default(f)
    if isinstance(default, float) and not isinstance(default, bool):
        return float(value)
    if isinstance(default, list):
        return list(value)
    return value


def _build_destinations(items: Any, problems: list[str]) -> tuple[Destination, ...]:
    if not isinstance(items, list):
        problems.append(f"destinations: expected [[destinations]] tables, found {shown(items)}")
        return ()
    built = []
    for i, item in enumerate(items):
        where = f"destinations[{i}]"
        destination = _build_destination(where, item, problems)
        if destination:
            built.append(destination)
    names = [d.name for d in built]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"destinations: name {shown(name)} is used more than once")
    return tuple(built)


def _build_destination(where: str, item: Any, problems: list[str]) -> Destination | None:
    if not isinstance(item, dict):
        problems.append(f"{where}: expected a table, found {shown(item)}")
        return None
    before = len(problems)
    known = {**DESTINATION_KEYS, **DESTINATION_TLS_KEYS}
    for unknown in sorted(set(item) - set(known)):
        problems.append(f"{where}.{shown_name(unknown)}: unknown key "
                        f"(known: {', '.join(known)})")
    for key, kind in known.items():
        value = item.get(key)
        if value is None:
            if key in DESTINATION_KEYS:
                problems.append(f"{where}.{key}: missing")
        elif not _is_kind(value, kind) or (key in DESTINATION_KEYS and value == ""):
            problems.append(f"{where}.{key}: expected {KIND_WORDS[kind]}, found {shown(value)}")
    if len(problems) > before:
        return None
    destination = Destination(**{k: item[k] for k in known if k in item})
    problems.extend(f"{where}.{p}" for p in _destination_problems(destination))
    return destination


def _is_kind(value: Any, kind: type) -> bool:
    """TOML's type is the one wanted; a bool is no integer here (Python says it is)."""
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def _destination_problems(d: Destination) -> list[str]:
    problems = []
    if (p := ae_title_problem(d.ae_title)) is not None:
        problems.append(f"ae_title: {p}")
    if not 1 <= d.port <= 65535:
        problems.append(f"port: expected an integer in 1..65535, found {d.port}")
    return problems + _destination_tls_problems(d)


def _destination_tls_problems(d: Destination) -> list[str]:
    files = [name for name in ("tls_ca", "tls_cert", "tls_key") if getattr(d, name)]
    problems = [f"{name}: no such file {shown(getattr(d, name))}" for name in files
                if not Path(getattr(d, name)).is_file()]
    if files and not d.tls:
        problems.append(f"{files[0]}: set tls = true as well (TLS is off without it)")
    if bool(d.tls_cert) != bool(d.tls_key):
        problems.append("tls_cert and tls_key: set both or neither")
    return problems


def _cross_checks(config: Config) -> list[str]:
    problems = []
    if (p := ae_title_problem(config.node.ae_title)) is not None:
        problems.append(f"node.ae_title: {p}")
    for entry in config.security.allowed_calling_aets:
        if (p := ae_title_problem(entry.split("@", 1)[0])) is not None:
            problems.append(f"security.allowed_calling_aets: {p}")
    problems.extend(_tls_problems(config.security))
    problems.extend(_analysis_problems(config.analysis))
    if config.retrieve.source and config.retrieve_source is None:
        problems.append(f"retrieve.source: expected the name of a [[destinations]] entry, "
                        f"found {shown(config.retrieve.source)}")
    if config.http.enabled and config.http.port == config.node.port:
        problems.append(f"http.port: expected a port other than the DICOM port, found "
                        f"{config.http.port} for both")
    return problems


def _analysis_problems(analysis: AnalysisSection) -> list[str]:
    problems = []
    if analysis.bundle and not (Path(analysis.bundle) / "manifest.json").is_file():
        problems.append(f"analysis.bundle: no manifest.json in {shown(analysis.bundle)}")
    if analysis.segmenter == "lungtumormask" and not analysis.unet_weights:
        problems.append("analysis.unet_weights: needed by segmenter = \"lungtumormask\"")
    if analysis.unet_weights and not Path(analysis.unet_weights).is_file():
        problems.append(f"analysis.unet_weights: no such file {shown(analysis.unet_weights)}")
    try:
        unet_window(analysis.unet_window)
    except ValueError as error:
        problems.append(f"analysis.unet_window: {error}")
    return problems


def unet_window(text: str) -> tuple[int, int, int] | None:
    """``"48x64x64"`` as (48, 64, 64); ``"whole"`` as None (one window per lung)."""
    if text.strip().lower() == "whole":
        return None
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 and int(p) % 16 == 0
                                  for p in parts):
        raise ValueError("expected 'whole' or three multiples of 16 as ZxYxX, "
                         f"found {shown(text)}")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def _tls_problems(sec: SecuritySection) -> list[str]:
    problems = []
    if bool(sec.tls_cert) != bool(sec.tls_key):
        problems.append("security.tls_cert and security.tls_key: set both or neither")
    if sec.tls_ca and not sec.tls_cert:
        problems.append("security.tls_ca: needs tls_cert and tls_key (TLS is off without them)")
    for name in ("tls_cert", "tls_key", "tls_ca"):
        path = getattr(sec, name)
        if path and not Path(path).is_file():
            problems.append(f"security.{name}: no such file {shown(path)}")
    return problems
