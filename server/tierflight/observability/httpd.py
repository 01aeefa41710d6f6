"""The operations HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz``.

The standard library's ThreadingHTTPServer in a daemon thread is enough: the traffic is a
scrape and two probes every few seconds, and it keeps answering while DuckDB is busy (the
handlers hold the GIL only briefly). It has no authentication; bind it to loopback or to
an internal network (``[metrics] host``).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from tierflight.core.log import get_logger

log = get_logger("tierflight.http")

Readiness = Callable[[], dict[str, Any]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung scraper must not keep the process alive at exit
    allow_reuse_address = True  # a restart may bind the port while the old socket is in TIME_WAIT

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry, readiness: Readiness) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.registry = registry
        self.readiness = readiness


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "tierflight"
    protocol_version = "HTTP/1.1"  # keep-alive between scrapes; every reply has a Content-Length

    def do_GET(self) -> None:
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def _respond(self, head: bool) -> None:
        path = urlsplit(self.path).path.rstrip("/") or "/"
        try:
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._send(200, content_type, encoder(self.server.registry), head)
            elif path == "/healthz":
                # Liveness only: the process runs and answers. Readiness is /readyz.
                self._send(200, "text/plain; charset=utf-8", b"ok\n", head)
            elif path == "/readyz":
                try:
                    report = self.server.readiness()
                except Exception as exc:  # noqa: BLE001 - a failing check is a 503, not a dead probe
                    report = {"status": "not_ready", "reasons": [f"readiness check failed: {exc!r}"]}
                code = 200 if report.get("status") == "ready" else 503
                self._send(code, "application/json", json.dumps(report, default=str).encode() + b"\n", head)
            else:
                self._send(
                    404, "text/plain; charset=utf-8", b"not found: try /metrics, /healthz or /readyz\n", head
                )
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away; nothing to answer
        except Exception as exc:  # noqa: BLE001 - the endpoint must keep serving
            log.error("http_handler_failed", path=path, error=repr(exc))
            self._send(500, "text/plain; charset=utf-8", b"internal error\n", head)

    def _send(self, code: int, content_type: str, body: bytes, head: bool) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # One line per scrape and probe would drown the statement log.
        return


class OpsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` (port 0: any free port)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, readiness: Readiness) -> None:
        self._httpd = _Server((host, port), registry, readiness)
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.25},
            name="tierflight-http",
            daemon=True,
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> OpsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()
