"""What the tests of a radiologist's mark share: the decoy CT, a node in this process, sending
with dcmtk's storescu, the result folders and the marks on the true tumor."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from cdss_node.config import RetrieveSection
from cdss_node.node import Node
from tests.conftest import node_config
from tests.integration.dcmtk import store_responses, storescu
from tests.marks import ohif_mark_sr

OBSERVER = "Doe^Jane"


def start_node(tmp_path: Path, **retrieve) -> Node:
    config = node_config(tmp_path / "var", workers=1)
    config = replace(config, retrieve=RetrieveSection(**retrieve) if retrieve else
                     RetrieveSection())
    node = Node(config)
    node.start()
    return node


def send(node: Node, *paths: Path) -> None:
    sent = storescu(node.config.node.port, *paths, extra=("-R",))  # only the contexts needed
    assert store_responses(sent) == ["(Success)"] * len(paths), sent.stdout + sent.stderr


def wait_for(check, timeout: float = 180.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def generation_done(node: Node, series_uid: str, generation: int) -> bool:
    rows = node.index.query("SELECT state FROM jobs WHERE series_uid=? AND generation=?",
                            (series_uid, generation))
    return bool(rows) and rows[-1]["state"] in ("done", "not_evaluable", "failed")


def result_folder(node: Node, series_uid: str, generation: int) -> Path:
    return node.config.data_path.resolve() / "results" / series_uid / f"g{generation}"


def mask_of(folder: Path) -> np.ndarray:
    """The result's mask on the phantom's grid: the CT volume's slices run up the slice
    normal, the phantom's (and its files') down."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "tumor_mask.nii.gz")))[::-1] > 0


def mark_on_tumor(files, phantom, tmp_path: Path, tool: str = "Length",
                  observer: str | None = OBSERVER) -> Path:
    """A length line across the true tumor on its centre slice, as OHIF writes it."""
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    z, y, x = phantom.tumor_centre_voxel
    # write_ct_series writes slice k of the phantom as file k; (column, row) of pixel centres
    points = [(x - 6 + 0.5, y + 0.5), (x + 6 + 0.5, y + 0.5)]
    if tool == "EllipticalROI":        # bottom, top, left, right
        points = [(x + 0.5, y + 6.5), (x + 0.5, y - 5.5), (x - 5.5, y + 0.5), (x + 6.5, y + 0.5)]
    sr = ohif_mark_sr(headers, headers[z], tool, points, observer=observer)
    path = tmp_path / f"mark-{tool}.dcm"
    sr.save_as(path, enforce_file_format=True)
    return path


def reason_code(sr_path: Path) -> str:
    """The coded reason of a not-evaluable SR (Findings: "Analysis result")."""
    stack = list(pydicom.dcmread(sr_path).ContentSequence)
    while stack:
        item = stack.pop()
        if item.get("ValueType") == "CODE" and \
                item.ConceptNameCodeSequence[0].CodeValue == "ANALYSIS":
            return str(item.ConceptCodeSequence[0].CodeValue)
        stack.extend(item.get("ContentSequence", []))
    raise AssertionError(f"{sr_path} has no coded reason")
