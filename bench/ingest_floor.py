"""How fast can Python receive a CT series at all? A floor for the node's ingest.

    python bench/ingest_floor.py [--repeats 5]

A single-threaded C-STORE SCP in plain Python sockets (``FloorScp``, about 100 lines): it
accepts every proposed presentation context with its first transfer syntax, reads each PDU
whole, writes each dataset behind the node's file meta header to a file of its own (temporary
name, then a rename, as the node's spool does) and answers a Success. It checks nothing, bounds
nothing and indexes nothing: it is not a product path. dcmtk's storescu sends the same series to
it, to dcmtk storescp and to the node, interleaved (TCP_NODELAY=1 for dcmtk). The ratio of the
floor to storescp bounds what a receive path in Python without pynetdicom's threads could
reach; the node's ratio is what it reaches. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.ingest import run_node, run_storescp, send, series_folder  # noqa: E402
from cdss_node.dicom.dimse_fast import (  # noqa: E402
    AFFECTED_SOP_CLASS, AFFECTED_SOP_INSTANCE, MESSAGE_ID, command_elements, encode_success)
from cdss_node.dicom.file_meta import file_meta  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.integration.nodeproc import wait_for_port  # noqa: E402

APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
MAX_PDU = 1 << 20


class FloorScp:
    """Serves associations one after another in one thread, until stopped."""

    def __init__(self, port: int, out: Path):
        self.out = out
        self.server = socket.create_server(("127.0.0.1", port))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.count = 0

    def start(self) -> "FloorScp":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._association(conn)

    def _association(self, conn: socket.socket) -> None:
        syntaxes: dict[int, str] = {}
        command, dataset = bytearray(), bytearray()
        while True:
            kind, body = _read_pdu(conn)
            if kind == 0x01:
                syntaxes = _accept(conn, body)
            elif kind == 0x04:
                for context, control, value in _pdvs(body):
                    (command if control & 1 else dataset).extend(value)
                    if control & 2 and not control & 1:          # last dataset fragment
                        self._store(conn, context, syntaxes[context], bytes(command), dataset)
                        command, dataset = bytearray(), bytearray()
            elif kind == 0x05:
                conn.sendall(b"\x06\x00" + struct.pack(">I", 4) + b"\x00" * 4)
                return
            else:
                return

    def _store(self, conn, context: int, syntax: str, command: bytes, dataset) -> None:
        elements = command_elements(command)
        sop_class = elements[AFFECTED_SOP_CLASS].rstrip(b"\x00").decode()
        sop_instance = elements[AFFECTED_SOP_INSTANCE].rstrip(b"\x00").decode()
        message_id = struct.unpack("<H", elements[MESSAGE_ID])[0]
        self.count += 1
        partial = self.out / f".{self.count}.part"
        with open(partial, "wb") as f:
            f.write(file_meta(sop_class, sop_instance, syntax, "STORESCU"))
            f.write(dataset)
        os.replace(partial, self.out / f"{sop_instance}.dcm")
        response = encode_success(sop_class, sop_instance, message_id)
        pdv = struct.pack(">IBB", len(response) + 2, context, 0x03) + response
        conn.sendall(b"\x04\x00" + struct.pack(">I", len(pdv)) + pdv)


def _read_pdu(conn: socket.socket) -> tuple[int, bytes]:
    header = _read_exactly(conn, 6)
    if not header:
        return 0, b""
    return header[0], _read_exactly(conn, struct.unpack(">I", header[2:6])[0])


def _read_exactly(conn: socket.socket, n: int) -> bytes:
    buffer = bytearray(n)
    view, got = memoryview(buffer), 0
    while got < n:
        read = conn.recv_into(view[got:])
        if not read:
            return b""
        got += read
    return bytes(buffer)


def _pdvs(body: bytes):
    offset = 0
    while offset < len(body):
        length = struct.unpack_from(">I", body, offset)[0]
        yield body[offset + 4], body[offset + 5], memoryview(body)[offset + 6:offset + 4 + length]
        offset += 4 + length


def _items(data: bytes, offset: int):
    while offset < len(data):
        kind, length = data[offset], struct.unpack_from(">H", data, offset + 2)[0]
        yield kind, data[offset + 4:offset + 4 + length]
        offset += 4 + length


def _accept(conn: socket.socket, rq: bytes) -> dict[int, str]:
    """A-ASSOCIATE-AC: every presentation context accepted with its first transfer syntax."""
    items, syntaxes = [_item(0x10, APPLICATION_CONTEXT)], {}
    for kind, value in _items(rq, 68):
        if kind != 0x20:
            continue
        context = value[0]
        first = next(v for k, v in _items(value, 4) if k == 0x40)
        syntaxes[context] = first.rstrip(b"\x00").decode()
        items.append(_item(0x21, bytes([context, 0, 0, 0]) + _item(0x40, first)))
    items.append(_item(0x50, _item(0x51, struct.pack(">I", MAX_PDU))))
    body = b"\x00\x01\x00\x00" + rq[4:36] + b"\x00" * 32 + b"".join(items)
    conn.sendall(b"\x02\x00" + struct.pack(">I", len(body)) + body)
    return syntaxes


def _item(kind: int, value: bytes) -> bytes:
    return bytes([kind, 0]) + struct.pack(">H", len(value)) + value


def run_floor(folder: Path, work: Path) -> float:
    port, out = free_port(), work / "floor"
    out.mkdir()
    scp = FloorScp(port, out).start()
    try:
        wait_for_port(port)
        return send(port, folder, "FLOOR")
    finally:
        scp.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    folder = series_folder(512, 244)
    n = len(list(folder.glob("*.dcm")))
    rates: dict[str, list[float]] = {"storescp": [], "python floor": [], "node": []}
    for _ in range(args.repeats):
        for name in rates:
            with tempfile.TemporaryDirectory(dir=REPO / "bench" / "out") as tmp:
                work = Path(tmp)
                seconds = (run_storescp(folder, work) if name == "storescp" else
                           run_floor(folder, work) if name == "python floor" else
                           run_node(folder, work, fsync=False)[0])
                rates[name].append(n / seconds)
    print(f"\ningest of {n} CT images 512x512, {args.repeats} interleaved runs")
    for name, values in rates.items():
        ratio = statistics.median(v / p for v, p in zip(values, rates["storescp"]))
        print(f"{name:<14}{statistics.median(values):>8.0f} images/s  ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
