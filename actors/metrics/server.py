"""The HTTP endpoint (``GET /metrics``) on ``[metrics] listen``.

A ``metrics-http`` thread accepts connections; each scrape is served on a short-lived thread
of its own (a slow client holds only its own). Nothing it reads blocks: see
:mod:`.collector`.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

log = logging.getLogger(__name__)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics: %s", format % args)


class MetricsServer:
    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self._server: ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        family = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0][0]

        class Server(ThreadingWSGIServer):
            address_family = family
            daemon_threads = True

        server = make_server(self.host, self.port, make_wsgi_app(self.registry),
                             server_class=Server, handler_class=_QuietHandler)
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, name="metrics-http",
                                        daemon=True)
        self._thread.start()
        if not _loopback(self.host):
            log.warning("the metrics endpoint on %s:%d is reachable from other hosts and "
                        "has no authentication (VM names, load, storage state)", self.host,
                        self.port)
        log.info("metrics served on http://%s:%d/metrics", self.host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
