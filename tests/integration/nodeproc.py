"""The node as users run it: ``cdss-node serve`` in its own process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def write_config(path: Path, data_dir: Path, port: int, grace_s: float = 0.3,
                 fsync: bool = False, check_interval_s: float = 0.1, **extra: str) -> Path:
    lines = ["[node]", f'data_dir = "{data_dir}"', f"port = {port}", 'host = "127.0.0.1"',
             "[store]", "reserve_mb = 0", f"fsync = {'true' if fsync else 'false'}",
             "[series]", f"grace_s = {grace_s}", f"check_interval_s = {check_interval_s}",
             "[logging]", f'level = "{extra.get("level", "info")}"', 'format = "json"',
             "[http]", f"port = {extra.get('http_port', 0)}",
             "[analysis]", f"workers = {extra.get('workers', '0')}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def add_destination(config: Path, port: int, ae_title: str, outbox: str = "") -> None:
    """Append an [outbox] section (its lines in ``outbox``) and one destination "pacs"."""
    with open(config, "a") as f:
        f.write(f"[outbox]\n{outbox}\n[[destinations]]\nname = \"pacs\"\n"
                f'ae_title = "{ae_title}"\nhost = "127.0.0.1"\nport = {port}\n')


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def wait_until(check, timeout: float = 240, what: str = "", interval: float = 0.5):
    """``check()``'s first truthy answer, asked every ``interval`` s; TimeoutError naming
    ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(interval)
    raise TimeoutError(f"not within {timeout:.0f} s: {what}")


def parse_metrics(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a /metrics answer by (name, sorted labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def read_metrics(http_port: int) -> dict[tuple[str, tuple], float]:
    """The node's /metrics, parsed."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=30) as answer:
        return parse_metrics(answer.read().decode())


class NodeProcess:
    """``python -m cdss_node --config FILE serve``, its log in a file."""

    def __init__(self, config_file: Path, port: int, log_file: Path):
        self.config_file, self.port, self.log_file = config_file, port, log_file
        self.proc: subprocess.Popen | None = None

    def start(self) -> "NodeProcess":
        log = open(self.log_file, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cdss_node", "--config", str(self.config_file), "serve"],
            stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_for_port(self.port)
        return self

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(30)
        return self.proc.returncode if self.proc else 0

    def status(self) -> dict:
        """``cdss-node status --json``."""
        return json.loads(self.cli("status", "--json").stdout)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "cdss_node", "--config", str(self.config_file), *args],
            capture_output=True, text=True, timeout=60)
