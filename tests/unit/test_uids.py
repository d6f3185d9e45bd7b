"""UIDs from the network, and the node's own device UID."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from cdss_node.uids import DEVICE_UID_FILE, is_valid_uid, node_device_uid, uid_problem


@pytest.mark.parametrize("value", ["1.2.840.10008.1.1", "0", "2.25.1"])
def test_valid_uids(value):
    assert is_valid_uid(value) and uid_problem("X", value) is None


@pytest.mark.parametrize("value", ["", "1..2", "01.2", "1.2/../3", "1." + "2" * 63, None, 12])
def test_invalid_uids_say_why(value):
    assert not is_valid_uid(value) and uid_problem("SOPInstanceUID", value)


def test_device_uid_is_made_once_and_kept(tmp_path):
    first = node_device_uid(tmp_path)
    assert is_valid_uid(first)
    assert node_device_uid(tmp_path) == first
    assert (tmp_path / DEVICE_UID_FILE).read_text().strip() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == [DEVICE_UID_FILE]   # no draft left
    assert node_device_uid(tmp_path / ".." / tmp_path.name) == first


def test_device_uid_of_another_installation_differs(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    assert node_device_uid(tmp_path / "a") != node_device_uid(tmp_path / "b")


def test_device_uid_made_by_racing_callers_is_one(tmp_path):
    with ThreadPoolExecutor(8) as pool:
        uids = set(pool.map(lambda _: node_device_uid(tmp_path), range(32)))
    assert len(uids) == 1


def test_a_damaged_device_uid_file_is_an_error_not_replaced(tmp_path):
    (tmp_path / DEVICE_UID_FILE).write_text("not a uid\n")
    with pytest.raises(ValueError, match="device_uid: expected one DICOM UID"):
        node_device_uid(tmp_path)
    assert (tmp_path / DEVICE_UID_FILE).read_text() == "not a uid\n"
