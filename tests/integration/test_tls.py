"""TLS for real, both ways: dcmtk storescu +tls against the node, client certificates required;
the node sending its results to dcmtk storescp +tls, which requires the node's certificate."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from pynetdicom.sop_class import Comprehensive3DSRStorage, SegmentationStorage

from cdss_node.config import Destination, SecuritySection
from cdss_node.dicom.sender import deliver_due, echo
from cdss_node.node import Node
from cdss_node.store import outbox
from cdss_node.store.index import Index
from cdss_node.store.outbox import RetryPolicy
from tests.conftest import free_port, node_config, require_tool
from tests.integration.dcmtk import store_responses, storescu
from tests.integration.nodeproc import wait_for_port
from tests.integration.test_sender_statuses import dicom_file
from tests.unit.test_outbox import finished_with_deliveries

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


# ---------------------------------------------------------------- the node as a TLS client

@pytest.fixture
def tls_pacs(tmp_path):
    """dcmtk storescp as a PACS that speaks only TLS and requires a client certificate its
    CA signed (dcmtk's default, --require-peer-cert)."""
    pki = make_pki(tmp_path / "pki")
    port, received = free_port(), tmp_path / "pacs"
    received.mkdir()
    pacs = subprocess.Popen(
        [require_tool("storescp"), "-aet", "PACS", "-od", str(received),
         "+tls", str(pki / "server.key"), str(pki / "server.crt"), "+cf", str(pki / "ca.crt"),
         str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    yield port, pki, received
    pacs.terminate()
    pacs.wait(10)


def destination(port: int, pki: Path, **tls) -> Destination:
    settings = {"tls": True, "tls_ca": str(pki / "ca.crt"), "tls_cert": str(pki / "client.crt"),
                "tls_key": str(pki / "client.key"), **tls}
    return Destination("pacs", "PACS", "127.0.0.1", port, **settings)


def results_waiting(tmp_path: Path) -> Index:
    """An index with one finished series whose SEG and SR wait in the outbox for "pacs"."""
    index = Index(tmp_path / "index.sqlite3")
    finished_with_deliveries(index, [dicom_file(tmp_path, "seg.dcm", SegmentationStorage),
                                     dicom_file(tmp_path, "sr.dcm", Comprehensive3DSRStorage)])
    return index


def test_results_go_to_a_tls_pacs_that_requires_the_node_s_certificate(tmp_path, tls_pacs):
    port, pki, received = tls_pacs
    index = results_waiting(tmp_path)
    assert echo(destination(port, pki), "CDSS_EGFR")
    assert deliver_due(index, (destination(port, pki),), RetryPolicy(), "CDSS_EGFR") == 2
    assert outbox.counts(index) == {"sent": 2}
    assert len(list(received.iterdir())) == 2


@pytest.mark.parametrize("wrong", [
    {"tls_ca": "rogue.crt"},                      # the PACS's certificate is not trusted
    {"tls_cert": "", "tls_key": ""},              # the node presents no certificate
    {"tls_cert": "rogue.crt", "tls_key": "rogue.key"},   # one the PACS's CA did not sign
    {"tls": False, "tls_ca": "", "tls_cert": "", "tls_key": ""},   # plain TCP to a TLS port
])
def test_a_tls_destination_that_cannot_be_trusted_gets_nothing_and_results_wait(
        tmp_path, tls_pacs, wrong):
    port, pki, received = tls_pacs
    wrong = {k: str(pki / v) if v and k != "tls" else v for k, v in wrong.items()}
    bad = destination(port, pki, **wrong)
    index = results_waiting(tmp_path)
    assert not echo(bad, "CDSS_EGFR", timeout_s=10)
    assert deliver_due(index, (bad,), RetryPolicy(), "CDSS_EGFR") == 0
    assert outbox.counts(index) == {"pending": 2}
    errors = {row[0] for row in index.query("SELECT last_error FROM outbox")}
    over_tls = " over TLS" if bad.tls else ""
    assert errors == {f"{outbox.NO_ASSOCIATION} PACS@127.0.0.1:{port}{over_tls}"}
    assert list(received.iterdir()) == []


def test_silent_connections_to_the_tls_port_do_not_hold_the_door(tls_node, small_series):
    """pynetdicom does the TLS handshake in the thread that accepts connections: one client
    that connects and says nothing held every other peer out. Ten such clients stay open
    while storescu with a valid certificate stores."""
    import socket

    node, pki = tls_node
    silent = [socket.create_connection(("127.0.0.1", node.config.node.port))
              for _ in range(10)]
    try:
        result = storescu(node.config.node.port, small_series.files[0], timeout=60,
                          extra=tls_options(pki, "client"))
        assert store_responses(result) == ["(Success)"], result.stdout + result.stderr
    finally:
        for sock in silent:
            sock.close()
