"""Shared fixtures: free ports, a node in this process, external tools, small CT series."""

from __future__ import annotations

import os
import random
import shutil
import socket
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from cdss_node.config import (
    AnalysisSection, Config, HttpSection, NodeSection, SeriesSection, StoreSection)

REPO = Path(__file__).resolve().parents[1]


_ISSUED_PORTS: set[int] = set()
_PORT_DRAW = random.Random()   # seeded from the OS: two processes draw apart


def _ephemeral_floor() -> int:
    """The lowest port the kernel hands out to outgoing connections (and to bind(0))."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    for host in ("127.0.0.1", ""):        # Orthanc and storescp listen on every address
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A port nobody listens on, never handed out before in this process, and below the
    kernel's ephemeral range. bind(0) is not used: Linux gives the same just-closed port to
    two calls in a row (CI once started Orthanc with its DICOM and HTTP ports equal), and a
    port from the ephemeral range can be taken by an outgoing connection before the server
    that was promised it binds."""
    floor = _ephemeral_floor()
    low = 20000 if floor > 21000 else 1024
    for _ in range(1000):
        port = _PORT_DRAW.randrange(low, floor)
        if port not in _ISSUED_PORTS and _bindable(port):
            _ISSUED_PORTS.add(port)
            return port
    raise RuntimeError(f"no free TCP port found in {low}..{floor - 1}")


def require_tool(name: str) -> str:
    """Path of an external tool; skip without it, or fail when CDSS_REQUIRE_TOOLS=1 (CI)."""
    path = shutil.which(name)
    if path:
        return path
    message = (f"{name} is not installed "
               "(Debian packages: dcmtk, dicom3tools, openssl, pixelmed-apps, orthanc, "
               "orthanc-dicomweb, systemd, chromium, tesseract-ocr, nodejs, npm)")
    if os.environ.get("CDSS_REQUIRE_TOOLS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def node_config(data_dir: Path, workers: int = 0, **series) -> Config:
    """A config for a node on 127.0.0.1, a free port, short completion times, no disk reserve;
    without an analysis worker unless ``workers=1`` (series then stay queued)."""
    return Config(
        node=NodeSection(host="127.0.0.1", port=free_port(), data_dir=str(data_dir)),
        store=StoreSection(reserve_mb=0),
        series=replace(SeriesSection(grace_s=0.3, quiet_s=30.0, check_interval_s=0.1), **series),
        analysis=AnalysisSection(workers=workers),
        http=HttpSection(port=0),
    )


@pytest.fixture
def pair():
    """Two connected sockets."""
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return node_config(tmp_path / "var")


@pytest.fixture
def node(config: Config):
    from cdss_node.node import Node

    running = Node(config)
    running.start()
    yield running
    running.stop()


class LogRecorder:
    """Stands in for a module's structlog logger (monkeypatch it in): (event, fields) of every
    call, whatever the logging configuration other tests left."""

    def __init__(self, into: list):
        self.into = into

    def __getattr__(self, level: str):
        return lambda event, **fields: self.into.append((event, fields))


@dataclass(frozen=True)
class SeriesOnDisk:
    folder: Path
    files: list[Path]


def write_series(folder: Path, rows: int = 96, slices: int = 12, seed: int = 0,
                 **patient) -> SeriesOnDisk:
    from cdss_node.dicom.ct_series import PatientFacts, write_ct_series
    from cdss_node.synthetic.phantom import PhantomSpec, make_chest_phantom

    spec = PhantomSpec(rows=rows, columns=rows, slices=slices, pixel_spacing_mm=340 / rows * 1.1,
                       slice_spacing_mm=5.0, seed=seed)
    files = write_ct_series(make_chest_phantom(spec), folder, PatientFacts(**patient),
                            uid_seed=f"test-{rows}-{slices}-{seed}")
    return SeriesOnDisk(folder, files)


@pytest.fixture(scope="session")
def small_series(tmp_path_factory) -> SeriesOnDisk:
    """A 96 x 96 x 12 synthetic chest CT (read-only: copy before changing files)."""
    return write_series(tmp_path_factory.mktemp("small_series"))


@pytest.fixture(autouse=True)
def pynetdicom_as_found():
    """A test that installed the node's pynetdicom patches (by starting a receiver, say)
    takes them away again, so that no later test runs its pynetdicom peers on patched code
    because of the order the tests ran in."""
    from cdss_node.dicom import transport

    before = transport.applied()
    yield
    if transport.applied() and not before:
        transport.restore()
