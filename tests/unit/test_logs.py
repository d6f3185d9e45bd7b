import io
import json
import logging

import structlog

from cdss_node.logs import configure_logging, get_logger


def test_json_lines_with_context_and_no_patient_identity():
    stream = io.StringIO()
    configure_logging("debug", "json", stream)
    with structlog.contextvars.bound_contextvars(series_uid="1.2.3", association_id=7):
        get_logger("test").info("stored", patient_name="DOE^JOHN", PatientID="12345",
                                patient_birth_date="19500101", slices=3)
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["event"] == "stored"
    assert (line["series_uid"], line["association_id"], line["slices"]) == ("1.2.3", 7, 3)
    assert "DOE" not in stream.getvalue() and "12345" not in stream.getvalue()
    assert "19500101" not in stream.getvalue()


def test_standard_library_loggers_come_out_as_json_too():
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    logging.getLogger("some.library").warning("careful")
    assert json.loads(stream.getvalue().strip())["event"] == "careful"


def test_console_format_is_readable():
    stream = io.StringIO()
    configure_logging("info", "console", stream)
    get_logger("test").info("node_started", port=11112)
    assert "node_started" in stream.getvalue() and "port=11112" in stream.getvalue()
