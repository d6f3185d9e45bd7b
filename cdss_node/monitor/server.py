"""The HTTP side port: ``GET /healthz`` (JSON; 200 healthy, 503 not), ``GET /metrics``
(Prometheus text) and ``GET /`` (the status page). Read-only; anything else is 404 or 405.
Runs in a thread of the node's own process; a failing page answers 500 and is logged, it never
stops the node. Nothing of http.server reaches stderr on its own: a client that leaves before its
answer is one debug line (``http_client_gone``), any other error a logged exception."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Callable

from prometheus_client import CONTENT_TYPE_LATEST

from cdss_node.logs import get_logger
from cdss_node.monitor.health import health
from cdss_node.monitor.metrics import metrics_text
from cdss_node.monitor.page import status_page

if TYPE_CHECKING:
    from cdss_node.node import Node

log = get_logger(__name__)
SHOWN = 200    # characters of a request line a peer sent that reach the log


def _routes(node: "Node") -> dict[str, Callable[[], tuple[int, str, bytes]]]:
    def healthz() -> tuple[int, str, bytes]:
        report = health(node)
        return (200 if report["status"] == "ok" else 503, "application/json",
                json.dumps(report, indent=1).encode())

    return {"/healthz": healthz,
            "/metrics": lambda: (200, CONTENT_TYPE_LATEST, metrics_text(node)),
            "/": lambda: (200, "text/html; charset=utf-8", status_page(node).encode())}


class HttpPortError(OSError):
    """The HTTP side port cannot be opened (in use, no permission)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """Called inside ``except``; http.server would print the traceback to stderr."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):   # reset, broken pipe
            log.debug("http_client_gone", peer=client_address[0], error=type(error).__name__)
        else:
            log.exception("http_error", peer=client_address[0])


class HttpServer:
    def __init__(self, node: "Node"):
        self.node = node
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return self._server.server_address[1]

    def start(self) -> None:
        http = self.node.config.http
        try:
            self._server = _Server((http.host, http.port), _handler(_routes(self.node)))
        except OSError as error:
            raise HttpPortError(f"cannot open the HTTP port {http.host}:{http.port} "
                                f"([http] port): {error.strerror or error}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="cdss-http",
                                        daemon=True)
        self._thread.start()
        log.info("http_listening", host=http.host, port=self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# A client that opens the port and sends nothing (or trickles a request) is let go after
# this; http.server would wait for it forever, one thread each.
CLIENT_TIMEOUT_S = 30.0


def _handler(routes: dict[str, Callable[[], tuple[int, str, bytes]]]) -> type:
    class Handler(BaseHTTPRequestHandler):
        server_version = "cdss-node"
        timeout = CLIENT_TIMEOUT_S

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            route = routes.get(self.path.split("?", 1)[0])
            if route is None:
                return self._send(404, "text/plain", b"not found\n")
            try:
                status, kind, body = route()
            except Exception:   # a page that fails must not take the node with it
                log.exception("http_failed", path=self.path)
                status, kind, body = 500, "text/plain", b"internal error (see the log)\n"
            self._send(status, kind, body)

        def do_POST(self) -> None:  # noqa: N802
            self._send(405, "text/plain", b"read-only\n")

        def _send(self, status: int, kind: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_request(self, code="-", size="-") -> None:   # scrapes every 15 s: debug only
            log.debug("http_request", request=self.requestline[:SHOWN],
                      status=getattr(code, "value", code))

        def log_error(self, format: str, *args) -> None:    # a request it could not read
            log.debug("http_bad_request", peer=self.client_address[0],
                      error=(format % args)[:SHOWN])

        def log_message(self, format: str, *args) -> None:  # anything else: never stderr
            log.debug("http_message", message=(format % args)[:SHOWN])

    return Handler
