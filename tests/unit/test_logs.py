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


def fail_with_a_cause():
    secret_local = "ZZSECRET^LOCAL"  # noqa: F841 (a local must not reach the log)
    try:
        {}["missing"]
    except KeyError as error:
        raise ValueError("the volume has no slices") from error


def logged_exception(stream: io.StringIO) -> dict:
    [line] = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert "exc_info" not in line and "ZZSECRET" not in stream.getvalue()
    return line


def check_exception(line: dict, event: str) -> None:
    assert line["event"] == event and line["level"] == "error"
    error, cause = line["exception"]       # a chained exception: the error, then its cause
    assert (error["exc_type"], error["exc_value"]) == ("ValueError", "the volume has no slices")
    assert (cause["exc_type"], cause["is_cause"]) == ("KeyError", True)
    assert [frame["name"] for frame in error["frames"]][-1] == "fail_with_a_cause"
    assert all({"filename", "lineno", "name"} <= set(frame) and not frame.get("locals")
               for frame in error["frames"])


def test_a_structlog_exception_carries_its_type_message_and_traceback_as_fields():
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    try:
        fail_with_a_cause()
    except ValueError:
        get_logger("test").exception("job_failed", job_id=3)
    line = logged_exception(stream)
    check_exception(line, "job_failed")
    assert line["job_id"] == 3


def test_a_standard_library_exception_carries_its_type_message_and_traceback_too():
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    try:
        fail_with_a_cause()
    except ValueError:
        logging.getLogger("some.library").exception("library_failed")
    check_exception(logged_exception(stream), "library_failed")


def test_the_console_format_still_shows_the_traceback():
    stream = io.StringIO()
    configure_logging("info", "console", stream)
    try:
        fail_with_a_cause()
    except ValueError:
        get_logger("test").exception("job_failed")
    assert "Traceback" in stream.getvalue() and "the volume has no slices" in stream.getvalue()


def test_a_crashed_thread_and_a_warning_are_json_lines_without_quoted_values(monkeypatch):
    """pynetdicom's reactor threads can die of a state-machine error (seen under the PDU
    fuzzer), and pydicom warns about odd values quoting them: with JSON logs both are log
    lines, and the quoted value (it may be a patient's name) is cut out."""
    import threading
    import warnings

    stream = io.StringIO()
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    configure_logging("info", "json", stream)
    crashing = threading.Thread(target=fail_with_a_cause, name="Reactor")
    crashing.start()
    crashing.join()
    warnings.showwarning(UserWarning("Invalid value for VR PN: 'DOE^JANE'"), UserWarning,
                         "valuerep.py", 440)
    crash, warning = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert crash["event"] == "thread_crashed" and crash["thread"] == "Reactor"
    assert crash["exception"][0]["exc_type"] == "ValueError"
    assert warning["event"] == "python_warning" and warning["category"] == "UserWarning"
    assert warning["message"] == "Invalid value for VR PN: '…'"
    assert "DOE" not in stream.getvalue()
