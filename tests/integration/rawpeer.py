"""A scripted DICOM peer on a raw socket: it sends exactly the bytes a test asks for (PS3.8
PDUs built here by hand, not by pynetdicom), well-formed or not, and reads what comes back."""

from __future__ import annotations

import socket
import struct
import time

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"


def pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, len(body)) + body


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def _uid(uid: str) -> bytes:
    return uid.encode("ascii")


def associate_rq(called: str = "CDSS_EGFR", calling: str = "RAWPEER",
                 abstract_syntaxes: tuple[str, ...] = (CT_IMAGE_STORAGE, VERIFICATION),
                 max_pdu: int = 16384) -> bytes:
    """An A-ASSOCIATE-RQ (PS3.8 9.3.2) proposing each abstract syntax in Implicit VR LE,
    presentation context IDs 1, 3, 5, ..."""
    contexts = b"".join(
        _item(0x20, bytes([2 * i + 1, 0, 0, 0]) + _item(0x30, _uid(syntax))
              + _item(0x40, _uid(IMPLICIT_VR_LE)))
        for i, syntax in enumerate(abstract_syntaxes))
    user = _item(0x50, _item(0x51, struct.pack(">L", max_pdu)))
    body = (struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode()
            + bytes(32) + _item(0x10, _uid(APPLICATION_CONTEXT)) + contexts + user)
    return pdu(0x01, body)


def p_data(context_id: int, control: int, payload: bytes) -> bytes:
    """A P-DATA-TF with one PDV (PS3.8 9.3.5, E.2): control 1/3 command, 0/2 dataset."""
    item = struct.pack(">LBB", len(payload) + 2, context_id, control) + payload
    return pdu(0x04, item)


def command(elements: list[tuple[int, bytes]]) -> bytes:
    """A group 0000 command set, Implicit VR Little Endian, group length first."""
    body = b"".join(struct.pack("<HHI", 0, e, len(v)) + v for e, v in elements)
    return struct.pack("<HHI", 0, 0, 4) + struct.pack("<I", len(body)) + body


def _padded(uid: str) -> bytes:
    raw = uid.encode()
    return raw + b"\0" if len(raw) % 2 else raw


def store_command(sop_class: str, sop_instance: str, message_id: int = 1) -> bytes:
    return command([(0x0002, _padded(sop_class)), (0x0100, b"\x01\x00"),
                    (0x0110, struct.pack("<H", message_id)), (0x0700, b"\x00\x00"),
                    (0x0800, b"\x00\x00"), (0x1000, _padded(sop_instance))])


RELEASE_RQ = pdu(0x05, bytes(4))
ABORT = pdu(0x07, bytes(4))


class RawPeer:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes) -> "RawPeer":
        self.sock.sendall(data)
        return self

    def read_pdu(self) -> tuple[int, bytes] | None:
        """(type, body) of the next PDU; None if the node closed the connection."""
        header = self._read(6)
        if header is None:
            return None
        pdu_type, _, length = struct.unpack(">BBL", header)
        body = self._read(length) if length else b""
        return (pdu_type, body) if body is not None else None

    def associate(self, **kw) -> int:
        """Send an A-ASSOCIATE-RQ; the type of the answer (0x02 accepted, 0x03 rejected)."""
        self.send(associate_rq(**kw))
        answer = self.read_pdu()
        return answer[0] if answer else 0

    def closed_within(self, seconds: float) -> float | None:
        """Seconds until the node closed the connection (reading and dropping anything it
        sends meanwhile), or None if it was still open after ``seconds``."""
        started = time.monotonic()
        self.sock.settimeout(0.2)
        while time.monotonic() - started < seconds:
            try:
                if not self.sock.recv(65536):
                    return time.monotonic() - started
            except socket.timeout:
                continue
            except OSError:           # reset by the node
                return time.monotonic() - started
        return None

    def close(self) -> None:
        self.sock.close()

    def _read(self, n: int) -> bytes | None:
        data = bytearray()
        while len(data) < n:
            try:
                chunk = self.sock.recv(n - len(data))
            except (ConnectionResetError, socket.timeout):
                return None
            if not chunk:
                return None
            data += chunk
        return bytes(data)
