"""A legitimate PACS sends a CT while 50 hostile connections press on the node.

    python bench/hostile.py [--rows 512] [--slices 244] [--hostile 50]

The node runs as users run it (``cdss-node serve``, default [node] limits, an analysis
worker, dcmtk storescp as its PACS). Hostile connections, each in a loop that reconnects
whenever the node closes it, in four kinds:

- half PDUs: 3 bytes of a PDU header, or a tenth of an A-ASSOCIATE-RQ, then silence;
- 4 GiB headers: an A-ASSOCIATE-RQ or P-DATA-TF header claiming 4 GiB, then silence;
- slow senders: an association, then a P-DATA-TF one byte every 0.5 s;
- silent sockets: a connection that says nothing.

Meanwhile dcmtk storescu sends the series (+sd), once before the hostile load starts (the
baseline) and once under it, each into its own series. Prints: every image acknowledged?,
the series analysed with SEG and SR at the PACS?, seconds to send with and without the load,
the node process's peak VmRSS (sampled every 0.5 s), and what happened to the hostile
connections. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.ingest import DCMTK_ENV, series_folder  # noqa: E402
from cdss_node.config import SeriesSection  # noqa: E402
from tests.integration.nodeproc import wait_until  # noqa: E402
from tests.integration.rawpeer import associate_rq, p_data  # noqa: E402
from tests.reliability.loadrun import LoadNode  # noqa: E402

KINDS = ("half PDU", "4 GiB header", "slow sender", "silent socket")


class Hostile(threading.Thread):
    """One hostile connection, reopened whenever the node closes it, until ``stop``."""

    def __init__(self, kind: str, port: int, stop: threading.Event, tally: Counter,
                 pause_s: float = 0.0):
        super().__init__(daemon=True)
        self.pause_s = pause_s    # between a connection's end and the next one
        self.kind, self.port, self.stop, self.tally = kind, port, stop, tally
        self.variant = itertools.count()

    def run(self) -> None:
        while not self.stop.wait(self.pause_s):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                    self.tally[f"{self.kind}: opened"] += 1
                    self.press(sock)
                    self.tally[f"{self.kind}: closed by the node"] += 1
            except OSError:
                self.tally[f"{self.kind}: refused or reset"] += 1
                self.stop.wait(0.2)

    def press(self, sock: socket.socket) -> None:
        n = next(self.variant)
        if self.kind == "half PDU":
            sock.sendall(b"\x01\x00\x00" if n % 2 else associate_rq()[:40])
        elif self.kind == "4 GiB header":
            sock.sendall(b"\x01\x00\xff\xff\xff\xf0" if n % 2 else b"\x04\x00\xff\xff\xff\xf0")
        elif self.kind == "slow sender":
            sock.sendall(associate_rq(calling="SLOW"))
            if sock.recv(6)[:1] == b"\x02":        # A-ASSOCIATE-AC (the rest is read later)
                self.tally[f"{self.kind}: associated"] += 1
                self.trickle(sock, p_data(1, 0x00, b"\x00" * 4096))
                return
        self.wait_closed(sock)

    def trickle(self, sock: socket.socket, data: bytes) -> None:
        sock.settimeout(0.5)
        for i in range(len(data)):
            if self.stop.is_set():
                return
            try:
                sock.sendall(data[i:i + 1])
                if not sock.recv(65536) and i > 0:
                    return
            except socket.timeout:
                continue
            except OSError:
                return

    def wait_closed(self, sock: socket.socket) -> None:
        sock.settimeout(0.5)
        while not self.stop.is_set():
            try:
                if not sock.recv(65536):
                    return
            except socket.timeout:
                continue
            except OSError:
                return


def relabelled(folder: Path, work: Path, name: str) -> Path:
    """The series with new study/series/instance UIDs, so a second send is a new series."""
    import pydicom
    from pydicom.uid import generate_uid

    out = work / name
    out.mkdir()
    study, series = generate_uid(), generate_uid()
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(out / path.name)
    return out


def send(port: int, folder: Path) -> tuple[float, int, int]:
    """(seconds, images acknowledged with Success, images sent)."""
    started = time.monotonic()
    result = subprocess.run(["/usr/bin/storescu", "-v", "-aec", "CDSS_EGFR", "+sd",
                             "127.0.0.1", str(port), str(folder)], env=DCMTK_ENV,
                            capture_output=True, text=True)
    out = result.stdout + result.stderr
    return (time.monotonic() - started, out.count("Received Store Response (Success)"),
            out.count("Sending Store Request"))


def analysed(node: LoadNode, series: int) -> bool:
    rows = node.query("SELECT state FROM series")
    return len(rows) >= series and all(r[0] in ("done", "failed", "not_evaluable")
                                       for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--slices", type=int, default=244)
    parser.add_argument("--hostile", type=int, default=50)
    parser.add_argument("--hold-s", type=float, default=20.0,
                        help="seconds of hostile load before the series is sent")
    parser.add_argument("--pause-s", type=float, default=0.0,
                        help="seconds a hostile connection waits before it reconnects "
                             "(0: at once, a flood of new connections)")
    args = parser.parse_args()
    source = series_folder(args.rows, args.slices)
    work = Path(tempfile.mkdtemp(prefix="cdss-hostile-"))
    try:
        run(args, source, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args, source: Path, work: Path) -> None:
    node = LoadNode(work, grace_s=SeriesSection.grace_s, check_interval_s=SeriesSection.check_interval_s).start()
    stop, tally = threading.Event(), Counter()
    try:
        baseline = send(node.port, relabelled(source, work, "baseline"))
        wait_until(lambda: analysed(node, 1), timeout=600, what="the baseline analysed")
        quiet_peak = node.sampler.node_peak_kib
        hostile = [Hostile(KINDS[i % len(KINDS)], node.port, stop, tally, args.pause_s)
                   for i in range(args.hostile)]
        for h in hostile:
            h.start()
        time.sleep(args.hold_s)
        loaded = send(node.port, relabelled(source, work, "loaded"))
        wait_until(lambda: analysed(node, 2), timeout=600, what="the series analysed")
        stop.set()
        for h in hostile:
            h.join(10)
        report(args, node, baseline, loaded, quiet_peak, tally)
    finally:
        stop.set()
        node.stop()


def report(args, node: LoadNode, baseline, loaded, quiet_peak: int, tally: Counter) -> None:
    states = dict(Counter(r[0] for r in node.query("SELECT state FROM series")))
    pacs = sum(1 for _ in node.pacs_folder.iterdir()) if node.pacs_folder.exists() else 0
    outcomes = dict(Counter(r[0] for r in node.query("SELECT outcome FROM associations")))
    print(f"series {args.rows}x{args.rows}x{args.slices}, {args.hostile} hostile connections, "
          f"reconnecting after {args.pause_s} s")
    print(f"{'':<44}{'quiet':>10}{'hostile':>10}")
    print(f"{'images acknowledged / sent':<44}{f'{baseline[1]}/{baseline[2]}':>10}"
          f"{f'{loaded[1]}/{loaded[2]}':>10}")
    print(f"{'seconds to send':<44}{baseline[0]:>10.2f}{loaded[0]:>10.2f}")
    print(f"{'series states':<44}{str(states):>20}")
    print(f"{'objects at the PACS (SEG + SR per series)':<44}{pacs:>10}")
    print(f"{'peak VmRSS node process, MiB':<44}{quiet_peak / 1024:>10.0f}"
          f"{node.sampler.node_peak_kib / 1024:>10.0f}")
    print(f"{'peak VmRSS analysis process, MiB':<44}{node.sampler.analysis_peak_kib / 1024:>20.0f}")
    print(f"association outcomes recorded: {outcomes}")
    for kind in KINDS:
        print(f"  {kind:<16}" + ", ".join(f"{k.split(': ')[1]} {v}" for k, v in sorted(
            tally.items()) if k.startswith(kind)))


if __name__ == "__main__":
    main()
