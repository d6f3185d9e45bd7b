"""DIMSE messages assembled within bounds: a dataset in memory while small, on disk as it
arrives when large, refused past its maximum without being held; command sets bounded."""

from __future__ import annotations

import os
import tracemalloc
from io import BytesIO

import pytest
from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

from cdss_node.dicom import dataset_sink, wire
from cdss_node.dicom.received import ReceivedDataset

CT = "1.2.840.10008.5.1.4.1.1.2"


class _Assoc:
    def __init__(self, limits):
        self.ae = type("AE", (), {})()
        wire.attach(self.ae, limits)


def limits(tmp_path, **kw) -> wire.WireLimits:
    values = dict(max_pdu_bytes=16384, pdu_timeout_s=5.0, max_dataset_bytes=64 * 1024,
                  spill_dir=tmp_path, spill_bytes=16 * 1024)
    values.update(kw)
    return wire.WireLimits(**values)


def fragments(dataset: bytes, max_pdu: int = 4096) -> list[P_DATA]:
    rq = C_STORE()
    rq.MessageID, rq.AffectedSOPClassUID, rq.AffectedSOPInstanceUID = 1, CT, "1.2.3.4"
    rq.DataSet = BytesIO(dataset)
    message = C_STORE_RQ()
    message.primitive_to_message(rq)
    return list(message.encode_msg(1, max_pdu))


def assemble(pdatas: list[P_DATA], assoc=None) -> DIMSEMessage:
    message = DIMSEMessage()
    for pdata in pdatas:
        done = dataset_sink.decode_msg(message, pdata, assoc)
    assert done
    return message


def test_a_small_dataset_is_assembled_in_memory_as_pynetdicom_does(tmp_path):
    data = bytes(range(256)) * 40
    stock = assemble(fragments(data)).message_to_primitive()
    ours = assemble(fragments(data), _Assoc(limits(tmp_path))).message_to_primitive()
    assert ours.DataSet.getvalue() == stock.DataSet.getvalue() == data
    assert ReceivedDataset(ours).size == len(data) and not list(tmp_path.iterdir())


def test_a_large_dataset_goes_to_a_file_as_it_arrives(tmp_path):
    data = os.urandom(40 * 1024)
    request = assemble(fragments(data), _Assoc(limits(tmp_path))).message_to_primitive()
    received = ReceivedDataset(request)
    [spilled] = tmp_path.iterdir()
    assert spilled.read_bytes() == data and request.DataSet.getvalue() == b""
    with received.view() as view:
        assert view[:] == data
    request._dataset_file.close()
    assert not spilled.exists()


def test_a_dataset_over_the_maximum_is_read_and_discarded_with_a_reason(tmp_path):
    data = os.urandom(200 * 1024)
    pdatas = fragments(data)
    tracemalloc.start()
    request = assemble(pdatas, _Assoc(limits(tmp_path))).message_to_primitive()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    received = ReceivedDataset(request)
    assert received.refusal == "dataset larger than max_dataset_mb (0 MB)"
    assert request._dataset_file.size == len(data)
    assert not list(tmp_path.iterdir())          # the spill file went with the refusal
    assert peak < 100 * 1024                     # held: one 4 KiB PDU at a time, not 200 KiB


def test_a_disk_below_its_reserve_stops_a_spill(tmp_path):
    request = assemble(fragments(os.urandom(40 * 1024)),
                       _Assoc(limits(tmp_path, reserve_bytes=1 << 60))).message_to_primitive()
    assert ReceivedDataset(request).refusal == "disk below the configured reserve"
    assert not list(tmp_path.iterdir())


def test_a_command_set_longer_than_any_real_one_is_a_protocol_error(tmp_path):
    pdata = P_DATA()
    pdata.presentation_data_value_list = [[1, b"\x01" + b"\0" * 30000]] * 3
    with pytest.raises(dataset_sink.CommandSetTooLong):
        dataset_sink.decode_msg(DIMSEMessage(), pdata, _Assoc(limits(tmp_path)))


def test_sinks_of_messages_never_served_are_closed(tmp_path):
    pdatas = fragments(os.urandom(40 * 1024))
    message = DIMSEMessage()
    for pdata in pdatas[:-1]:                    # the last fragment never comes
        dataset_sink.decode_msg(message, pdata, _Assoc(limits(tmp_path)))
    assert list(tmp_path.iterdir())
    dimse = type("Dimse", (), {"message": message, "msg_queue": __import__("queue").Queue()})()
    dataset_sink.discard_pending(type("Assoc", (), {"dimse": dimse})())
    assert not list(tmp_path.iterdir())
