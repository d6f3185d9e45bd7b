"""Log output, configured once by the command line; library modules only call ``get_logger``.

JSON lines when stderr is not a terminal (what a log shipper reads), a readable console
otherwise. Context such as the association id and the study and series UIDs is bound with
``structlog.contextvars`` by the code that knows it. No patient name, ID or birth date is ever
logged: the node never passes them, and ``drop_patient_identity`` removes such keys should a
future caller try.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import warnings
from typing import Any, TextIO

import structlog

get_logger = structlog.get_logger

PATIENT_IDENTITY_KEYS = frozenset(
    {
        "patient_name", "patientname", "patient_id", "patientid", "patient_birth_date",
        "patientbirthdate", "birth_date", "other_patient_ids", "patient_address",
    }
)
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def drop_patient_identity(_logger: Any, _name: str, event: dict) -> dict:
    """structlog processor: remove keys that would carry a patient's identity."""
    for key in [k for k in event if k.lower() in PATIENT_IDENTITY_KEYS]:
        del event[key]
    return event


def _shared_processors() -> list:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        drop_patient_identity,
    ]


def _renderers(fmt: str, stream: TextIO) -> list:
    """The last processors: console text, or an exception as fields and then a JSON line."""
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    if fmt == "console":
        return [structlog.dev.ConsoleRenderer(colors=stream.isatty())]
    return [EXCEPTION_FIELDS, structlog.processors.JSONRenderer()]


# ``exc_info`` (structlog's ``log.exception`` or a standard library logger's) becomes
# ``exception``: for the error and each cause, exc_type, exc_value and frames (file, line,
# function). Never the frames' local variables: they may hold a patient's name.
EXCEPTION_FIELDS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False))


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Route structlog and the standard library's logging (pynetdicom, APScheduler) to one
    stream in one format."""
    stream = stream or sys.stderr
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *_shared_processors(),
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    *_renderers(fmt, stream)],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    # Third-party chatter: pynetdicom logs every PDU at debug level, APScheduler every run of
    # a job and highdicom every copied module at info; keep them to warnings (pynetdicom: info
    # when the operator asks for debug).
    logging.getLogger("pynetdicom").setLevel(logging.INFO if level == "debug" else logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("highdicom").setLevel(logging.WARNING)
    warnings.showwarning = log_warning
    threading.excepthook = log_thread_exception


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A Python warning (pydicom's on odd values, say) as a log line, not raw stderr text.
    Quoted values are cut out: pydicom quotes the offending value, which may be a name."""
    get_logger("py.warnings").warning(
        "python_warning", category=category.__name__, where=f"{filename}:{lineno}",
        message=_QUOTED.sub("'…'", str(message))[:300])


def log_thread_exception(args: threading.ExceptHookArgs) -> None:
    """An exception that ended a thread (pynetdicom's reactor threads, say) as one log
    line with the exception's fields, not a raw traceback on stderr."""
    if args.exc_type is SystemExit:
        return
    get_logger(__name__).error("thread_crashed", thread=getattr(args.thread, "name", None),
                               exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
