"""C-STORE SCU: send DICOM files to a peer and report every returned status.

Files are sent as they are on disk (pynetdicom reads the encoded dataset, no re-encoding).
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE, _config
from pynetdicom.sop_class import Verification

from cdss_node.config import Destination
from cdss_node.dicom import transport
from cdss_node.logs import get_logger
from cdss_node.store import outbox
from cdss_node.store.index import Index

log = get_logger(__name__)

# Send a file's encoded dataset straight from disk, in chunks: no decoding, no re-encoding.
_config.STORE_SEND_CHUNKED_DATASET = True


@dataclass(frozen=True)
class StoreResult:
    path: Path
    status: int | None  # None: never answered (association lost, no context)

    @property
    def ok(self) -> bool:
        """Stored: Success, or one of the warnings that say the object was stored (PS3.4
        B.2.3: coercion of data elements, data set does not match SOP class, elements
        discarded); sending it again would change nothing."""
        return self.status in STORED


STORED = frozenset({0x0000, 0xB000, 0xB007, 0xB006})


class AssociationFailed(RuntimeError):
    pass


TLSArgs = tuple[ssl.SSLContext, str]     # pynetdicom's tls_args: context, server host name


def client_tls(destination: Destination) -> TLSArgs | None:
    """The TLS a destination asks for: its certificate checked against ``tls_ca`` (or the
    system's CAs) and its host name; the node's own certificate presented if configured. Read
    from the files at each round, so a renewed certificate is taken without a restart."""
    if not destination.tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=destination.tls_ca or None)
    if destination.tls_cert:
        context.load_cert_chain(destination.tls_cert, destination.tls_key)
    return context, destination.host


def dicom_files(folder: Path) -> list[Path]:
    """Every file under ``folder`` with a DICOM preamble, sorted by name."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and _has_preamble(p))


def _has_preamble(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(128)
        return fh.read(4) == b"DICM"


def store_files(paths: list[Path], ae_title: str, host: str, port: int,
                calling_aet: str = "CDSS_SCU", tls: TLSArgs | None = None) -> list[StoreResult]:
    """One association for all ``paths`` (over TLS with ``tls``, see ``client_tls``); raises
    AssociationFailed if none can be made."""
    ae = AE(ae_title=calling_aet)
    transport.never_serves(ae)
    for sop_class, syntax in sorted(_contexts(paths)):
        ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate(host, port, ae_title=ae_title, tls_args=tls)
    if not assoc.is_established:
        over = " over TLS" if tls else ""
        raise AssociationFailed(f"{outbox.NO_ASSOCIATION} {ae_title}@{host}:{port}{over}")
    try:
        return [_send_one(assoc, path) for path in paths]
    finally:
        if assoc.is_established:
            assoc.release()


def _contexts(paths: list[Path]) -> set[tuple[str, str]]:
    contexts = set()
    for path in paths:
        meta = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"]).file_meta
        contexts.add((meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID))
    return contexts


def _send_one(assoc, path: Path) -> StoreResult:
    if not assoc.is_established:
        return StoreResult(path, None)
    try:
        status = assoc.send_c_store(path)
    except ValueError as error:     # the peer accepted no presentation context for it
        log.warning("store_not_accepted", file=path.name, error=str(error))
        return StoreResult(path, None)
    code = int(status.Status) if "Status" in status else None
    if code != 0x0000:
        log.warning("store_not_successful", file=path.name,
                    status=None if code is None else hex(code),
                    comment=str(status.get("ErrorComment", "")))
    return StoreResult(path, code)


def deliver_due(index: Index, destinations: tuple[Destination, ...], policy: outbox.RetryPolicy,
                calling_aet: str) -> int:
    """Send every due outbox row, one association per destination; returns how many were
    sent. Every returned status is checked; a failure backs off or, in the end, goes dead."""
    by_name = {d.name: d for d in destinations}
    sent = 0
    rows = sorted(outbox.due(index), key=lambda r: (r.destination, r.id))
    for name, group in groupby(rows, key=lambda r: r.destination):
        group = list(group)
        if name not in by_name:
            _failed(index, group, f"destination {name!r} is no longer configured", policy)
            continue
        sent += _deliver(index, by_name[name], group, policy, calling_aet)
    return sent


def _deliver(index: Index, destination: Destination, rows: list[outbox.Delivery],
             policy: outbox.RetryPolicy, calling_aet: str) -> int:
    present = [r for r in rows if Path(r.path).is_file()]
    _failed(index, [r for r in rows if r not in present], "result file is gone", policy)
    if not present:
        return 0
    try:
        results = store_files([Path(r.path) for r in present], destination.ae_title,
                              destination.host, destination.port, calling_aet,
                              client_tls(destination))
    except (AssociationFailed, OSError, RuntimeError, ValueError) as error:
        _failed(index, present, str(error), policy)
        return 0
    for row, result in zip(present, results):
        if result.ok:
            outbox.mark_sent(index, row.id)
        else:
            status = "no answer" if result.status is None else f"status {hex(result.status)}"
            _failed(index, [row], f"C-STORE {status}", policy)
    log.info("results_sent", destination=destination.name,
             sent=sum(r.ok for r in results), failed=sum(not r.ok for r in results))
    return sum(r.ok for r in results)


def echo(destination: Destination, calling_aet: str, timeout_s: float = 10.0) -> bool:
    """True when the destination accepts an association and answers a C-ECHO with Success."""
    ae = AE(ae_title=calling_aet)
    transport.never_serves(ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.add_requested_context(Verification)
    try:
        tls = client_tls(destination)
    except (OSError, ValueError) as error:      # ssl.SSLError is an OSError
        log.warning("destination_tls_unusable", destination=destination.name, error=str(error))
        return False
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title,
                         tls_args=tls)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return status is not None and status.get("Status") == 0x0000
    finally:
        if assoc.is_established:
            assoc.release()


@dataclass
class DestinationProbe:
    """C-ECHO, at most every ``interval_s``, each destination whose results wait because it
    could not be reached; one that answers gets its results at once, not after the backoff."""

    interval_s: float
    _last: dict[str, float] = field(default_factory=dict)

    def run(self, index: Index, destinations: tuple[Destination, ...], calling_aet: str,
            now: float | None = None) -> list[str]:
        """Probe those that are due for it; returns the names of the ones that answered."""
        now = time.monotonic() if now is None else now
        by_name = {d.name: d for d in destinations}
        back = []
        for name in outbox.unreachable_destinations(index):
            if name not in by_name or now - self._last.get(name, -1e18) < self.interval_s:
                continue
            self._last[name] = now
            if echo(by_name[name], calling_aet):
                log.info("destination_answers", destination=name,
                         results_due_now=outbox.make_due(index, name))
                back.append(name)
        return back


def _failed(index: Index, rows: list[outbox.Delivery], error: str,
            policy: outbox.RetryPolicy) -> None:
    for row in rows:
        state = outbox.mark_failed(index, row, error, policy)
        log.warning("result_not_sent", destination=row.destination, file=Path(row.path).name,
                    error=error, attempts=row.attempts + 1, now=state)
