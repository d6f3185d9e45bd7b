"""OHIF Viewer for the CDSS EGFR node's results: serves OHIF's built viewer (the dist/ folder of
the npm package @ohif/app) with deploy/ohif/app-config.js, and passes /dicom-web/* and /wado on
to Orthanc's DICOMweb plugin on the same origin, so the browser needs no CORS and never sees
Orthanc's password. Standard library only. The compose file's viewer runs it; the viewer test
(tests/integration/test_ohif_viewer.py) runs the same code in its own process.

    python serve.py --dist /srv/ohif --orthanc http://orthanc:8042 --user orthanc:orthanc

One query is rewritten: OHIF 3.13 asks QIDO-RS for ``includefield=00081030%2C00080060`` (a
comma list, whatever app-config says), and Orthanc's DICOMweb plugin 1.7 (Debian 12) reads the
list as one tag ("Unknown DICOM tag" in its log) and leaves the fields out. The standard allows
both forms; repeated ``includefield`` parameters work with every version.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import http.server
import sys
import threading
import urllib.parse
from pathlib import Path

APP_CONFIG = Path(__file__).resolve().parent / "app-config.js"
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
              "trailer", "upgrade", "proxy-authenticate", "proxy-authorization"}
CONTENT_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
                 ".json": "application/json", ".css": "text/css", ".html": "text/html",
                 ".svg": "image/svg+xml", ".woff2": "font/woff2", ".png": "image/png",
                 ".ico": "image/x-icon", ".map": "application/json"}
PROXIED = ("/dicom-web/", "/wado")


def split_includefield(query: str) -> str:
    """``includefield=a,b`` as ``includefield=a&includefield=b``; the rest unchanged."""
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    if not any(key.lower() == "includefield" and "," in value for key, value in pairs):
        return query
    out = []
    for key, value in pairs:
        if key.lower() == "includefield" and "," in value:
            out.extend((key, part) for part in value.split(",") if part)
        else:
            out.append((key, value))
    return urllib.parse.urlencode(out, safe="*", quote_via=urllib.parse.quote)


class OhifServer:
    """``start()`` serves ``dist`` with ``app_config`` (unknown paths get index.html: OHIF
    routes in the browser) and proxies DICOMweb to ``orthanc`` (a base URL), adding Basic
    authentication when ``user`` ("name:password") is given. ``requests`` logs each proxied
    request with Orthanc's status."""

    def __init__(self, dist: Path, orthanc: str, port: int, host: str = "127.0.0.1",
                 app_config: Path = APP_CONFIG, user: str = ""):
        self.dist, self.host, self.port = Path(dist), host, port
        self.upstream = urllib.parse.urlsplit(orthanc)
        self.app_config = Path(app_config).read_bytes()
        self.auth = "Basic " + base64.b64encode(user.encode()).decode() if user else ""
        self.requests: list[str] = []
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "OhifServer":
        self._server = http.server.ThreadingHTTPServer((self.host, self.port), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()


def _handler(owner: OhifServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            path, _, query = self.path.partition("?")
            if path.startswith(PROXIED) or path == "/dicom-web":
                self._proxy(path, query)
            else:
                self._static(urllib.parse.unquote(path))

        def do_HEAD(self):
            self.do_GET()

        def _static(self, path: str) -> None:
            if path == "/app-config.js":
                return self._send(owner.app_config, "text/javascript")
            file = (owner.dist / path.lstrip("/")).resolve()
            if not file.is_relative_to(owner.dist.resolve()) or not file.is_file():
                file = owner.dist / "index.html"          # the viewer's own routes
            self._send(file.read_bytes(),
                       CONTENT_TYPES.get(file.suffix, "application/octet-stream"))

        def _send(self, body: bytes, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _proxy(self, path: str, query: str) -> None:
            query = split_includefield(query) if query else ""
            target = owner.upstream.path.rstrip("/") + path + ("?" + query if query else "")
            upstream = http.client.HTTPConnection(owner.upstream.hostname,
                                                  owner.upstream.port or 80, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in HOP_BY_HOP | {"authorization", "host"}}
                if owner.auth:
                    headers["Authorization"] = owner.auth
                upstream.request(self.command, target, headers=headers)
                self._relay(upstream.getresponse(), target)
            except OSError as error:
                owner.requests.append(f"502 {self.command} {target}: {error}")
                self.send_error(502, f"Orthanc not reachable: {error}")
            finally:
                upstream.close()

        def _relay(self, answer: http.client.HTTPResponse, target: str) -> None:
            owner.requests.append(f"{answer.status} {self.command} {target}")
            self.send_response(answer.status, answer.reason)
            for key, value in answer.getheaders():
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            if answer.getheader("Content-Length") is None:   # chunked: relay as it came, closed
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                while chunk := answer.read(65536):
                    self.wfile.write(chunk)

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="OHIF Viewer in front of Orthanc's DICOMweb")
    parser.add_argument("--dist", required=True, help="OHIF's built viewer (dist/ of @ohif/app)")
    parser.add_argument("--orthanc", default="http://orthanc:8042", help="Orthanc's base URL")
    parser.add_argument("--user", default="", help="name:password for Orthanc, if it asks")
    parser.add_argument("--app-config", default=str(APP_CONFIG))
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    if not (Path(args.dist) / "index.html").is_file():
        print(f"serve.py: no index.html in {args.dist} (OHIF's dist/ folder)", file=sys.stderr)
        return 2
    server = OhifServer(Path(args.dist), args.orthanc, args.port, args.host,
                        Path(args.app_config), args.user).start()
    print(f"OHIF Viewer on {server.url}, DICOMweb from {args.orthanc}", flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
