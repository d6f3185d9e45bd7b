"""TLS for real: dcmtk storescu +tls against the node, client certificates required."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from cdss_node.config import SecuritySection
from cdss_node.node import Node
from tests.conftest import node_config, require_tool
from tests.integration.dcmtk import store_responses, storescu

pytestmark = pytest.mark.integration


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run([require_tool("openssl"), *args], cwd=cwd, check=True, capture_output=True)


def make_pki(folder: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1, a client it signed, and a rogue client."""
    folder.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
            "-keyout", "ca.key", "-out", "ca.crt", cwd=folder)
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=folder)
        (folder / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                "-out", f"{name}.crt", cwd=folder)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=rogue",
            "-keyout", "rogue.key", "-out", "rogue.crt", cwd=folder)
    return folder


@pytest.fixture
def tls_node(tmp_path):
    pki = make_pki(tmp_path / "pki")
    config = replace(node_config(tmp_path / "var"), security=SecuritySection(
        tls_cert=str(pki / "server.crt"), tls_key=str(pki / "server.key"),
        tls_ca=str(pki / "ca.crt"), allowed_calling_aets=["STORESCU"]))
    node = Node(config)
    node.start()
    yield node, pki
    node.stop()


def tls_options(pki: Path, client: str) -> tuple[str, ...]:
    return ("+tls", str(pki / f"{client}.key"), str(pki / f"{client}.crt"),
            "+cf", str(pki / "ca.crt"))


def test_storescu_with_a_client_certificate_stores(tls_node, small_series):
    node, pki = tls_node
    result = storescu(node.config.node.port, small_series.files[0],
                      extra=tls_options(pki, "client"))
    assert store_responses(result) == ["(Success)"], result.stdout + result.stderr


def test_client_without_valid_certificate_or_without_tls_is_refused(tls_node, small_series):
    node, pki = tls_node
    port, one = node.config.node.port, small_series.files[0]
    rogue = storescu(port, one, extra=tls_options(pki, "rogue"))
    assert rogue.returncode != 0 and store_responses(rogue) == []
    plain = storescu(port, one, timeout=60)
    assert plain.returncode != 0 and store_responses(plain) == []
    assert node.index.query("SELECT COUNT(*) FROM instances")[0][0] == 0


def test_a_valid_certificate_with_an_unknown_calling_ae_is_rejected(tls_node, small_series):
    node, pki = tls_node
    result = storescu(node.config.node.port, small_series.files[0], aet="STRANGER",
                      extra=tls_options(pki, "client"))
    assert result.returncode != 0 and store_responses(result) == []
    assert "Association Rejected" in result.stdout + result.stderr
    refusals = node.telemetry.recent_refusals()
    assert [(r.what, r.calling_aet) for r in refusals] == [("association", "STRANGER")]
