"""The radiologist's viewer opens the node's results: OHIF Viewer 3 (the built viewer of the npm
package @ohif/app, pinned in tests/viewer/setup.sh) in headless Chromium, driven by puppeteer-core
(tests/viewer/ohif_check.mjs), reads the study from Orthanc's DICOMweb plugin through the small
server the compose file's viewer runs (deploy/ohif/serve.py, with deploy/ohif/app-config.js).
The sample CT and the node's SEG, SR and result image go into Orthanc; OHIF must render the CT,
hydrate the SEG (its segment listed, its red drawn), open the SR with the EGFR result in view,
and open a not-evaluable SR with its reason, all without an error.

Screenshots go to var/screenshots/ (ohif-study.png, ohif-seg.png, ohif-sr.png,
ohif-not-evaluable-sr.png). Tools: node, npm, chromium, Orthanc and its DICOMweb plugin (Debian:
nodejs npm chromium orthanc orthanc-dicomweb); `make viewer` (or this test) fetches the rest from
the npm registry once."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from tests.conftest import REPO, free_port, require_tool
from tests.integration.orthanc import Orthanc

pytestmark = pytest.mark.integration


def _serve_module():
    """deploy/ohif/serve.py, the viewer's server as the compose file runs it."""
    spec = importlib.util.spec_from_file_location("ohif_serve",
                                                  REPO / "deploy" / "ohif" / "serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


VIEWER = REPO / "tests" / "viewer"
SAMPLE = REPO / "sample_dicom" / "series"
SCREENSHOTS = REPO / "var" / "screenshots"
DICOMWEB_PLUGIN_GLOBS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so*",
                         "/usr/lib/orthanc/libOrthancDicomWeb.so*")
DICOMWEB = {"DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True,
                         "WadoRoot": "/wado", "Ssl": False}}
# The SR's EGFR result: OHIF labels the key-slice outline with the planar group's NUMs, the first
# 'AI: EGFR wild type, probability of mutation: 7.48 %'; the series descriptions 'CDSS EGFR: ...'
# do not count.
SERIES_DESCRIPTION = re.compile(r"CDSS EGFR:")


def _missing(message: str):
    """Skip, or fail when CDSS_REQUIRE_TOOLS=1 (CI), as require_tool does."""
    if os.environ.get("CDSS_REQUIRE_TOOLS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _dicomweb_plugin() -> Path:
    for pattern in DICOMWEB_PLUGIN_GLOBS:
        found = sorted(Path("/").glob(pattern.lstrip("/")))
        if found:
            return found[0]
    _missing("Orthanc's DICOMweb plugin is not installed (Debian package: orthanc-dicomweb)")


def _ohif_dist() -> Path:
    version = re.search(r"^OHIF_VERSION=(\S+)", (VIEWER / "setup.sh").read_text(), re.M)[1]
    return VIEWER / ".ohif" / version / "dist"


@pytest.fixture(scope="module")
def tools() -> dict:
    """The external tools, and OHIF and puppeteer-core set up (cached in tests/viewer)."""
    found = {name: require_tool(name) for name in ("node", "npm", "chromium", "Orthanc")}
    found["dicomweb"] = _dicomweb_plugin()
    setup = subprocess.run(["bash", str(VIEWER / "setup.sh")], capture_output=True, text=True,
                           timeout=900)
    if setup.returncode != 0:
        _missing(f"tests/viewer/setup.sh failed (npm registry unreachable?):\n"
                 f"{setup.stdout[-2000:]}\n{setup.stderr[-2000:]}")
    found["dist"] = _ohif_dist()
    return found


@pytest.fixture(scope="module")
def results(tools, tmp_path_factory) -> dict[str, Path]:
    """The node's results for the sample CT ("ok") and for the same CT with one slice taken out
    ("not_evaluable", a gap), with the CT folder each was made from."""
    root = tmp_path_factory.mktemp("ohif")
    gap = root / "gap"
    shutil.copytree(SAMPLE, gap)
    (gap / "CT000040.dcm").unlink()
    runs = {name: subprocess.Popen(
                [sys.executable, "-m", "cdss_node", "analyze", str(ct), "--out", str(root / name)],
                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for name, ct in (("ok", SAMPLE), ("not_evaluable", gap))}
    for name, run in runs.items():
        output, _ = run.communicate(timeout=600)
        assert run.returncode == 0, f"cdss_node analyze ({name}) failed:\n{output}"
    assert (root / "ok" / "seg.dcm").exists() and (root / "ok" / "sr.dcm").exists()
    assert (root / "not_evaluable" / "sr.dcm").exists()
    assert not (root / "not_evaluable" / "seg.dcm").exists()
    return {"ok": root / "ok", "ok_ct": SAMPLE,
            "not_evaluable": root / "not_evaluable", "not_evaluable_ct": gap}


@pytest.fixture(scope="module")
def viewer(tools, tmp_path_factory):
    """Orthanc with DICOMweb, and OHIF served in front of it."""
    pacs = Orthanc(tmp_path_factory.mktemp("orthanc"), plugins=[tools["dicomweb"]],
                   extra=DICOMWEB).start()
    server = _serve_module().OhifServer(tools["dist"], f"http://127.0.0.1:{pacs.http_port}",
                                        free_port()).start()
    try:
        yield pacs, server
    finally:
        server.stop()
        pacs.stop()


def _load_study(pacs: Orthanc, *folders: Path) -> str:
    """Orthanc emptied, then every DICOM file of the folders stored; the Study Instance UID."""
    for study in pacs.get("/studies"):
        pacs.delete(f"/studies/{study}")
    for folder in folders:
        for file in sorted(folder.glob("*.dcm")):
            pacs.post("/instances", file.read_bytes())
    studies = pacs.get("/studies?expand")
    assert len(studies) == 1, studies
    return studies[0]["MainDicomTags"]["StudyInstanceUID"]


def _open_in_ohif(tools: dict, server, study: str, mode: str, out: Path) -> dict:
    args = {"url": server.url, "study": study, "mode": mode, "shots": str(SCREENSHOTS),
            "out": str(out), "chromium": tools["chromium"]}
    run = subprocess.run([tools["node"], "ohif_check.mjs", json.dumps(args)], cwd=VIEWER,
                         capture_output=True, text=True, timeout=300)
    if not out.exists():
        pytest.fail(f"ohif_check.mjs wrote no result (exit {run.returncode}):\n"
                    f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return json.loads(out.read_text())


def _report(seen: dict, server) -> str:
    """What OHIF did, for a failure message: steps, errors, console, failed requests."""
    lines = [f"OHIF ({seen['mode']}, {seen.get('seconds')} s):"]
    for step in seen["steps"]:
        lines.append(f"  step {step['name']}: {'ok' if step['ok'] else 'FAILED'} "
                     f"({step['ms']} ms) {step.get('error') or step.get('detail') or ''}")
    for dialog in seen["errorDialogs"]:
        lines.append(f"  error dialog {dialog['when']}: {dialog['text']}\n{dialog['details']}")
    lines += [f"  page error: {e}" for e in seen["pageErrors"]]
    lines += [f"  HTTP {e}" for e in seen["httpErrors"]]
    lines += [f"  request failed: {e}" for e in seen["failedRequests"]]
    lines += [f"  proxy: {r}" for r in server.requests if not r.startswith("2")]
    lines.append(f"  SR viewport text: {seen['srText']!r}")
    lines.append(f"  measurement panel: {seen['srMeasurementPanel']!r}")
    lines.append(f"  screenshots: {', '.join(seen['screenshots'].values())}")
    lines.append("  console:")
    lines += [f"    {line[:3000]}" for line in seen["console"][-150:]
              if "ProtocolEngine::matchImages" not in line]
    return "\n".join(lines)


def _orthanc_errors(pacs: Orthanc) -> list[str]:
    """Orthanc's complaints about OHIF's queries (e.g. a comma-separated includefield)."""
    log = (pacs.folder / "orthanc.log").read_text(errors="replace")
    return [f"Orthanc: {line}" for line in log.splitlines() if "Unknown DICOM tag" in line]


def _no_errors(seen: dict) -> list[str]:
    problems = [f"step failed: {s['name']}" for s in seen["steps"] if not s["ok"]]
    problems += [f"error dialog {d['when']}: {d['text']}" for d in seen["errorDialogs"]]
    problems += [f"page error: {e.splitlines()[0]}" for e in seen["pageErrors"]]
    problems += [f"HTTP {e}" for e in seen["httpErrors"]]
    problems += [f"console error: {line.splitlines()[0]}" for line in seen["console"]
                 if re.match(r"[\d.]+ error:", line) or "Error Boundary" in line]
    if any("ReferencedSOPSequence" in line for line in seen["console"]):
        problems.append("OHIF's SR loader failed on ReferencedSOPSequence "
                        "(_checkIfCanAddMeasurementsToDisplaySet)")
    return problems


def tumor_instances(results: dict) -> set[int]:
    """Instance Numbers of the CT slices the SEG has a frame of (only the tumor's frames are
    in it): the slices OHIF must draw the segment on."""
    seg = pydicom.dcmread(results["ok"] / "seg.dcm")
    uids = {frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            for frame in seg.PerFrameFunctionalGroupsSequence}
    numbers = {str(ds.SOPInstanceUID): int(ds.InstanceNumber)
               for ds in (pydicom.dcmread(p, stop_before_pixels=True)
                          for p in sorted(results["ok_ct"].glob("*.dcm")))}
    assert len(uids) < len(numbers)         # a sparse SEG: the check below means something
    return {numbers[uid] for uid in uids}


def seg_problems(seen: dict, results: dict) -> list[str]:
    """The SEG's segment listed and drawn, on a slice of the tumor."""
    problems = []
    if "Primary lung tumor (AI)" not in seen["segmentLabels"]:
        problems.append(f"segment not listed: {seen['segmentLabels']}")
    if seen["segRedPixels"] < 20:
        problems.append(f"SEG overlay not drawn: {seen['segRedPixels']} red pixels in the viewport")
    shown_instance = re.search(r"I:\s*(\d+)", seen["segImage"])
    if not shown_instance or int(shown_instance[1]) not in tumor_instances(results):
        problems.append(f"the SEG is drawn on {seen['segImage']!r}, not on a slice of the tumor "
                        f"(instances {sorted(tumor_instances(results))})")
    return problems


def test_ohif_shows_the_ct_the_seg_and_the_sr_with_the_egfr_result(tools, results, viewer,
                                                                   tmp_path):
    pacs, server = viewer
    study = _load_study(pacs, results["ok_ct"], results["ok"])
    seen = _open_in_ohif(tools, server, study, "ok", tmp_path / "ok.json")

    problems = _no_errors(seen) + _orthanc_errors(pacs)
    if seen["ctRedPixels"] != 0:
        problems.append(f"the CT alone has {seen['ctRedPixels']} red pixels (the SEG check "
                        "cannot tell the overlay from it)")
    problems += seg_problems(seen, results)
    if not seen["srViewportShown"]:
        problems.append("the SR did not open in a viewport")
    shown = SERIES_DESCRIPTION.sub("", seen["srText"] + "\n" + seen["srMeasurementPanel"])
    if not re.search(r"AI: EGFR (mutant|wild type), probability of mutation: [\d.]+ %", shown):
        problems.append("no EGFR result in the SR's viewport nor in the measurement panel")
    assert not problems, "\n".join(problems) + "\n\n" + _report(seen, server)


def test_ohif_opens_the_not_evaluable_sr(tools, results, viewer, tmp_path):
    pacs, server = viewer
    study = _load_study(pacs, results["not_evaluable_ct"], results["not_evaluable"])
    seen = _open_in_ohif(tools, server, study, "not-evaluable", tmp_path / "ne.json")

    problems = _no_errors(seen) + _orthanc_errors(pacs)
    if not seen["srViewportShown"]:
        problems.append("the SR did not open in a viewport")
    if "Not evaluable: Slices are missing" not in seen["srText"]:
        problems.append("the reason is not shown in the SR's viewport")
    assert not problems, "\n".join(problems) + "\n\n" + _report(seen, server)


@pytest.fixture(scope="module")
def marked(tools, tmp_path_factory) -> dict[str, Path]:
    """The answer to a radiologist's mark: the decoy case (tests/decoy.py: the first answer
    takes the larger decoy), an OHIF-style Length mark on the true tumor (tests/marks.py), and
    the analysis with that mark, as the node's analysis process makes it."""
    from cdss_node.analysis import Analyzer
    from cdss_node.dicom.ct_series import write_ct_series
    from cdss_node.dicom.sr import Version
    from cdss_node.jobs import AnalysisSettings
    from tests.decoy import phantom_with_decoy
    from tests.integration.marking import mark_on_tumor

    root = tmp_path_factory.mktemp("marked")
    phantom, _ = phantom_with_decoy()
    files = write_ct_series(phantom, root / "ct", uid_seed="ohif-marked")
    (root / "mark").mkdir()
    mark = mark_on_tumor(files, phantom, root / "mark")
    outcome = Analyzer(AnalysisSettings()).analyze_requested(
        files, root / "answer", Version(), str(mark))
    assert outcome.status == "ok", outcome.summary()
    return {"ok": root / "answer", "ok_ct": root / "ct", "mark": root / "mark"}


def test_ohif_shows_the_answer_to_a_radiologists_mark(tools, marked, viewer, tmp_path):
    """The loop in the viewer: the study holds the CT, the radiologist's mark (an OHIF Length
    SR) and the node's new SEG and SR; OHIF draws the new SEG on the marked tumor's slices and
    opens the new SR with its EGFR result. Screenshots: var/screenshots/ohif-marked-*.png."""
    pacs, server = viewer
    study = _load_study(pacs, marked["ok_ct"], marked["mark"], marked["ok"])
    seen = _open_in_ohif(tools, server, study, "marked", tmp_path / "marked.json")

    problems = _no_errors(seen) + _orthanc_errors(pacs)
    problems += seg_problems(seen, marked)
    shown = SERIES_DESCRIPTION.sub("", seen["srText"] + "\n" + seen["srMeasurementPanel"])
    if not re.search(r"AI, marked tumor: EGFR (mutant|wild type), probability of mutation: "
                     r"[\d.]+ %", shown):
        problems.append("no EGFR result for the marked tumor in the SR's viewport nor in the "
                        "measurement panel")
    assert not problems, "\n".join(problems) + "\n\n" + _report(seen, server)
    assert sorted(seen["screenshots"]) == sorted(
        f"ohif-marked-{name}.png" for name in ("study", "seg", "sr", "sr-panel"))
