"""The receiver over real sockets, with dcmtk's storescu and echoscu as the PACS."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, generate_uid

from cdss_node.config import SecuritySection, StoreSection
from cdss_node.node import Node
from cdss_node.store.status import series_status
from tests.conftest import LogRecorder, node_config, require_tool
from tests.integration.dcmtk import echoscu, store_responses, storescu

pytestmark = pytest.mark.integration


def instances(node: Node) -> int:
    return node.index.query("SELECT COUNT(*) FROM instances")[0][0]


def only_series(node: Node):
    [status] = series_status(node.index)
    return status


def stored_dataset(node: Node, sop_uid: str) -> pydicom.Dataset:
    [row] = node.index.query("SELECT path FROM instances WHERE sop_instance_uid=?", (sop_uid,))
    return pydicom.dcmread(node.spool.root / row[0])


def test_echo(node):
    result = echoscu(node.config.node.port)
    assert result.returncode == 0, result.stderr
    assert "Received Echo Response (Success)" in result.stdout + result.stderr


def test_whole_series_is_stored_as_sent_and_completed(node, small_series):
    result = storescu(node.config.node.port, small_series.folder)
    assert store_responses(result) == ["(Success)"] * len(small_series.files), result.stderr
    assert node.wait_until_settled(10)
    status = only_series(node)
    assert (status.state, status.instances) == ("queued", len(small_series.files))
    for path in small_series.files:
        sent = pydicom.dcmread(path)
        assert stored_dataset(node, sent.SOPInstanceUID) == sent  # every element, pixels too


@pytest.mark.parametrize("tool, options, propose, syntax", [
    ("dcmcjpeg", ["+e1"], "-xs", "1.2.840.10008.1.2.4.70"),   # JPEG lossless SV1
    ("dcmcjpls", ["+el"], "-xt", "1.2.840.10008.1.2.4.80"),   # JPEG-LS lossless
    ("dcmcrle", [], "-xr", "1.2.840.10008.1.2.5"),            # RLE lossless
    (None, [], "-xv", JPEG2000Lossless),                      # JPEG 2000 lossless (openjpeg)
])
def test_compressed_syntaxes_are_stored_as_received_and_decodable(
        node, small_series, tmp_path, tool, options, propose, syntax):
    source = small_series.files[len(small_series.files) // 2]
    compressed = tmp_path / "compressed.dcm"
    if tool:
        subprocess.run([require_tool(tool), *options, str(source), str(compressed)], check=True)
    else:
        ds = pydicom.dcmread(source)
        ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
        ds.save_as(compressed, enforce_file_format=True)
    result = storescu(node.config.node.port, compressed, extra=(propose,))
    assert store_responses(result) == ["(Success)"], result.stdout + result.stderr
    original = pydicom.dcmread(source)
    stored = stored_dataset(node, original.SOPInstanceUID)
    assert stored.file_meta.TransferSyntaxUID == syntax
    assert stored.PixelData == pydicom.dcmread(compressed).PixelData  # bytes as received
    np.testing.assert_array_equal(stored.pixel_array, original.pixel_array)


def test_unknown_calling_ae_is_rejected(tmp_path, small_series):
    config = node_config(tmp_path / "var")
    config = replace(config, security=SecuritySection(
        allowed_calling_aets=["PACS", "ORTHANC@127.0.0.1", "OTHER@10.9.9.9"]))
    node = Node(config)
    node.start()
    try:
        port, one = config.node.port, small_series.files[0]
        refused = storescu(port, one, aet="INTRUDER")
        assert refused.returncode != 0
        assert "Association Rejected" in refused.stdout + refused.stderr
        assert store_responses(storescu(port, one, aet="OTHER")) == []  # wrong host
        assert instances(node) == 0
        assert store_responses(storescu(port, one, aet="PACS")) == ["(Success)"]
        assert store_responses(storescu(port, one, aet="ORTHANC")) == ["(Success)"]
    finally:
        node.stop()


def test_non_ct_sop_class_is_refused_at_negotiation(node, small_series, tmp_path):
    ds = pydicom.dcmread(small_series.files[0])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR
    ds.Modality = "MR"
    ds.save_as(tmp_path / "mr.dcm")
    result = storescu(node.config.node.port, tmp_path / "mr.dcm")
    assert store_responses(result) == []
    assert "no presentation context" in (result.stdout + result.stderr).lower()
    assert instances(node) == 0


def test_truncated_file_gets_cannot_understand(node, small_series, tmp_path):
    """storescu itself refuses to read a truncated file, so a raw sender plays the broken PACS."""
    from cdss_node.dicom.sender import store_files

    data = small_series.files[0].read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(data[: len(data) - 5000])
    dcmtk = storescu(node.config.node.port, truncated)
    assert "(Success)" not in store_responses(dcmtk)
    [result] = store_files([truncated], "CDSS_EGFR", "127.0.0.1", node.config.node.port)
    assert result.status == 0xC000
    assert instances(node) == 0


def test_uid_that_tries_to_escape_the_spool_is_refused(node, small_series, tmp_path):
    ds = pydicom.dcmread(small_series.files[0])
    ds.SeriesInstanceUID = "../../../../escape"
    ds.save_as(tmp_path / "attack.dcm")
    result = storescu(node.config.node.port, tmp_path / "attack.dcm")
    assert store_responses(result) == ["(Error: DataSetDoesNotMatchSOPClass)"]  # 0xA900
    data_dir = Path(node.config.node.data_dir).resolve()
    assert not list(data_dir.parent.rglob("escape*"))
    assert instances(node) == 0


def test_harmless_duplicate_is_success_and_changes_nothing(node, small_series):
    port = node.config.node.port
    storescu(port, small_series.folder)
    assert node.wait_until_settled(10)
    before = only_series(node)
    again = storescu(port, small_series.files[0], aet="ANOTHER_AE")  # other file meta
    assert store_responses(again) == ["(Success)"]
    assert node.wait_until_settled(10)
    after = only_series(node)
    assert (after.state, after.instances, after.generation) == ("queued", before.instances, 1)


def test_changed_instance_after_completion_reopens_the_series(node, small_series, tmp_path):
    port = node.config.node.port
    storescu(port, small_series.folder)
    assert node.wait_until_settled(10)
    ds = pydicom.dcmread(small_series.files[0])
    ds.SeriesDescription = "CORRECTED"
    ds.save_as(tmp_path / "corrected.dcm")
    assert store_responses(storescu(port, tmp_path / "corrected.dcm")) == ["(Success)"]
    assert node.wait_until_settled(10)
    status = only_series(node)
    assert (status.state, status.generation) == ("queued", 2)
    assert stored_dataset(node, ds.SOPInstanceUID).SeriesDescription == "CORRECTED"


def test_disk_below_reserve_gets_out_of_resources(tmp_path, small_series):
    config = replace(node_config(tmp_path / "var"), store=StoreSection(reserve_mb=10**9))
    node = Node(config)
    node.start()
    try:
        result = storescu(config.node.port, small_series.files[0])
        assert store_responses(result) == ["(Refused: OutOfResources)"]  # 0xA700
        assert instances(node) == 0
    finally:
        node.stop()


@pytest.mark.parametrize("sop_class", [
    "1.2.840.10008.5.1.4.1.1.2.1",    # Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.2",    # Legacy Converted Enhanced CT Image Storage
])
def test_multiframe_ct_sop_classes_are_accepted(node, small_series, tmp_path, sop_class):
    slices = [pydicom.dcmread(p) for p in small_series.files[:4]]
    ds = slices[0]
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.NumberOfFrames = len(slices)
    ds.PixelData = b"".join(s.PixelData for s in slices)
    ds.save_as(tmp_path / "multiframe.dcm")
    result = storescu(node.config.node.port, tmp_path / "multiframe.dcm", extra=("-R",))
    assert store_responses(result) == ["(Success)"], result.stdout + result.stderr
    assert stored_dataset(node, ds.SOPInstanceUID).pixel_array.shape[0] == len(slices)


def test_an_instance_sent_again_under_another_series_leaves_no_orphan_file(
        node, small_series, tmp_path):
    """The same SOP Instance UID under a new Series Instance UID (a PACS that split a series):
    the index row moves, the file moves with it, and nothing stays behind in the old folder."""
    port = node.config.node.port
    first = small_series.files[0]
    assert store_responses(storescu(port, first)) == ["(Success)"]
    ds = pydicom.dcmread(first)
    old_folder = node.spool.root / ds.StudyInstanceUID / ds.SeriesInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.save_as(tmp_path / "moved.dcm")
    assert store_responses(storescu(port, tmp_path / "moved.dcm")) == ["(Success)"]
    assert stored_dataset(node, ds.SOPInstanceUID).SeriesInstanceUID == ds.SeriesInstanceUID
    assert not old_folder.exists()
    spooled = [p for p in node.spool.root.rglob("*.dcm") if node.spool.tmp not in p.parents]
    assert [p.name for p in spooled] == [f"{ds.SOPInstanceUID}.dcm"]


def _open_association(node: Node, files: list[Path]):
    from pynetdicom import AE

    datasets = [pydicom.dcmread(f) for f in files]
    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context(datasets[0].SOPClassUID, datasets[0].file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", node.config.node.port, ae_title="CDSS_EGFR")
    assert assoc.is_established
    return assoc, datasets


def test_an_open_association_holds_its_series_and_its_rows_reach_the_index(node,
                                                                          small_series):
    """After a series' first row, an association's rows are written in batches; the first
    ties the series to the open association (it does not complete after the grace), and
    the completion check writes the others before it looks."""
    import time

    assoc, datasets = _open_association(node, small_series.files[:3])
    try:
        assert [assoc.send_c_store(ds).Status for ds in datasets] == [0, 0, 0]
        time.sleep(4 * node.config.series.grace_s)
        assert only_series(node).state == "receiving"
        assert instances(node) == 3
    finally:
        assoc.release()
    assert node.wait_until_settled(10)
    assert (only_series(node).state, instances(node)) == ("queued", 3)


def test_a_series_complete_by_quiet_s_has_every_row(tmp_path, small_series):
    """A peer that keeps its association open: the series completes after quiet_s with
    every instance received, not only the rows written so far."""
    import time

    node = Node(node_config(tmp_path / "var", quiet_s=1.0))
    node.start()
    try:
        assoc, datasets = _open_association(node, small_series.files[:5])
        try:
            assert [assoc.send_c_store(ds).Status for ds in datasets] == [0] * 5
            deadline = time.monotonic() + 10
            while only_series(node).state == "receiving" and time.monotonic() < deadline:
                time.sleep(0.1)
            assert (only_series(node).state, only_series(node).instances) == ("queued", 5)
        finally:
            assoc.release()
    finally:
        node.stop()


def test_a_batch_the_index_refused_is_written_with_the_next(node, small_series, monkeypatch):
    import sqlite3

    from cdss_node.dicom import receiver

    monkeypatch.setattr(receiver, "INDEX_BATCH", 1)
    plain, failed = node.index.record_instances, []

    def refuse_once(batch):
        if len(batch) == 1 and not batch[0][1] and not failed:
            failed.append(batch[0][0].sop_instance_uid)
            raise sqlite3.OperationalError("database is locked")
        return plain(batch)

    monkeypatch.setattr(node.index, "record_instances", refuse_once)
    logs = []
    monkeypatch.setattr(receiver, "log", LogRecorder(logs))
    assoc, datasets = _open_association(node, small_series.files[:3])
    try:
        assert [assoc.send_c_store(ds).Status for ds in datasets] == [0, 0, 0]
        assert failed == [datasets[1].SOPInstanceUID]
        assert instances(node) == 3                 # the refused row came with the third
    finally:
        assoc.release()
    assert [kw["pending"] for event, kw in logs if event == "index_write_failed"] == [1]
    assert node.wait_until_settled(10)
    assert (only_series(node).state, instances(node)) == ("queued", 3)


def test_an_association_whose_rows_the_index_refused_stays_open_until_they_are_written(
        node, small_series, monkeypatch):
    """Its series cannot complete without those rows: the end is recorded when the
    completion check has written them."""
    import sqlite3
    import time

    plain, refusing = node.index.record_instances, [True]

    def refuse_batches(batch):
        if refusing[0] and not any(link for _, link in batch):
            raise sqlite3.OperationalError("database is locked")
        return plain(batch)

    monkeypatch.setattr(node.index, "record_instances", refuse_batches)
    assoc, datasets = _open_association(node, small_series.files[:4])
    assert [assoc.send_c_store(ds).Status for ds in datasets] == [0] * 4
    assoc.release()
    time.sleep(4 * node.config.series.grace_s)
    assert instances(node) == 1 and only_series(node).state == "receiving"
    [(released,)] = node.index.query("SELECT released_at FROM associations")
    assert released is None
    refusing[0] = False
    assert node.wait_until_settled(10)
    assert (only_series(node).state, instances(node)) == ("queued", 4)
    [(outcome,)] = node.index.query("SELECT outcome FROM associations")
    assert outcome == "released"
