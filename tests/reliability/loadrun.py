"""The load scenario shared by ``test_load.py`` and ``bench/load.py``: many distinct synthetic CT
series, concurrent dcmtk storescu senders started together, a dcmtk storescp as the PACS, the
resident memory of the node's process tree sampled while it runs, and what the PACS received
sorted by SOP Class and referenced series."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from tests.conftest import SeriesOnDisk, write_series

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


@dataclass(frozen=True)
class LoadSeries:
    study_uid: str
    series_uid: str
    instance_uids: frozenset[str]
    folder: Path


def make_series(root: Path, count: int, slices: list[int], rows: int,
                first_seed: int = 1000) -> list[LoadSeries]:
    """``count`` series, each its own Study and Series UID (distinct seeds), ``slices[i %
    len(slices)]`` slices of ``rows`` x ``rows``; written under ``root/sNNN``."""
    made = []
    for i in range(count):
        folder = root / f"s{i:03d}"
        on_disk: SeriesOnDisk = write_series(folder, rows=rows, slices=slices[i % len(slices)],
                                             seed=first_seed + i)
        heads = [pydicom.dcmread(p, stop_before_pixels=True) for p in on_disk.files]
        made.append(LoadSeries(str(heads[0].StudyInstanceUID), str(heads[0].SeriesInstanceUID),
                               frozenset(str(h.SOPInstanceUID) for h in heads), folder))
    assert len({s.series_uid for s in made}) == len({s.study_uid for s in made}) == count
    return made


@dataclass
class Sent:
    """One storescu run: its -v output, exit code, and start and end (time.time clock, as the
    node's index)."""
    returncode: int
    output: str
    started: float
    ended: float

    def responses(self) -> list[str]:
        """The text of each 'Received Store Response (...)' line, e.g. '(Success)'."""
        return [line.split("Received Store Response", 1)[1].strip()
                for line in self.output.splitlines() if "Received Store Response" in line]


def send_concurrently(port: int, groups: list[list[LoadSeries]], aec: str,
                      timeout: float = 600) -> list[Sent]:
    """One ``storescu -v +sd`` per group (its series' folders, one association each), all
    started together (a barrier), TCP_NODELAY=1; waits for all of them."""
    barrier = threading.Barrier(len(groups))
    results: list[Sent | None] = [None] * len(groups)

    def one(i: int, group: list[LoadSeries]) -> None:
        args = ["storescu", "-v", "-aet", f"LOAD{i:02d}", "-aec", aec, "+sd", "127.0.0.1",
                str(port), *(str(s.folder) for s in group)]
        barrier.wait()
        started = time.time()
        done = subprocess.run(args, capture_output=True, text=True, env=DCMTK_ENV,
                              timeout=timeout)
        results[i] = Sent(done.returncode, done.stdout + done.stderr, started, time.time())

    threads = [threading.Thread(target=one, args=(i, g)) for i, g in enumerate(groups)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class RssSampler:
    """Samples VmRSS of ``pid`` and of its descendants every ``interval`` s in a thread; keeps
    the peak of the node process itself, of the analysis process (a spawned child; the largest
    descendant that is not multiprocessing's resource tracker) and of the tree's sum."""
    pid: int
    interval: float = 0.5
    node_peak_kib: int = 0
    analysis_peak_kib: int = 0
    tree_peak_kib: int = 0
    samples: int = 0
    analysis_pids: set[int] = field(default_factory=set)
    history: list[tuple[float, int, int]] = field(default_factory=list)  # (time, node, analysis)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "RssSampler":
        self._thread.start()
        return self

    def stop(self) -> "RssSampler":
        self._stop.set()
        self._thread.join()
        return self

    def sample(self) -> None:
        node = _rss_kib(self.pid)
        tree, analysis, stack = node, 0, children(self.pid)
        while stack:
            child = stack.pop()
            stack.extend(children(child))
            rss = _rss_kib(child)
            tree += rss
            if "resource_tracker" not in _cmdline(child) and rss > analysis:
                analysis = rss
                self.analysis_pids.add(child)
        self.node_peak_kib = max(self.node_peak_kib, node)
        self.analysis_peak_kib = max(self.analysis_peak_kib, analysis)
        self.tree_peak_kib = max(self.tree_peak_kib, tree)
        self.samples += 1
        self.history.append((time.time(), node, analysis))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)


@dataclass
class PacsFile:
    sop_class: str
    series_uid: str  # the series it belongs to (the results' own series)
    referenced_series: frozenset[str]
    arrived: float   # the file's mtime (time.time clock)


def _referenced_series(ds) -> set[str]:
    """Every SeriesInstanceUID inside a sequence of ``ds`` (any depth): the source series a SEG
    or SR refers to."""
    found = set()
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                if "SeriesInstanceUID" in item:
                    found.add(str(item.SeriesInstanceUID))
                found |= _referenced_series(item)
    return found


def pacs_files(folder: Path) -> list[PacsFile]:
    """What storescp wrote into ``folder`` (files still being written are skipped)."""
    found = []
    for path in sorted(folder.iterdir()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            found.append(PacsFile(str(ds.SOPClassUID), str(ds.SeriesInstanceUID),
                                  frozenset(_referenced_series(ds)), path.stat().st_mtime))
        except Exception:  # still being written
            continue
    return found


def start_storescp(port: int, out: Path, aet: str, fork: bool = False) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    args = ["storescp", *(["--fork"] if fork else []), "-aet", aet, "-od", str(out), str(port)]
    return subprocess.Popen(args, env=DCMTK_ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


class LoadNode:
    """A node process (workers = 1, HTTP port on) with dcmtk storescp as its PACS, its memory
    sampled; ``start()`` returns once the analysis process is ready. ``query`` reads the
    node's index; ``stop()`` stops node, sampler and PACS."""

    def __init__(self, work: Path, grace_s: float, check_interval_s: float, outbox: str = ""):
        from tests.conftest import free_port
        from tests.integration.nodeproc import NodeProcess, add_destination, write_config

        self.port, self.http, self.pacs_port = free_port(), free_port(), free_port()
        config = write_config(work / "node.toml", work / "var", self.port, grace_s=grace_s,
                              check_interval_s=check_interval_s, workers=1,
                              http_port=self.http)
        add_destination(config, self.pacs_port, "PACS", outbox=outbox)
        self.pacs_folder, self.log = work / "pacs", work / "node.log"
        self.index = work / "var" / "index.sqlite3"
        self.node = NodeProcess(config, self.port, self.log)
        self.pacs: subprocess.Popen | None = None
        self.sampler: RssSampler | None = None

    def start(self) -> "LoadNode":
        from tests.integration.nodeproc import wait_for_port, wait_until

        self.pacs = start_storescp(self.pacs_port, self.pacs_folder, "PACS")
        self.node.start()
        self.sampler = RssSampler(self.node.proc.pid).start()
        wait_for_port(self.pacs_port)
        wait_until(lambda: "analysis_process_ready" in self.log.read_text(), timeout=300,
                   what="the analysis process ready")
        return self

    def query(self, sql: str, *params) -> list[tuple]:
        with sqlite3.connect(self.index) as db:
            return db.execute(sql, params).fetchall()

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        self.node.stop()
        if self.pacs is not None:
            self.pacs.terminate()
            self.pacs.wait(10)
