"""Running dcmtk's command-line peers from tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import require_tool


def storescu(port: int, *paths: Path, aec: str = "CDSS_EGFR", aet: str = "STORESCU",
             extra: tuple[str, ...] = (), timeout: float = 300) -> subprocess.CompletedProcess:
    """Send files or folders (scanned with +sd) to the node on 127.0.0.1; -v output captured."""
    exe = require_tool("storescu")
    args = [exe, "-v", "-aet", aet, "-aec", aec, *extra]
    if any(Path(p).is_dir() for p in paths):
        args.append("+sd")
    args += ["127.0.0.1", str(port), *map(str, paths)]
    env = {**os.environ, "TCP_NODELAY": "1"}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def store_responses(result: subprocess.CompletedProcess) -> list[str]:
    """The text of each 'Received Store Response (...)' line storescu printed."""
    out = result.stdout + result.stderr
    return [line.split("Received Store Response", 1)[1].strip()
            for line in out.splitlines() if "Received Store Response" in line]


def echoscu(port: int, aec: str = "CDSS_EGFR", aet: str = "ECHOSCU"
            ) -> subprocess.CompletedProcess:
    exe = require_tool("echoscu")
    return subprocess.run([exe, "-v", "-aet", aet, "-aec", aec, "127.0.0.1", str(port)],
                          capture_output=True, text=True, timeout=60)
