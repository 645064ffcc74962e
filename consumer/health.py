"""Liveness, readiness and the HTTP endpoints that expose them next to ``/metrics``.

``/healthz`` answers 200 while the consume loop makes progress (it polled recently), 503 when it
is stuck. ``/readyz`` answers 200 once the embedding model is loaded, a broker is reachable and
partitions are assigned, 503 before or otherwise. Both bodies are JSON that says why.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from socketserver import ThreadingMixIn

from prometheus_client import make_wsgi_app

from consumer.metrics import Metrics


@dataclass
class Health:
    """What the probes report, updated by the service loop.

    >>> health = Health(stall_after_s=60)
    >>> health.readiness()[0]
    False
    >>> health.model_ready = True
    >>> health.polled(broker_reachable=True, assigned=2)
    >>> health.readiness()[0], health.liveness()[0]
    (True, True)
    """

    stall_after_s: float
    model_ready: bool = False
    broker_reachable: bool = False
    assigned_partitions: int = 0
    started_at: float = field(default_factory=time.monotonic)
    last_poll_at: float | None = None

    def polled(self, *, broker_reachable: bool, assigned: int) -> None:
        """Called after every poll of the consume loop."""
        self.last_poll_at = time.monotonic()
        self.broker_reachable = broker_reachable
        self.assigned_partitions = assigned

    def liveness(self) -> tuple[bool, dict]:
        """Alive while the last poll (or the start, before the first) is less than ``stall_after_s`` ago."""
        since = time.monotonic() - (self.last_poll_at if self.last_poll_at is not None else self.started_at)
        return since < self.stall_after_s, {"seconds_since_last_poll": round(since, 3),
                                            "stall_after_s": self.stall_after_s}

    def readiness(self) -> tuple[bool, dict]:
        checks = {"model_loaded": self.model_ready, "broker_reachable": self.broker_reachable,
                  "partitions_assigned": self.assigned_partitions > 0}
        return all(checks.values()), {**checks, "assigned_partitions": self.assigned_partitions}


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # probes every few seconds would flood the logs
        pass


def serve(metrics: Metrics, health: Health, port: int, host: str = "0.0.0.0",
          reports: dict[str, Callable[[], object]] | None = None):
    """Serve ``/metrics``, ``/healthz``, ``/readyz`` and each of ``reports`` (path -> JSON-able
    callable) in a background thread; returns the server.

    ``port`` 0 picks a free port: read it from ``server.server_port``.
    """
    reports = reports or {}
    metrics_app = make_wsgi_app(metrics.registry)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            ok, detail = health.liveness() if path == "/healthz" else health.readiness()
            body = json.dumps({"status": "ok" if ok else "unavailable", **detail}).encode()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        if path in reports:
            body = json.dumps(reports[path](), default=str).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        return metrics_app(environ, start_response)

    server = make_server(host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="labelwatch-http", daemon=True).start()
    return server
