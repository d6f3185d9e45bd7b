"""The node's Query/Retrieve SCU against Orthanc as the hospital's PACS: C-FIND of a study's CT
series, C-MOVE of the series to a Storage SCP, C-GET of it on the node's own association, and
what a refused or failed retrieve gives back (an outcome, not an exception)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pydicom
import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

from cdss_node.config import Destination
from cdss_node.dicom import retrieve, sop, transport
from cdss_node.dicom.retrieve import RetrieveFailed, find_series, get_series, move_series
from tests.conftest import REPO, LogRecorder, free_port
from tests.integration.orthanc import Orthanc

pytestmark = pytest.mark.integration
SAMPLE = sorted((REPO / "sample_dicom" / "series").glob("*.dcm"))
NODE_AET = "CDSS_EGFR"          # the node: the calling AE and the C-MOVE destination


def _headers():
    return [pydicom.dcmread(path, stop_before_pixels=True) for path in SAMPLE]


@pytest.fixture(scope="module")
def sample():
    headers = _headers()
    assert len({h.SeriesInstanceUID for h in headers}) == 1
    return {"study": headers[0].StudyInstanceUID, "series": headers[0].SeriesInstanceUID,
            "sops": {h.SOPInstanceUID for h in headers}}


class StorageScp:
    """A pynetdicom Storage SCP standing in for the node's receiver: the C-MOVE destination."""

    def __init__(self, port: int):
        self.received: list[str] = []
        ae = AE(ae_title=NODE_AET)
        for sop_class in sop.STORAGE_SOP_CLASSES:
            ae.add_supported_context(sop_class, sop.TRANSFER_SYNTAXES)
        self.server = ae.start_server(("127.0.0.1", port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event) -> int:
        self.received.append(event.request.AffectedSOPInstanceUID)
        return 0x0000


@pytest.fixture(scope="module")
def scp():
    scp = StorageScp(free_port())
    yield scp
    scp.server.shutdown()


@pytest.fixture(scope="module")
def pacs(tmp_path_factory, scp):
    """Orthanc holding the sample series; it knows the node (calling AE and move
    destination, at the Storage SCP's port) as a modality, as a hospital's PACS would."""
    port = scp.server.server_address[1]
    orthanc = Orthanc(tmp_path_factory.mktemp("orthanc"), extra={
        "DicomModalities": {"cdss": {"AET": NODE_AET, "Host": "127.0.0.1", "Port": port}},
        "LuaScripts": []}).start()
    try:
        for path in SAMPLE:
            orthanc.post("/instances", path.read_bytes())
        yield orthanc
    finally:
        orthanc.stop()


@pytest.fixture
def source(pacs) -> Destination:
    assert transport.apply()   # the node runs with its pynetdicom patches; retrieve must too
    return Destination(name="pacs", ae_title=pacs.aet, host="127.0.0.1", port=pacs.dicom_port)


@pytest.fixture
def logged(monkeypatch) -> list:
    lines: list = []
    monkeypatch.setattr(retrieve, "log", LogRecorder(lines))
    return lines


def test_find_series_by_modality(source, sample):
    assert find_series(source, NODE_AET, sample["study"]) == [sample["series"]]
    assert find_series(source, NODE_AET, sample["study"], modality="MR") == []
    assert find_series(source, NODE_AET, "1.2.3.4.5.6.7.8.9") == []


def test_find_series_without_a_pacs_raises_one_line(sample):
    transport.apply()
    port = free_port()
    nobody = Destination(name="pacs", ae_title="PACS", host="127.0.0.1", port=port)
    with pytest.raises(RetrieveFailed) as raised:
        find_series(nobody, NODE_AET, sample["study"], timeout_s=5)
    message = str(raised.value)
    assert f"no association with PACS@127.0.0.1:{port}" in message and "\n" not in message


def test_move_series_to_the_node(source, sample, scp, logged):
    scp.received.clear()
    outcome = move_series(source, NODE_AET, sample["study"], sample["series"], NODE_AET)
    assert outcome == retrieve.RetrieveOutcome("move", 0x0000, 80, 0, 0)
    assert outcome.ok
    assert sorted(scp.received) == sorted(sample["sops"])
    assert logged == [("series_retrieved", {
        "method": "move", "study_uid": sample["study"], "series_uid": sample["series"],
        "completed": 80, "failed": 0, "warning": 0, "status": "0x0000"})]


def test_get_series_writes_the_originals(source, sample, tmp_path, logged):
    prepared, syntaxes = [], set()

    def on_store(event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        syntaxes.add(event.context.transfer_syntax)
        ds.save_as(tmp_path / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
        return 0x0000

    outcome = get_series(source, NODE_AET, sample["study"], sample["series"], on_store,
                         prepare=lambda assoc: prepared.append((assoc, assoc.is_established)))
    assert outcome == retrieve.RetrieveOutcome("get", 0x0000, 80, 0, 0) and outcome.ok
    assert [up for _, up in prepared] == [True]            # called once, on the association
    assert not prepared[0][0].is_established               # released since
    assert syntaxes == {pydicom.uid.ExplicitVRLittleEndian}         # as the files are held
    for original in SAMPLE:
        want = pydicom.dcmread(original)
        got = pydicom.dcmread(tmp_path / f"{want.SOPInstanceUID}.dcm")
        assert got.SeriesInstanceUID == sample["series"]
        assert np.array_equal(got.pixel_array, want.pixel_array)
    assert len(list(tmp_path.glob("*.dcm"))) == 80
    assert [event for event, _ in logged] == ["series_retrieved"]


def test_series_the_pacs_does_not_hold(source, sample, scp, logged):
    scp.received.clear()
    unknown = "1.2.826.0.1.3680043.8.498.1"
    moved = move_series(source, NODE_AET, sample["study"], unknown, NODE_AET)
    got = get_series(source, NODE_AET, sample["study"], unknown, lambda event: 0x0000)
    for outcome in (moved, got):      # Orthanc 1.10.1: 0xC000 (Failure) for both
        assert outcome.status is not None and not outcome.ok and outcome.completed == 0
        assert outcome.error and "\n" not in outcome.error
    assert scp.received == []
    assert [(event, f["method"]) for event, f in logged] == [
        ("series_retrieve_failed", "move"), ("series_retrieve_failed", "get")]


def test_move_to_an_ae_the_pacs_does_not_know(source, sample):
    outcome = move_series(source, NODE_AET, sample["study"], sample["series"], "NOBODY")
    assert not outcome.ok and outcome.completed == 0
    # PS3.4 has 0xA801 (Move Destination unknown) for this; Orthanc 1.10.1 answers 0xC000
    assert outcome.status in (0xA801, 0xC000) and "C-MOVE failed: 0x" in outcome.error


def test_get_with_every_store_refused(source, sample):
    outcome = get_series(source, NODE_AET, sample["study"], sample["series"],
                         lambda event: 0xA700)
    assert not outcome.ok and outcome.error
    assert (outcome.completed, outcome.failed) == (0, 80)
    # Orthanc 1.10.1 ends with 0xA702 (Refused: out of resources, unable to perform
    # sub-operations); PS3.4 would also allow 0xB000 (complete, one or more failures)
    assert outcome.status in (0xA702, 0xB000)


def test_no_association_is_an_outcome(sample):
    transport.apply()
    nobody = Destination(name="pacs", ae_title="PACS", host="127.0.0.1", port=free_port())
    outcome = move_series(nobody, NODE_AET, sample["study"], sample["series"], NODE_AET)
    assert outcome.status is None and not outcome.ok and "no association" in outcome.error


def test_a_pacs_that_stops_answering_is_aborted(sample):
    """A Q/R SCP whose C-GET never answers: the wait ends after timeout_s, the association
    is aborted, and the outcome says no final response came."""
    transport.apply()
    answered = threading.Event()

    def silent_get(event):
        answered.wait(10)
        yield 0

    ae = AE(ae_title="SILENT")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_C_GET, silent_get)])
    silent = Destination(name="pacs", ae_title="SILENT", host="127.0.0.1", port=port)
    try:
        started = time.monotonic()
        outcome = get_series(silent, NODE_AET, sample["study"], sample["series"],
                             lambda event: 0x0000, timeout_s=1)
        took = time.monotonic() - started
    finally:
        answered.set()
        server.shutdown()
    assert outcome.status is None and not outcome.ok and "no final response" in outcome.error
    assert took < 5


def test_a_calling_ae_the_pacs_does_not_know(source, sample):
    """Orthanc accepts the association of an AE missing from its DicomModalities, then ends
    it at the first C-FIND, C-MOVE or C-GET: no final response, told at once."""
    with pytest.raises(RetrieveFailed, match="ended the association .*STRANGER"):
        find_series(source, "STRANGER", sample["study"])
    moved = move_series(source, "STRANGER", sample["study"], sample["series"], NODE_AET)
    got = get_series(source, "STRANGER", sample["study"], sample["series"], lambda e: 0x0000)
    for outcome in (moved, got):
        assert outcome.status is None and not outcome.ok
        assert "ended the association" in outcome.error


def test_find_and_get_over_tls(tmp_path, sample):
    """Orthanc speaking only DICOM TLS and requiring a client certificate its CA signed:
    the node's Destination TLS settings (``sender.client_tls``) carry the query and the C-GET;
    plain TCP gets no association."""
    from tests.integration.test_tls import make_pki

    pki = make_pki(tmp_path / "pki")
    pacs = Orthanc(tmp_path / "orthanc", extra={
        "DicomModalities": {"cdss": {"AET": NODE_AET, "Host": "127.0.0.1", "Port": free_port()}},
        "DicomTlsEnabled": True, "DicomTlsRemoteCertificateRequired": True,
        "DicomTlsCertificate": str(pki / "server.crt"),
        "DicomTlsPrivateKey": str(pki / "server.key"),
        "DicomTlsTrustedCertificates": str(pki / "ca.crt")}).start()
    try:
        for path in SAMPLE[:3]:
            pacs.post("/instances", path.read_bytes())
        transport.apply()
        secure = Destination("pacs", pacs.aet, "127.0.0.1", pacs.dicom_port, tls=True,
                             tls_ca=str(pki / "ca.crt"), tls_cert=str(pki / "client.crt"),
                             tls_key=str(pki / "client.key"))
        found = find_series(secure, NODE_AET, sample["study"])
        got = get_series(secure, NODE_AET, sample["study"], sample["series"],
                         lambda event: 0x0000)
        plain = move_series(replace(secure, tls=False), NODE_AET, sample["study"],
                            sample["series"], NODE_AET, timeout_s=5)
    finally:
        pacs.stop()
    assert found == [sample["series"]]
    assert got == retrieve.RetrieveOutcome("get", 0x0000, 3, 0, 0)
    assert plain.status is None and "no association" in plain.error
