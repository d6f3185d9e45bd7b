"""The PACS is down for minutes and the node restarts meanwhile: do SEG and SR arrive, once?

    python bench/outage.py [--down-minutes 10]

Orthanc (Debian package) is the PACS: the sample CT series is stored in it and its Lua
``OnStableSeries`` routes the series to the node, as in the round-trip test. Orthanc is then
stopped, so the node's first sends of SEG and SR fail. Halfway through the outage the node is
stopped and started again. When the outage ends Orthanc is started again (same storage) and the
script waits for the study to hold a SEG and an SR, then counts them through Orthanc's REST API.
The node runs with its default outbox settings (backoff 10 s doubling to 600 s, C-ECHO probe
every 30 s). Not a test: it prints what happened, with times.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pydicom  # noqa: E402

from tests.conftest import free_port  # noqa: E402
from tests.integration.dcmtk import store_responses, storescu  # noqa: E402
from tests.integration.nodeproc import (  # noqa: E402
    NodeProcess, add_destination, wait_until, write_config)
from tests.integration.orthanc import Orthanc  # noqa: E402

SAMPLE = REPO / "sample_dicom" / "series"
T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f} s] {text}", flush=True)


def instances_by_modality(pacs: Orthanc, study_uid: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for series in pacs.series_of(study_uid):
        modality = series["MainDicomTags"].get("Modality", "?")
        found[modality] = found.get(modality, 0) + len(series["Instances"])
    return found


def run(work: Path, down_s: float) -> int:
    port = free_port()
    pacs = Orthanc(work / "orthanc", node_port=port).start()
    config = write_config(work / "node.toml", work / "var", port, workers=1)
    add_destination(config, pacs.dicom_port, pacs.aet)  # default [outbox] settings
    node = NodeProcess(config, port, work / "node1.log").start()
    study = pydicom.dcmread(next(SAMPLE.glob("*.dcm")), stop_before_pixels=True).StudyInstanceUID
    assert store_responses(storescu(pacs.dicom_port, SAMPLE, aec=pacs.aet)) == ["(Success)"] * 80
    say("CT stored in Orthanc; waiting for Orthanc to route it to the node")
    wait_until(lambda: [s for s in node.status()["series"] if s["state"] != "receiving"],
             120, "the node receiving the whole series")
    pacs.stop()
    down_at = time.monotonic()
    say(f"Orthanc stopped: the PACS is down for {down_s / 60:g} minutes")
    wait_until(lambda: node.status()["outbox"].get("pending") == 2, 300, "2 pending results")
    say(f"analysis done, SEG and SR pending: {node.status()['outbox']}")
    wait_until(lambda: time.monotonic() - down_at >= down_s / 2, down_s, "half the outage")
    node.stop()
    say("node stopped (halfway)")
    node = NodeProcess(config, port, work / "node2.log").start()
    say(f"node started again; outbox {node.status()['outbox']}")
    wait_until(lambda: time.monotonic() - down_at >= down_s, down_s, "the end of the outage")
    pacs.start()
    back_at = time.monotonic()
    say("Orthanc started again")
    try:
        wait_until(lambda: {"SEG", "SR"} <= set(instances_by_modality(pacs, study)), 900,
                 "SEG and SR in the study")
        say(f"SEG and SR in Orthanc {time.monotonic() - back_at:.1f} s after it came back")
        time.sleep(35)  # a duplicate send would come within a probe interval
        found, outbox = instances_by_modality(pacs, study), node.status()["outbox"]
    finally:
        node.stop()
        pacs.stop()
    logs = "".join((work / f"node{k}.log").read_text() for k in (1, 2))
    say(f"study in Orthanc: {found}; node outbox: {outbox}; failed sends logged: "
        f"{logs.count('result_not_sent')}; probes answered: {logs.count('destination_answers')}")
    once = found == {"CT": 80, "SEG": 1, "SR": 1} and outbox == {"sent": 2}
    say("SEG and SR arrived exactly once" if once else "NOT exactly once")
    return 0 if once else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--down-minutes", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            sys.exit(run(Path(tmp), args.down_minutes * 60))
        except TimeoutError as late:
            sys.exit(f"outage: {late}")


if __name__ == "__main__":
    main()
